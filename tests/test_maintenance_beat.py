"""Real time, real processes: two Celery beats and a worker open a maintenance window when it comes,
patch exactly the VMs in scope once, and close the run when the window ends."""

from datetime import UTC, datetime, timedelta

from patching.maintenance import services
from patching.maintenance.models import MachineStatus, MaintenanceRun, RunStatus
from patching.models import Operation, StartedBy
from tests.factories import load_catalog, make_resource_group, make_subscription
from tests.helpers import wait_for
from tests.test_maintenance_runs import scheduled_vm

BEAT = {
    "PORTAL_MAINTENANCE_BEAT_SECONDS": "2",
    "PORTAL_PATCH_BEAT_SECONDS": "3600",
    "PORTAL_ASSESSMENT_BEAT_SECONDS": "3600",
}


def test_beat_opens_the_window_and_the_worker_patches_the_scope_once(live_worker, start_beat, django_user_model):
    load_catalog()
    alice = django_user_model.objects.create_user("alice", password="pw-alice-123")
    rg = make_resource_group(make_subscription("Contoso", user=alice, role="Contributor"), "rg-web")
    inside = [scheduled_vm(rg, f"web-{n}", tags={"ring": "1"}) for n in range(3)]
    outside = scheduled_vm(rg, "web-out", tags={"ring": "2"})
    start = (datetime.now(UTC) + timedelta(minutes=1)).replace(second=0, microsecond=0)
    config, _, problems = services.save_configuration(
        rg,
        "now",
        {
            "location": "westeurope",
            "properties": {
                "maintenanceScope": "InGuestPatch",
                "maintenanceWindow": {
                    "startDateTime": start.strftime("%Y-%m-%d %H:%M"),
                    "duration": "01:30",
                    "timeZone": "UTC",
                    "recurEvery": "Day",
                },
            },
        },
    )
    assert not problems
    services.assign_scope(config, rg.subscription, "ring-1", {"tagSettings": {"tags": {"ring": ["1"]}}})

    start_beat(**BEAT)
    start_beat(**BEAT)  # a second beat, started by mistake
    wait_for(
        lambda: Operation.objects.filter(started_by=StartedBy.SCHEDULE, finished_at__isnull=False).count() == 3,
        timeout=150,
        message="the schedule's installations to run",
    )
    run = MaintenanceRun.objects.get()
    assert run.status == RunStatus.IN_PROGRESS and run.scheduled_start == start and run.started_at >= start
    installs = Operation.objects.filter(started_by=StartedBy.SCHEDULE)
    assert sorted(installs.values_list("vm_name", flat=True)) == sorted(vm.name for vm in inside)  # once each
    assert not Operation.objects.filter(vm=outside).exists()
    assert set(run.machines.values_list("status", flat=True)) == {MachineStatus.QUEUED}
