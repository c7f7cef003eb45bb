"""The outbox and the heartbeat: an accepted operation always runs, a run whose worker died is resumed.

The broker is replaced by a stand-in for current_app.send_task (a list, or one that raises what kombu
raises when Redis is down); tests/test_dispatch_live.py runs the same against a real worker and a
Redis that is stopped and started again.
"""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from kombu.exceptions import OperationalError

from patching import services
from patching.models import Operation, OperationKind, OperationStatus, RebootStatus
from tests.arm_client import vm_path
from tests.factories import load_catalog, make_resource_group, make_subscription, make_vm
from tests.helpers import run_in_threads
from vms.models import VirtualMachine

pytestmark = pytest.mark.usefixtures("no_random_failures")


class Broker:
    """Stands in for current_app.send_task: records what was published, or fails like a Redis that is down."""

    def __init__(self, monkeypatch):
        self.sent: list[int] = []
        self.messages: list[tuple[list[int], str]] = []  # (batch, queue) per message
        self.advances: list[tuple[list[int], dict]] = []
        self.down = False
        self._lock = threading.Lock()
        monkeypatch.setattr(services.current_app, "send_task", self.send_task)

    def send_task(self, name, args=(), **options):
        if self.down:
            raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        if name == services.ADVANCE_OPERATIONS_TASK:  # a due step (scheduled, not a hand-off)
            self.advances.append((list(args[0]), options))
            return
        assert name == services.RUN_OPERATIONS_TASK
        with self._lock:
            self.sent.extend(args[0])
            self.messages.append((list(args[0]), options.get("queue")))


@pytest.fixture
def broker(monkeypatch):
    return Broker(monkeypatch)


def queued(vm, *, ago: timedelta, dispatched_ago: timedelta | None = None, kind=OperationKind.ASSESSMENT):
    now = timezone.now()
    operation, _ = services.start_operation(vm, kind, now=now - ago, enqueue=False)
    if dispatched_ago is not None:
        Operation.objects.filter(pk=operation.pk).update(dispatched_at=now - dispatched_ago)
    return operation


def running(vm, *, heartbeat_ago: timedelta, attempts: int = 1, kind=OperationKind.ASSESSMENT, **fields):
    operation = queued(vm, ago=heartbeat_ago, dispatched_ago=heartbeat_ago, kind=kind)
    beat = timezone.now() - heartbeat_ago
    Operation.objects.filter(pk=operation.pk).update(
        status=OperationStatus.IN_PROGRESS, started_at=beat, heartbeat_at=beat, attempts=attempts, **fields
    )
    return Operation.objects.get(pk=operation.pk)


# --- Publishing never fails a request ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the on-commit publish runs, as in production
def test_a_failed_publish_is_logged_and_leaves_the_operation_to_the_dispatcher(broker, caplog):
    vm = make_vm()
    broker.down = True
    operation, created = services.start_operation(vm, OperationKind.ASSESSMENT)  # committed; the publish fails

    assert created and "the dispatcher will send them" in caplog.text
    operation.refresh_from_db()
    assert operation.status == OperationStatus.NOT_STARTED and operation.dispatched_at is None
    assert broker.sent == []

    broker.down = False
    later = timezone.now() + services.DISPATCH_GRACE + timedelta(seconds=1)
    assert services.dispatch_queued(now=later) == 1
    operation.refresh_from_db()
    assert operation.dispatched_at is not None and broker.sent == [operation.pk]


@pytest.mark.django_db(transaction=True)  # on_commit runs inside the request, as in production
def test_assess_patches_answers_202_while_the_broker_is_down(api, fleet, broker, arm_settings):
    broker.down = True
    response = api.post(vm_path(fleet["web1"], "/assessPatches"))

    assert response.status_code == 202
    operation = Operation.objects.get(vm=fleet["web1"])
    assert operation.status == OperationStatus.NOT_STARTED and operation.dispatched_at is None
    # The client polls the operation it was given; the dispatcher sends it once the broker is back.
    assert api.client.get(response["Azure-AsyncOperation"], headers={"Authorization": f"Bearer {api.token}"}).json()[
        "status"
    ] == ("InProgress")
    broker.down = False
    Operation.objects.filter(pk=operation.pk).update(created_at=timezone.now() - services.DISPATCH_GRACE)
    assert services.dispatch_queued() == 1 and broker.sent == [operation.pk]


@pytest.mark.django_db(transaction=True)
def test_assess_now_in_the_portal_is_accepted_while_the_broker_is_down(client, user, broker):
    load_catalog()
    vm = make_vm(resource_group=make_resource_group(make_subscription("Contoso", user=user, role="Contributor")))
    broker.down = True

    htmx = client.post(reverse("patching:assess", args=[vm.pk]), headers={"HX-Request": "true"})
    assert htmx.status_code == 200 and "Queued" in htmx.text
    page = client.post(reverse("patching:assess", args=[vm.pk]), follow=True)  # joins the one in flight
    assert page.status_code == 200
    assert vm.operations.get().status == OperationStatus.NOT_STARTED


# --- The dispatcher --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_dispatcher_sends_what_was_never_or_long_ago_sent_and_nothing_else(broker, settings):
    vms = [make_vm(name=f"vm-{i}") for i in range(6)]
    again = settings.PORTAL_DISPATCH_AGAIN_AFTER
    never = queued(vms[0], ago=timedelta(minutes=5))
    lost = queued(vms[1], ago=timedelta(minutes=5), dispatched_ago=again + timedelta(seconds=1))
    recent = queued(vms[2], ago=timedelta(minutes=5), dispatched_ago=again - timedelta(seconds=5))
    just_committed = queued(vms[3], ago=timedelta(seconds=0))  # its own on_commit publish is on the way
    finished = queued(vms[4], ago=timedelta(minutes=5))
    Operation.objects.filter(pk=finished.pk).update(status=OperationStatus.SUCCEEDED)
    alive = running(vms[5], heartbeat_ago=timedelta(seconds=5))

    assert services.dispatch_queued() == 2
    assert sorted(broker.sent) == sorted([never.pk, lost.pk])
    for operation in (never, lost):
        operation.refresh_from_db()
        assert timezone.now() - operation.dispatched_at < timedelta(seconds=5)
    assert {recent.pk, just_committed.pk, finished.pk, alive.pk}.isdisjoint(broker.sent)

    assert services.dispatch_queued() == 0  # sent now: not again within PORTAL_DISPATCH_AGAIN_AFTER


@pytest.mark.django_db
def test_the_dispatcher_gives_unsent_rows_back_while_the_broker_is_down(broker):
    operations = [queued(make_vm(name=f"vm-{i}"), ago=timedelta(minutes=1)) for i in range(3)]
    broker.down = True
    assert services.dispatch_queued(batch=2) == 0
    assert not Operation.objects.filter(dispatched_at__isnull=False).exists()  # the next beat tries again

    broker.down = False
    assert services.dispatch_queued(batch=2) == 3  # in batches of two
    assert sorted(broker.sent) == sorted(op.pk for op in operations)


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_dispatch_rounds_send_each_operation_once(broker):
    vms = [make_vm(name=f"vm-{i:03}") for i in range(120)]
    Operation.objects.bulk_create(
        Operation(
            vm=vm,
            subscription_id=vm.resource_group.subscription_id,
            vm_name=vm.name,
            location=vm.location,
            kind=OperationKind.ASSESSMENT,
            created_at=timezone.now() - timedelta(minutes=1),
        )
        for vm in vms
    )
    start = threading.Barrier(2)
    counts = []

    def round_():
        try:
            start.wait()
            counts.append(services.dispatch_queued(batch=10))
        finally:
            connection.close()

    run_in_threads(round_)

    assert sum(counts) == 120 and len(broker.sent) == len(set(broker.sent)) == 120


@pytest.mark.django_db
def test_a_retry_countdown_is_left_alone_then_resent_if_its_worker_died(broker, settings):
    vm = make_vm()
    operation = running(vm, heartbeat_ago=timedelta(seconds=1))
    services.release_for_retry([operation.pk])  # the task's retry message is on its way, with a countdown
    assert services.dispatch_queued() == 0

    later = timezone.now() + settings.PORTAL_DISPATCH_AGAIN_AFTER + timedelta(seconds=1)
    assert services.dispatch_queued(now=later) == 1 and broker.sent == [operation.pk]


# --- The heartbeat ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_run_whose_heartbeat_stopped_is_resent_taken_over_and_finishes(broker, catalog, settings):
    vm = make_vm()
    dead = running(vm, heartbeat_ago=settings.PORTAL_HEARTBEAT_TIMEOUT + timedelta(seconds=1))
    fresh = running(make_vm(name="alive"), heartbeat_ago=timedelta(seconds=5))

    assert services.dispatch_queued() == 1 and broker.sent == [dead.pk]
    assert services.execute_operation(fresh.pk, sleep=lambda s: None) is None  # its worker is alive
    assert Operation.objects.get(pk=fresh.pk).attempts == 1

    settings.PORTAL_SIM_SPEED = 0
    resumed = services.execute_operation(dead.pk)
    assert resumed.status == OperationStatus.SUCCEEDED and resumed.attempts == 2
    assert resumed.started_at == dead.started_at  # the run's start is kept, for the overall deadline
    assert services.execute_operation(dead.pk) is None  # a third copy finds it finished


@pytest.mark.django_db
def test_a_run_taken_over_mid_reboot_brings_its_vm_back_and_records_each_update_once(catalog, settings):
    settings.PORTAL_SIM_SPEED = 0
    vm = make_vm(product="ws2022")
    dead = running(
        vm,
        heartbeat_ago=settings.PORTAL_HEARTBEAT_TIMEOUT + timedelta(seconds=1),
        kind=OperationKind.INSTALLATION,
        reboot_status=RebootStatus.STARTED,
    )
    VirtualMachine.objects.filter(pk=vm.pk).update(power_state=VirtualMachine.PowerState.STARTING)
    # What the dead worker had computed, under its claim (attempt 1).
    op = Operation.objects.get(pk=dead.pk)
    vm = VirtualMachine.objects.select_related("guest", "resource_group").get(pk=vm.pk)
    zombie = services._simulate(op, vm, services.guests_of([vm])[vm.pk], timezone.now())

    resumed = services.execute_operation(dead.pk)
    assert resumed.attempts == 2 and resumed.installed_count >= 1
    vm.refresh_from_db()
    assert vm.power_state == VirtualMachine.PowerState.RUNNING
    installed = vm.guest.installed.count()

    # The presumed-dead worker comes back and tries to record: its claim is gone.
    assert services.record_findings([zombie]) == []
    assert vm.guest.installed.count() == installed
    assert resumed.results.count() == len(zombie.available)


@pytest.mark.django_db
def test_a_run_that_keeps_losing_its_worker_is_failed_and_its_vm_runs(broker, settings):
    vm = make_vm()
    dead = running(
        vm,
        heartbeat_ago=settings.PORTAL_HEARTBEAT_TIMEOUT + timedelta(seconds=1),
        attempts=settings.PORTAL_MAX_ATTEMPTS,
        kind=OperationKind.INSTALLATION,
        reboot_status=RebootStatus.STARTED,
    )
    VirtualMachine.objects.filter(pk=vm.pk).update(power_state=VirtualMachine.PowerState.STARTING)
    alive = running(make_vm(name="alive"), heartbeat_ago=timedelta(seconds=5), attempts=settings.PORTAL_MAX_ATTEMPTS)

    assert services.dispatch_queued() == 0  # no more takeovers
    assert services.execute_operation(dead.pk) is None
    assert services.fail_stale_operations() == 1
    dead.refresh_from_db()
    vm.refresh_from_db()
    assert dead.status == OperationStatus.FAILED and dead.error_code == "OperationTimedOut"
    assert vm.power_state == VirtualMachine.PowerState.RUNNING
    assert Operation.objects.get(pk=alive.pk).status == OperationStatus.IN_PROGRESS


@pytest.mark.django_db
def test_a_run_waiting_for_its_due_time_is_alive_until_then_and_taken_over_if_its_due_step_is_lost(
    catalog, settings, monkeypatch
):
    settings.PORTAL_SIM_SPEED = 1  # an assessment is due 90 s after its claim
    monkeypatch.setattr(services, "schedule_advance", lambda ids, at=None: None)  # the due step is lost
    vm = make_vm()
    operation, _ = services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)

    assert services.run_batch([operation.pk]).recorded == []  # the worker is free at once
    parked = Operation.objects.get(pk=operation.pk)
    assert parked.status == OperationStatus.IN_PROGRESS and parked.heartbeat_at == parked.due_at
    assert timedelta(seconds=89) < parked.due_at - parked.started_at < timedelta(seconds=91)
    assert services.dispatch_queued() == 0  # no worker holds it, yet it is not dead: it waits

    later = parked.due_at + settings.PORTAL_HEARTBEAT_TIMEOUT + timedelta(seconds=1)
    assert services.dispatch_queued(now=later) == 1  # its due step never came: sent again, taken over
    assert services.execute_operation(operation.pk) is None  # before then, a copy finds nothing to claim
    # Then (its heartbeat, the due time, long past) a worker takes it over and runs it again.
    Operation.objects.filter(pk=operation.pk).update(heartbeat_at=timezone.now() - (later - parked.due_at))
    settings.PORTAL_SIM_SPEED = 0
    resumed = services.execute_operation(operation.pk)
    assert resumed.status == OperationStatus.SUCCEEDED and resumed.attempts == 2 and resumed.due_at is None


@pytest.mark.django_db(transaction=True)
def test_registering_a_feature_while_the_broker_is_down_is_accepted_and_settled_by_the_beat(monkeypatch, settings):
    from vms import features
    from vms.models import FeatureRegistration

    def down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(features.current_app, "send_task", down)
    subscription = make_subscription("Contoso", onboarded=False)
    row = features.register_feature(subscription, FeatureRegistration.HOTPATCH_FEATURES[0])
    assert row.state == "Registering"

    later = timezone.now() + timedelta(seconds=settings.PORTAL_REGISTRATION_SECONDS + 1)
    assert features.settle_due(now=later) == 1
