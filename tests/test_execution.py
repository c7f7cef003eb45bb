"""Batch execution (issue 11): batches claimed once by two workers, simulated time as due times
completed once, the reboot visible in between, people's operations on their own queue, and the outbox
sending whole batches again after a broker outage. Real PostgreSQL, threads with their own connections;
the broker is a stand-in (tests/test_dispatch.py), the live worker tests run the same through Redis."""

import threading
from datetime import timedelta

import psycopg
import pytest
from django.db import connection, connections
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from patching import services
from patching.models import MissingUpdate, Operation, OperationKind, OperationStatus, PatchResult, RebootStatus, Update
from patching.parameters import InstallParameters
from tests.factories import make_resource_group, make_subscription, make_vm
from tests.test_dispatch import Broker
from vms.models import VirtualMachine

pytestmark = pytest.mark.usefixtures("no_random_failures")


@pytest.fixture
def broker(monkeypatch):
    return Broker(monkeypatch)


def together(*calls):
    """Run the calls at once, each in its own thread and database connection; their results."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, call):
        try:
            barrier.wait(timeout=30)
            results[i] = call()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def fleet(n: int, **kwargs) -> list[VirtualMachine]:
    rg = make_resource_group(make_subscription())
    return [make_vm(resource_group=rg, name=f"vm-{i}", **kwargs) for i in range(n)]


@pytest.mark.django_db(transaction=True)
def test_a_batch_delivered_to_two_workers_runs_each_operation_once(catalog, settings):
    settings.PORTAL_SIM_SPEED = 0
    ids = services.queue_operations(fleet(40), OperationKind.ASSESSMENT, enqueue=False)

    first, second = together(lambda: services.run_batch(ids), lambda: services.run_batch(ids))
    assert sorted(first.recorded + second.recorded) == sorted(ids)  # each once, by one of them
    done = Operation.objects.filter(pk__in=ids)
    assert {(op.status, op.attempts) for op in done} == {(OperationStatus.SUCCEEDED, 1)}
    per_op = {op.pk: op.critical_security_count + op.other_count for op in done}
    for pk, count in per_op.items():
        assert PatchResult.objects.filter(operation_id=pk).count() == count  # no result written twice


@pytest.mark.django_db(transaction=True)
def test_runs_waiting_for_their_due_time_are_finished_once_however_many_due_steps_arrive(catalog, settings, broker):
    settings.PORTAL_SIM_SPEED = 120
    ids = services.queue_operations(fleet(30), OperationKind.ASSESSMENT, enqueue=False)
    assert services.run_batch(ids).recorded == []  # parked: no worker waits
    assert [batch for batch, _ in broker.advances] == [ids]  # one due step for the batch
    ((_, options),) = broker.advances
    assert options["queue"] == "user" and options["eta"] == Operation.objects.get(pk=ids[0]).due_at
    assert not Operation.objects.filter(pk__in=ids).exclude(status=OperationStatus.IN_PROGRESS).exists()
    assert services.advance_operations(ids) == []  # not due yet

    later = timezone.now() + timedelta(seconds=5)
    first, second, third = together(*[lambda: services.advance_operations(ids, now=later)] * 3)
    assert sorted(first + second + third) == sorted(ids)
    done = Operation.objects.filter(pk__in=ids)
    assert {(op.status, op.due_at) for op in done} == {(OperationStatus.SUCCEEDED, None)}
    for op in done:
        assert op.results.count() == op.critical_security_count + op.other_count


@pytest.mark.django_db
def test_an_installation_shows_in_progress_then_the_reboot_then_its_result(catalog, settings, broker):
    settings.PORTAL_SIM_SPEED = 60
    (vm,) = fleet(1, product="ws2022")
    always = InstallParameters.from_stored(
        {"rebootSetting": "Always", "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]}}
    )
    operation, _ = services.start_operation(vm, OperationKind.INSTALLATION, parameters=always, enqueue=False)
    services.run_batch([operation.pk])

    def seen():
        op = Operation.objects.get(pk=operation.pk)
        return op.status, op.reboot_status, VirtualMachine.objects.get(pk=vm.pk).power_state

    op = Operation.objects.get(pk=operation.pk)
    assert op.reboot_at is not None and op.started_at < op.reboot_at < op.due_at
    assert seen() == (OperationStatus.IN_PROGRESS, RebootStatus.UNKNOWN, VirtualMachine.PowerState.RUNNING)
    assert [options["eta"] for _, options in broker.advances] == [op.reboot_at]  # the first due step

    assert services.advance_operations([op.pk], now=op.reboot_at) == []
    assert seen() == (OperationStatus.IN_PROGRESS, RebootStatus.STARTED, VirtualMachine.PowerState.STARTING)

    assert services.advance_operations([op.pk], now=op.due_at) == [op.pk]
    status, reboot, power = seen()
    assert status == OperationStatus.SUCCEEDED and reboot == RebootStatus.COMPLETED
    assert power == VirtualMachine.PowerState.RUNNING
    # As the real agent does, an assessment follows the installation.
    assert vm.operations.filter(kind=OperationKind.ASSESSMENT, status=OperationStatus.NOT_STARTED).exists()


@pytest.mark.django_db(transaction=True)  # on_commit publishes, as in production
def test_assess_now_goes_to_the_user_queue_and_a_platform_round_to_the_platform_queue(client, user, broker, catalog):
    rg = make_resource_group(make_subscription("Contoso", user=user, role="Contributor"))
    vms = [make_vm(resource_group=rg, name=f"vm-{i}") for i in range(3)]

    client.post(reverse("patching:assess", args=[vms[0].pk]), headers={"HX-Request": "true"})
    assert broker.messages == [([vms[0].operations.get().pk], "user")]  # a batch of one, on its own queue

    broker.messages.clear()
    ids = services.queue_operations(vms[1:], OperationKind.ASSESSMENT)
    assert broker.messages == [(ids, "platform")]


def queries_to_run(vms: list[VirtualMachine], settings) -> int:
    """The queries of one batch: half of the VMs assessed, half installing (rebooting), at real time."""
    from django.test.utils import CaptureQueriesContext

    half = len(vms) // 2
    ids = services.queue_operations(vms[:half], OperationKind.ASSESSMENT, enqueue=False)
    ids += services.queue_operations(vms[half:], OperationKind.INSTALLATION, enqueue=False)
    settings.PORTAL_SIM_SPEED = 0
    with CaptureQueriesContext(connection) as context:
        executed = services.execute_operations(ids, wait=False)
    assert sorted(executed.recorded) == sorted(ids)
    return len(context.captured_queries)


@pytest.mark.django_db
def test_a_run_recorded_at_once_writes_its_operation_row_once(catalog, settings):
    """With no simulated time to wait for, a run is claimed and recorded in one transaction: its row
    goes from NotStarted to its outcome in one write (each write of a run rewrites every index of
    the table), with the claim's start and attempt; an agent that does not answer leaves it claimed."""
    settings.PORTAL_SIM_SPEED = 0
    ids = services.queue_operations(fleet(30), OperationKind.ASSESSMENT, enqueue=False)
    settings.PORTAL_AGENT_UNREACHABLE_RATE = 0.3
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_get_xact_tuples_updated('patching_operation'::regclass)")
        (before,) = cursor.fetchone()
        executed = services.execute_operations(ids)
        cursor.execute("SELECT pg_stat_get_xact_tuples_updated('patching_operation'::regclass)")
        (after,) = cursor.fetchone()
    assert executed.recorded and executed.unreachable  # both kinds of run in the batch
    assert after - before == len(ids)
    runs = {op.pk: op for op in Operation.objects.filter(pk__in=ids)}
    assert {(runs[pk].status, runs[pk].attempts) for pk in executed.recorded} == {(OperationStatus.SUCCEEDED, 1)}
    assert {(runs[pk].status, runs[pk].attempts) for pk in executed.unreachable} == {(OperationStatus.IN_PROGRESS, 1)}
    assert all(op.started_at and op.started_at <= (op.finished_at or op.started_at) for op in runs.values())


@pytest.mark.django_db
def test_a_reassessment_that_finds_the_same_leaves_the_missing_updates_untouched(catalog, settings):
    """Most of a daily round finds what the day before found: those VMs' missing updates are kept as
    they are (replacing them cost eight rows a run, their indexes and rollups); what changed is written."""
    settings.PORTAL_SIM_SPEED = 0
    vms = fleet(12)
    services.execute_operations(services.queue_operations(vms, OperationKind.ASSESSMENT, enqueue=False))
    rows = MissingUpdate.objects.order_by("pk").values_list("pk", "guest_id", "update_id", "failed")
    before = list(rows.all())
    assert before
    services.execute_operations(services.queue_operations(vms, OperationKind.ASSESSMENT, enqueue=False))
    assert list(rows.all()) == before  # the same rows, not copies of them
    gone = MissingUpdate.objects.filter(guest_id=vms[0].pk).first()
    MissingUpdate.objects.filter(pk=gone.pk).update(failed=True)  # as a failed installation leaves it
    MissingUpdate.objects.filter(guest_id=vms[1].pk).delete()  # as if never found
    services.execute_operations(services.queue_operations(vms[:2], OperationKind.ASSESSMENT, enqueue=False))
    assert MissingUpdate.objects.get(pk=gone.pk).failed  # an assessment keeps what the installation failed
    assert sorted(MissingUpdate.objects.values_list("guest_id", "update_id")) == sorted(r[1:3] for r in before)


@pytest.mark.django_db
def test_a_worker_keeps_the_catalog_between_batches_until_it_changes(catalog, settings):
    settings.PORTAL_SIM_SPEED = 0
    vm = fleet(1)[0]

    def assessed() -> set[int]:
        (pk,) = services.queue_operations([vm], OperationKind.ASSESSMENT, enqueue=False)
        services.execute_operations([pk])
        return set(PatchResult.objects.filter(operation_id=pk).values_list("update_id", flat=True))

    found = assessed()
    assert found and services._kept_catalogs  # kept for the next batch
    withdrawn = min(found)  # say, republished ten years from now: no longer released
    Update.objects.filter(pk=withdrawn).update(published_at=F("published_at") + timedelta(days=3650))
    assert withdrawn not in assessed()


@pytest.mark.django_db
def test_a_batch_costs_the_same_queries_whatever_its_size(catalog, settings, broker):
    small, large = fleet(4, product="ws2022"), fleet(40, product="ws2022")
    assert queries_to_run(large, settings) == queries_to_run(small, settings)


@pytest.mark.django_db
def test_a_batch_finds_its_operations_by_id_whatever_the_statistics_say(catalog):
    # Statistics taken between rounds, when nothing was in flight (as autovacuum takes them) ...
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE patching_operation")
    ids = services.queue_operations(fleet(300), OperationKind.ASSESSMENT, enqueue=False)
    batch = ids[-50:]
    # ... then a round: a batch's claim reads its rows by id, not every operation in flight.
    claimable = Operation.objects.among(batch, Q(status=OperationStatus.NOT_STARTED))
    plan = claimable.select_for_update(skip_locked=True).explain()
    assert "in_flight" not in plan and "status_newest" not in plan
    assert sorted(claimable.values_list("pk", flat=True)) == sorted(batch)


def committed_operations() -> int:
    """How many operations another connection (a worker's) sees."""
    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"]) as other:
        return other.execute("SELECT count(*) FROM patching_operation").fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_large_round_reaches_the_workers_chunk_by_chunk_as_each_commits(broker, catalog, settings, monkeypatch):
    settings.PORTAL_EXECUTION_BATCH = 5  # chunks of 5, 10, 20, 40 VMs (one batch, then doubling up to 8)
    seen_when_sent = []
    publish = broker.send_task

    def send_task(name, args=(), **options):
        seen_when_sent.append(committed_operations())
        publish(name, args, **options)

    monkeypatch.setattr(services.current_app, "send_task", send_task)
    ids = services.queue_operations(fleet(100), OperationKind.ASSESSMENT)

    assert sorted(broker.sent) == sorted(ids) and len(ids) == 100  # each once
    # The first batches went out when only the first chunk was committed: the workers start at once.
    assert seen_when_sent[0] == 5
    assert sorted(set(seen_when_sent)) == [5, 15, 35, 75, 100]


@pytest.mark.django_db(transaction=True)
def test_a_round_inside_a_transaction_is_sent_when_that_transaction_commits(broker, catalog, settings):
    settings.PORTAL_EXECUTION_BATCH = 5
    with services.transaction.atomic():
        ids = services.queue_operations(fleet(100), OperationKind.ASSESSMENT)
        assert broker.sent == []  # nothing a worker could not see yet
    assert sorted(broker.sent) == sorted(ids) and len(ids) == 100


@pytest.mark.django_db(transaction=True)  # the round's on-commit publish runs, and fails
def test_the_outbox_sends_a_round_again_in_batches_after_a_broker_outage(broker, catalog, settings):
    settings.PORTAL_EXECUTION_BATCH = 60
    broker.down = True
    with services.transaction.atomic():  # the round commits; its publish fails
        ids = services.queue_operations(fleet(150), OperationKind.ASSESSMENT)
    assert broker.sent == [] and not Operation.objects.filter(dispatched_at__isnull=False).exists()

    broker.down = False
    later = timezone.now() + services.DISPATCH_GRACE + timedelta(seconds=1)
    assert services.dispatch_queued(now=later) == 150
    assert sorted(broker.sent) == sorted(ids)  # each once
    assert [len(batch) for batch, _ in broker.messages] == [50, 50, 50]  # spread over the workers, at most 60
    assert {queue for _, queue in broker.messages} == {"platform"}
    assert services.dispatch_queued(now=later) == 0


@pytest.mark.django_db
def test_a_vm_deleted_while_its_guest_works_fails_its_run_at_the_due_step(catalog, settings, broker):
    settings.PORTAL_SIM_SPEED = 120
    kept, deleted = fleet(2)
    ids = services.queue_operations([kept, deleted], OperationKind.ASSESSMENT, enqueue=False)
    services.run_batch(ids)
    gone = Operation.objects.get(vm=deleted)
    VirtualMachine.objects.filter(pk=deleted.pk).delete()  # behind the portal's back: no in-flight cleanup

    later = timezone.now() + timedelta(seconds=5)
    assert services.advance_operations(ids, now=later) == [Operation.objects.get(vm=kept).pk]
    gone.refresh_from_db()
    assert gone.status == OperationStatus.FAILED and gone.error_code == "VMDeleted"
