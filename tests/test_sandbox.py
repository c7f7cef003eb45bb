"""The sandbox (patching/sandbox.py, patching/faults.py): the clock, faults on demand, snapshots.

Real PostgreSQL and Redis (the clock's cache); the engine that advances the clock is the platform's own.
"""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from patching import sandbox, services
from patching.models import (
    ComplianceSnapshot,
    Fault,
    FaultKind,
    InstalledUpdate,
    Operation,
    OperationKind,
    OperationStatus,
    PatchResult,
    RolloutHalt,
    Update,
)
from patching.orchestrator import engine
from patching.parameters import from_arm
from tests.factories import make_resource_group, make_subscription, make_vm
from vms import clock
from vms.models import SandboxClock, VirtualMachine

START = datetime(2026, 11, 30, 12, tzinfo=UTC)  # a week before December's Patch Tuesday (a hotpatch month)
DECEMBER_TUESDAY = datetime(2026, 12, 8, tzinfo=UTC)


@pytest.fixture
def world(catalog, django_user_model):
    """At START in sandbox mode: two 2022 Azure Edition VMs, Azure-orchestrated, one enrolled in hotpatch."""
    owner = django_user_model.objects.create_user("owner", password="pw-owner-123")
    subscription = make_subscription("Contoso", user=owner, role="Owner")
    rg = make_resource_group(subscription, "rg-web")
    hot = make_vm(resource_group=rg, name="hot-01", now=START)
    classic = make_vm(resource_group=rg, name="classic-01", hotpatch=False, now=START)
    sandbox._set_clock(START)
    return {"owner": owner, "subscription": subscription, "rg": rg, "hot": hot, "classic": classic}


def installations(vm, since):
    return list(vm.operations.filter(kind=OperationKind.INSTALLATION, created_at__gte=since).order_by("created_at"))


# --- The clock ------------------------------------------------------------------------------------


def test_real_time_is_the_default_and_the_first_advance_switches_to_sandbox_mode(db):
    assert not clock.is_simulated()
    before = timezone.now()
    assert abs(clock.now() - before) < timedelta(seconds=5)

    result = sandbox.advance(days=0.5)

    assert result.switched and "Sandbox mode is on" in result.message()
    assert clock.is_simulated()
    assert clock.now() == result.end and result.end - result.start == timedelta(days=0.5)
    assert sandbox.status()["mode"] == "sandbox"
    assert "Back to real time" in sandbox.realtime()
    assert not clock.is_simulated()


def test_a_reader_that_read_the_old_clock_does_not_overwrite_the_new_one(db, django_capture_on_commit_callbacks):
    """Another process read the row (real time) just before the change, and caches it just after."""
    clock.forget()
    read_before = clock._as_cached(clock._read_row())
    with django_capture_on_commit_callbacks(execute=True):
        sandbox._set_clock(START)
    clock._cache(read_before, only_if_absent=True)
    assert clock.now() == START


def test_reading_the_clock_costs_no_query_once_cached(db, django_assert_num_queries):
    sandbox._set_clock(START)
    assert clock.now() == START  # the first read takes the row into the cache
    with django_assert_num_queries(0):
        for _ in range(10):
            assert clock.now() == START


def test_advance_past_patch_tuesday_hotpatches_enrolled_vms_without_a_reboot(world):
    hot, classic = world["hot"], world["classic"]
    end = datetime(2026, 12, 10, 12, tzinfo=UTC)

    result = sandbox.advance(to=end)

    assert not result.switched and clock.now() == end
    hotpatch = Update.objects.get(product="ws2022-azure", release_month="2026-12", kind="hotpatch")
    assert InstalledUpdate.objects.filter(guest_id=hot.pk, update=hotpatch).exists()
    december = [op for op in installations(hot, DECEMBER_TUESDAY) if op.installed_count]
    assert december and all(op.reboot_status == "NotNeeded" for op in december)
    hot.guest.refresh_from_db()
    assert hot.guest.build == hotpatch.build
    # The one not enrolled took December's cumulative update, with its reboot.
    cumulative = Update.objects.get(product="ws2022-azure", release_month="2026-12", kind="monthly")
    assert InstalledUpdate.objects.filter(guest_id=classic.pk, update=cumulative).exists()
    assert any(op.reboot_status == "Completed" for op in installations(classic, DECEMBER_TUESDAY))
    # In order: nothing installed before its release; periodic assessments ran all along.
    for op in installations(hot, START) + installations(classic, START):
        assert op.finished_at <= end
        for result_row in PatchResult.objects.filter(operation=op, state="Installed").select_related("update"):
            assert result_row.update.published_at <= op.created_at
    assessed = hot.operations.filter(kind=OperationKind.ASSESSMENT, created_at__gt=START).count()
    assert assessed >= 9  # daily, AutomaticByPlatform assessment


def test_an_advance_leaves_each_days_compliance_figure(world):
    sandbox.advance(days=5)
    days = sorted(ComplianceSnapshot.objects.filter(subscription=world["subscription"]).values_list("day", flat=True))
    assert days == [(START + timedelta(days=n)).date() for n in range(6)]  # each day passed, and the last one


def test_a_baseline_month_reboots_enrolled_vms(world):
    hot = world["hot"]
    sandbox.advance(to=datetime(2027, 1, 16, tzinfo=UTC))

    baseline = Update.objects.get(product="ws2022-azure", release_month="2027-01", kind="baseline")
    assert InstalledUpdate.objects.filter(guest_id=hot.pk, update=baseline).exists()
    january = installations(hot, baseline.published_at)
    assert any(op.reboot_status == "Completed" for op in january)
    december = installations(hot, DECEMBER_TUESDAY)
    assert [op for op in december if op.created_at < baseline.published_at and op.reboot_status == "Completed"] == []


def test_operations_started_in_sandbox_mode_run_at_the_frozen_now(world):
    operation, _ = services.start_operation(world["hot"], OperationKind.ASSESSMENT, enqueue=False)
    assert operation.created_at == START
    services.execute_operation(operation.pk)  # what the Celery worker calls: no sleeping, at START
    operation.refresh_from_db()
    assert operation.status == OperationStatus.SUCCEEDED
    assert operation.started_at == START and operation.finished_at == START + timedelta(seconds=90)


def test_an_advance_first_runs_what_was_queued_meanwhile(world):
    operation, _ = services.start_operation(world["hot"], OperationKind.ASSESSMENT, enqueue=False)
    sandbox.advance(days=0.25)
    operation.refresh_from_db()
    assert operation.status == OperationStatus.SUCCEEDED and operation.started_at == START


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"to": START - timedelta(hours=1)}, "only moves forward"),
        ({"to": START}, "only moves forward"),
        ({"days": -3}, "positive number of days"),
        ({"days": 0}, "positive number of days"),
        ({"days": 101}, "at most 100 days"),
        ({"to": START + timedelta(days=100, minutes=1)}, "at most 100 days"),
        ({}, "either a number of days or a moment"),
        ({"days": 1, "to": START + timedelta(days=1)}, "either a number of days or a moment"),
    ],
)
def test_bad_advances_are_refused_and_change_nothing(world, kwargs, says):
    before = Operation.objects.count()
    with pytest.raises(sandbox.SandboxError, match=says):
        sandbox.advance(**kwargs)
    assert clock.now() == START and Operation.objects.count() == before
    assert SandboxClock.objects.get(pk=1).advancing_since is None


def test_the_maximum_advance_is_a_setting(world, settings):
    settings.PORTAL_SANDBOX_MAX_ADVANCE = timedelta(days=2)
    with pytest.raises(sandbox.SandboxError, match="at most 2 days"):
        sandbox.advance(days=3)
    assert clock.now() == START


def test_a_second_advance_while_one_runs_is_refused(world):
    SandboxClock.objects.filter(pk=1).update(advancing_since=timezone.now())
    with pytest.raises(sandbox.SandboxBusy, match="Another advance is running"):
        sandbox.advance(days=1)
    assert clock.now() == START
    with pytest.raises(sandbox.SandboxBusy):
        sandbox.realtime()
    # One left behind by a dead process stops blocking after a while.
    SandboxClock.objects.filter(pk=1).update(advancing_since=timezone.now() - timedelta(hours=3))
    sandbox.advance(days=0.1)
    assert clock.now() == START + timedelta(days=0.1)


@pytest.mark.django_db(transaction=True)
def test_two_advances_at_once_one_wins(catalog):
    rg = make_resource_group(make_subscription(), "rg")
    make_vm(resource_group=rg, name="hot-01", now=START)
    sandbox._set_clock(START)
    outcomes = []
    barrier = threading.Barrier(2)

    def advance():

        barrier.wait()
        try:
            outcomes.append(sandbox.advance(days=2))
        except sandbox.SandboxBusy as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=advance) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(type(o).__name__ for o in outcomes) == ["Advanced", "SandboxBusy"]
    clock.forget()
    assert clock.now() == START + timedelta(days=2)


# --- Faults ---------------------------------------------------------------------------------------


def run(vm, kind, *, parameters=None, now=START):
    operation, _ = services.start_operation(vm, kind, now=now, enqueue=False, parameters=parameters)
    executed = services.execute_operations([operation.pk], now=now)
    operation.refresh_from_db()
    return operation, executed


@pytest.fixture
def behind(catalog, django_user_model):
    """Two VMs a month behind (something to install) in Contoso, one in Fabrikam; the clock at START."""
    alice = django_user_model.objects.create_user("alice", password="pw-alice-123")
    contoso = make_subscription("Contoso", user=alice, role="Contributor")
    fabrikam = make_subscription("Fabrikam", user=alice, role="Reader")
    rg = make_resource_group(contoso, "rg-web")
    a = make_vm(resource_group=rg, name="web-01", product="ws2022", behind_by_months=1, now=START)
    b = make_vm(resource_group=rg, name="web-02", product="ws2022", behind_by_months=1, now=START)
    c = make_vm(
        resource_group=make_resource_group(fabrikam, "rg-ro", location="northeurope"),
        name="ro-01",
        product="ws2022",
        behind_by_months=1,
        now=START,
    )
    sandbox._set_clock(START)
    return {"alice": alice, "contoso": contoso, "fabrikam": fabrikam, "a": a, "b": b, "c": c}


def test_an_injected_kb_failure_is_failed_and_says_injected(behind, no_random_failures):
    a = behind["a"]
    probe, _ = run(a, OperationKind.ASSESSMENT)
    kb = PatchResult.objects.filter(operation=probe, update__kind="monthly").get().update.kb
    sandbox.add_fault(None, FaultKind.KB_FAILS, vm=a, kb=f"KB{kb}", next_n=1)

    install, _ = run(a, OperationKind.INSTALLATION)

    failed = PatchResult.objects.get(operation=install, update__kb=kb)
    assert failed.state == "Failed" and "Injected fault" in failed.error
    assert install.failed_count == 1 and install.error_code == "PatchInstallationFailed"
    assert "Injected fault (sandbox)" in install.injected and f"KB{kb} fails" in install.injected
    # Only that KB: the rest installed.
    assert install.installed_count >= 1
    # Spent: the next installation is real.
    again, _ = run(a, OperationKind.INSTALLATION, now=START + timedelta(hours=1))
    assert not again.injected


def test_a_kb_fault_waits_for_an_installation_of_that_kb(behind):
    a = behind["a"]
    probe, _ = run(a, OperationKind.ASSESSMENT)
    kb = PatchResult.objects.filter(operation=probe, update__kind="monthly").get().update.kb
    fault = sandbox.add_fault(None, FaultKind.KB_FAILS, vm=a, kb=f"KB{kb}", next_n=1)
    # An installation that excludes the KB does not touch it: not marked, the fault not spent.
    parameters = from_arm(
        {
            "rebootSetting": "IfRequired",
            "windowsParameters": {"classificationsToInclude": ["Critical", "Security"], "kbNumbersToExclude": [kb]},
        }
    )
    spared, _ = run(a, OperationKind.INSTALLATION, parameters=parameters)
    assert not spared.injected and not PatchResult.objects.filter(operation=spared, update__kb=kb, state="Failed")
    fault.refresh_from_db()
    assert fault.remaining == 1 and fault.fired == 0
    hit, _ = run(a, OperationKind.INSTALLATION, now=START + timedelta(hours=1))
    assert PatchResult.objects.get(operation=hit, update__kb=kb).state == "Failed" and hit.injected


def test_every_kb_fails_when_no_kb_is_given(behind):
    sandbox.add_fault(None, FaultKind.KB_FAILS, vm=behind["a"], next_n=1)
    install, _ = run(behind["a"], OperationKind.INSTALLATION)
    assert install.status == OperationStatus.FAILED and install.installed_count == 0 and install.failed_count >= 1


def test_an_injected_assessment_failure(behind):
    sandbox.add_fault(None, FaultKind.ASSESSMENT_FAILS, vm=behind["a"], next_n=1)
    failed, _ = run(behind["a"], OperationKind.ASSESSMENT)
    assert failed.status == OperationStatus.FAILED and failed.error_code == "AssessmentFailed"
    assert "Injected fault" in failed.error_message and failed.is_injected


def test_an_injected_unreachable_agent(behind):
    sandbox.add_fault(None, FaultKind.AGENT_UNREACHABLE, vm=behind["a"], next_n=1)
    operation, executed = run(behind["a"], OperationKind.ASSESSMENT)
    assert "Injected fault" in executed.unreachable[operation.pk]
    assert operation.is_injected and operation.status == OperationStatus.IN_PROGRESS  # the task retries it


def test_an_injected_slow_install_exceeds_the_maximum_duration(behind):
    sandbox.add_fault(None, FaultKind.SLOW_INSTALL, vm=behind["a"], next_n=1)
    install, _ = run(behind["a"], OperationKind.INSTALLATION)
    assert install.maintenance_window_exceeded and install.pending_count >= 1 and install.installed_count == 0
    assert install.is_injected


def test_an_injected_reboot_hang_leaves_the_vm_starting(behind):
    sandbox.add_fault(None, FaultKind.REBOOT_HANGS, vm=behind["a"], next_n=1)
    install, _ = run(behind["a"], OperationKind.INSTALLATION)
    assert install.reboot_status == "Failed" and install.status == OperationStatus.FAILED
    assert install.error_code == "VMRebootTimedOut" and "Injected fault" in install.error_message
    assert VirtualMachine.objects.get(pk=behind["a"].pk).power_state == VirtualMachine.PowerState.STARTING


def test_an_injected_rollout_halt_halts_the_regions_release(behind):
    sandbox.add_fault(None, FaultKind.ROLLOUT_HALT, location="northeurope", next_n=5)
    engine.patch_fleet(START, execute=True)
    halt = RolloutHalt.objects.get()
    assert halt.product == "ws2022" and halt.is_active and "Injected fault" in halt.reason
    engine.patch_fleet(START + timedelta(hours=1), execute=True)
    assert RolloutHalt.objects.count() == 1  # once per release
    assert Fault.objects.get().fired == 1


def test_next_n_fires_on_exactly_n_operations(catalog):
    rg = make_resource_group(make_subscription(), "rg")
    vms = [make_vm(resource_group=rg, name=f"vm-{i}", now=START) for i in range(5)]
    sandbox._set_clock(START)
    fault = sandbox.add_fault(None, FaultKind.ASSESSMENT_FAILS, next_n=2)
    ids = services.queue_operations(vms, OperationKind.ASSESSMENT, now=START, enqueue=False)
    services.execute_operations(ids, now=START)
    injected = Operation.objects.filter(pk__in=ids).exclude(injected="")
    assert injected.count() == 2 and all(op.status == OperationStatus.FAILED for op in injected)
    fault.refresh_from_db()
    assert fault.remaining == 0 and fault.fired == 2 and not fault.is_active


def test_a_probability_fires_on_about_that_share(catalog):
    rg = make_resource_group(make_subscription(), "rg")
    vms = [make_vm(resource_group=rg, name=f"vm-{i}", now=START) for i in range(40)]
    sandbox._set_clock(START)
    sandbox.add_fault(None, FaultKind.ASSESSMENT_FAILS, probability=0.5)
    ids = services.queue_operations(vms, OperationKind.ASSESSMENT, now=START, enqueue=False)
    services.execute_operations(ids, now=START)
    failed = Operation.objects.filter(pk__in=ids, status=OperationStatus.FAILED)
    assert 8 <= failed.count() <= 32
    assert all(op.is_injected for op in failed)
    assert not Operation.objects.filter(pk__in=ids, status=OperationStatus.SUCCEEDED).exclude(injected="").exists()


def test_a_fault_keeps_to_its_scope(behind):
    sandbox.add_fault(None, FaultKind.ASSESSMENT_FAILS, vm=behind["a"], probability=1)
    sandbox.add_fault(None, FaultKind.KB_FAILS, subscription=behind["fabrikam"], probability=1)
    assert run(behind["a"], OperationKind.ASSESSMENT)[0].is_failed
    assert not run(behind["b"], OperationKind.ASSESSMENT)[0].is_failed
    assert not run(behind["c"], OperationKind.ASSESSMENT)[0].is_injected  # a KB fault: installations only
    assert run(behind["c"], OperationKind.INSTALLATION)[0].is_injected
    assert not run(behind["b"], OperationKind.INSTALLATION)[0].is_injected


def test_who_may_set_faults(behind, django_user_model):
    alice, bob = behind["alice"], django_user_model.objects.create_user("bob", password="pw-bob-123")
    assert sandbox.add_fault(alice, FaultKind.ASSESSMENT_FAILS, vm=behind["a"], next_n=1).created_by == alice
    with pytest.raises(sandbox.SandboxForbidden):  # Reader on Fabrikam
        sandbox.add_fault(alice, FaultKind.ASSESSMENT_FAILS, vm=behind["c"], next_n=1)
    with pytest.raises(sandbox.SandboxNotFound):  # Bob cannot see Contoso's VM
        sandbox.add_fault(bob, FaultKind.ASSESSMENT_FAILS, vm=behind["a"], next_n=1)
    with pytest.raises(sandbox.SandboxForbidden):  # the whole fleet: installation managers only
        sandbox.add_fault(alice, FaultKind.AGENT_UNREACHABLE, probability=0.1)
    assert [f.pk for f in sandbox.faults_for(bob)] == []
    assert len(sandbox.faults_for(alice)) == 1


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"kind": "meteor_strike", "next_n": 1}, "Unknown fault kind"),
        ({"kind": FaultKind.KB_FAILS, "next_n": 1, "probability": 0.5}, "either a probability"),
        ({"kind": FaultKind.KB_FAILS}, "either a probability"),
        ({"kind": FaultKind.KB_FAILS, "probability": 1.5}, "at most 1"),
        ({"kind": FaultKind.KB_FAILS, "probability": 0}, "above 0"),
        ({"kind": FaultKind.KB_FAILS, "next_n": 0}, "from 1"),
        ({"kind": FaultKind.KB_FAILS, "kb": "12", "next_n": 1}, "not a KB number"),
        ({"kind": FaultKind.ASSESSMENT_FAILS, "kb": "5012345", "next_n": 1}, "only with the 'kb_fails'"),
        ({"kind": FaultKind.ROLLOUT_HALT, "next_n": 1}, "per region"),
        ({"kind": FaultKind.ROLLOUT_HALT, "location": "atlantis", "next_n": 1}, "Unknown region"),
    ],
)
def test_bad_faults_are_refused(db, kwargs, says):
    kind = kwargs.pop("kind")
    with pytest.raises(sandbox.SandboxError, match=says):
        sandbox.add_fault(None, kind, **kwargs)
    assert not Fault.objects.exists()


# --- Snapshots and reset ----------------------------------------------------------------------------


def test_export_import_export_is_identical(world):
    sandbox.add_fault(world["owner"], FaultKind.KB_FAILS, vm=world["hot"], next_n=1)
    sandbox.advance(days=10)
    first = sandbox.dumps(sandbox.export_snapshot())

    counts = sandbox.import_snapshot(sandbox.loads(first))

    assert sandbox.dumps(sandbox.export_snapshot()) == first
    assert counts["tables"]["vms.virtualmachine"] == 2 and counts["skippedRoleAssignments"] == []
    assert clock.now() == START + timedelta(days=10)
    # New rows get new ids after the loaded ones, and the fault is spent as it was.
    vm = VirtualMachine.objects.get(name="hot-01")
    operation, created = services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)
    assert created and operation.pk > max(Operation.objects.exclude(pk=operation.pk).values_list("pk", flat=True))
    assert Operation.objects.filter(vm=vm).exclude(injected="").count() == 1


def test_a_snapshot_from_a_newer_portal_is_refused_and_changes_nothing(world):
    before = sandbox.dumps(sandbox.export_snapshot())
    data = sandbox.loads(before)
    data["schemaVersion"] = sandbox.SCHEMA_VERSION + 1
    data["tables"]["vms.virtualmachine"] = []
    with pytest.raises(sandbox.SandboxError, match="newer than this portal"):
        sandbox.import_snapshot(data)
    assert sandbox.dumps(sandbox.export_snapshot()) == before


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d.pop("tables"),
        lambda d: d.update(format="something-else"),
        lambda d: d["tables"]["vms.virtualmachine"][0].update(created_at="yesterday"),
        lambda d: d["tables"]["patching.operation"][0].update(vm_id=999999),  # a row that points nowhere
        lambda d: d["tables"]["vms.virtualmachine"].append(dict(d["tables"]["vms.virtualmachine"][0])),  # twice
        lambda d: d.update(clock={"mode": "sandbox", "now": "soon"}),
        lambda d: d["tables"]["patching.operation"][0].update(user=["x"]),  # a user name that is not a name
        lambda d: d["tables"]["patching.operation"][0].update(status="Bogus"),  # not one of its choices
        lambda d: d["roleAssignments"].append({"user": "nobody", "subscription": "x", "role": "Superduper"}),
    ],
)
def test_a_malformed_snapshot_is_refused_and_changes_nothing(world, breakage):
    services.start_operation(world["hot"], OperationKind.ASSESSMENT, enqueue=False)
    before = sandbox.dumps(sandbox.export_snapshot())
    data = sandbox.loads(before)
    breakage(data)
    with pytest.raises(sandbox.SandboxError):
        sandbox.import_snapshot(data)
    clock.forget()
    assert sandbox.dumps(sandbox.export_snapshot()) == before


def test_not_json_is_refused(db):
    with pytest.raises(sandbox.SandboxError, match="not JSON"):
        sandbox.loads(b"\x89PNG")
    with pytest.raises(sandbox.SandboxError, match="nested too deeply"):
        sandbox.loads("[" * 100_000)


@pytest.mark.parametrize("moment", ["0001-01-01T00:00+14:00", "9999-12-31T23:59-12:00", "2026-13-01"])
def test_moments_off_the_calendar_are_refused(moment):
    with pytest.raises(sandbox.SandboxError, match="not a date and time"):
        sandbox.parse_moment(moment)


def test_reset_to_an_empty_fleet_keeps_users_and_the_clock(world):
    message = sandbox.reset(demo=False)
    assert "empty" in message
    assert not VirtualMachine.objects.exists() and not Operation.objects.exists()
    assert world["owner"].__class__.objects.filter(username="owner").exists()
    assert clock.now() == START
