"""A maintenance schedule fires on the sandbox clock: `manage.py sandbox advance` (patching.sandbox.advance)
steps the one engine, which stops at the window and patches exactly the VMs in scope inside it."""

from datetime import UTC, datetime, timedelta

from patching import sandbox
from patching.maintenance import services
from patching.maintenance.models import MachineStatus, RunStatus
from patching.models import Operation, OperationKind, StartedBy
from tests.factories import make_resource_group, make_subscription
from tests.test_maintenance_runs import body, scheduled_vm
from vms import clock
from vms.models import VirtualMachine

START = datetime(2026, 11, 30, 12, tzinfo=UTC)
WINDOW = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)  # 22:00-01:00 UTC, daily


def test_a_schedule_fires_on_the_sandbox_clock_and_patches_exactly_its_scope_in_the_window(
    catalog, no_random_failures, django_user_model
):
    owner = django_user_model.objects.create_user("owner", password="pw-owner-123")
    rg = make_resource_group(make_subscription("Contoso", user=owner, role="Owner"), "rg-web")
    static = scheduled_vm(rg, "web-static", now=START)
    tagged = scheduled_vm(rg, "web-tagged", now=START, tags={"env": "prod"})
    outside = scheduled_vm(rg, "web-outside", now=START, tags={"env": "test"})
    stopped = scheduled_vm(rg, "web-stopped", now=START, tags={"env": "prod"})
    VirtualMachine.objects.filter(pk=stopped.pk).update(power_state=VirtualMachine.PowerState.DEALLOCATED)
    sandbox._set_clock(START)  # sandbox mode: the world's time is the stored clock

    config, _, problems = services.save_configuration(
        rg, "nightly", body(startDateTime="2026-12-01 22:00", duration="03:00"), user=owner
    )
    assert not problems and config.created_at == START  # the configuration is made at the world's time
    services.assign_vm(config, static, "static")
    services.assign_scope(config, rg.subscription, "prod", {"tagSettings": {"tags": {"env": ["prod"]}}})
    # A VM created later with the right tag is in scope at the next occurrence.
    later = scheduled_vm(rg, "web-later", now=START, tags={"env": "prod"})

    sandbox.advance(to=WINDOW + timedelta(hours=6))

    assert clock.now() == WINDOW + timedelta(hours=6)
    run = config.runs.get(scheduled_start=WINDOW)
    assert run.status == RunStatus.COMPLETED and run.started_at == WINDOW  # the clock stopped at the start
    assert run.ended_at == WINDOW + timedelta(hours=3)
    installs = list(Operation.objects.filter(kind=OperationKind.INSTALLATION, started_by=StartedBy.SCHEDULE))
    assert sorted(op.vm_name for op in installs) == ["web-later", "web-static", "web-tagged"]
    assert all(WINDOW <= op.started_at and op.finished_at <= WINDOW + timedelta(hours=3) for op in installs)
    results = dict(run.machines.values_list("vm_name", "status"))
    assert results == {
        "web-static": MachineStatus.SUCCEEDED,
        "web-tagged": MachineStatus.SUCCEEDED,
        "web-later": MachineStatus.SUCCEEDED,
        "web-stopped": MachineStatus.SKIPPED,
    }
    # The platform's own rounds left the scheduled VMs alone.
    assert not any(
        vm.operations.filter(kind=OperationKind.INSTALLATION, started_by=StartedBy.PLATFORM).exists()
        for vm in (static, tagged, later, outside)
    )


def test_a_snapshot_carries_the_schedules_and_loads_them_back(catalog, no_random_failures, settings):
    settings.PORTAL_WEBHOOK_ALLOW_HTTP = False
    rg = make_resource_group(make_subscription("Contoso"), "rg-web")
    vm = scheduled_vm(rg, "web-a", now=START, tags={"env": "prod"})
    sandbox._set_clock(START)
    config, _, _ = services.save_configuration(rg, "nightly", body(startDateTime="2026-12-01 22:00"))
    services.assign_vm(config, vm, "a")
    services.assign_scope(config, rg.subscription, "prod", {"tagSettings": {"tags": {"env": ["prod"]}}})
    services.add_webhook(config, "https://hooks.example.com/m")
    sandbox.advance(to=WINDOW + timedelta(hours=4))
    before = sandbox.dumps(sandbox.export_snapshot())

    sandbox.import_snapshot(sandbox.loads(before))

    assert sandbox.dumps(sandbox.export_snapshot()) == before
    config = config.__class__.objects.get()
    assert config.duration == timedelta(hours=3) and config.assignments.count() == 2 and config.webhooks.count() == 1
    assert config.runs.get().machines.get().operation.vm_id == vm.pk
    # A snapshot from before maintenance configurations (schema version 1) loads with none.
    old = sandbox.loads(before)
    old["schemaVersion"] = 1
    for label in [m._meta.label_lower for m in sandbox.SCHEDULES]:
        del old["tables"][label]
    sandbox.import_snapshot(old)
    assert not config.__class__.objects.exists()
