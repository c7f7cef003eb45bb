"""Races on one VM against real PostgreSQL (issue 10): DELETE vs PATCH vs assessPatches, concurrent
PATCHes, starts racing a finishing run. Threads, each with its own connection, released together by a
barrier; bounded rounds so the file stays quick on two slow cores."""

import threading
from collections import Counter

import pytest
from django.db import connections
from django.test import Client
from django.utils import timezone

from patching import services
from patching.models import Operation, OperationKind, OperationStatus
from tests.arm_client import ArmClient, vm_path
from tests.factories import make_vm
from vms.models import VirtualMachine

pytestmark = [pytest.mark.usefixtures("arm_settings"), pytest.mark.django_db(transaction=True)]

PS = ("properties", "osProfile", "windowsConfiguration", "patchSettings")


def settings_body(**patch_settings) -> dict:
    return {"properties": {"osProfile": {"windowsConfiguration": {"patchSettings": patch_settings}}}}


def race(*calls):
    """Run the calls at once, each in its own thread and connection; their results (or exceptions)."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, call):
        try:
            barrier.wait(timeout=30)
            results[i] = call()
        except Exception as e:  # noqa: BLE001 - the test counts what escaped
            results[i] = e
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def client(token: str) -> ArmClient:
    # Each thread its own client; a view's exception becomes the 500 a real server would answer.
    return ArmClient(Client(raise_request_exception=False), token)


def test_delete_racing_patch_and_assess_answers_no_5xx_and_the_vm_is_gone(alice_token, fleet):
    rounds, statuses, survived = 25, Counter(), 0
    for i in range(rounds):
        vm = make_vm(resource_group=fleet["web"], name=f"race-{i:02d}")
        path = vm_path(vm)
        install, _ = services.start_operation(vm, OperationKind.INSTALLATION, enqueue=False)
        results = race(
            lambda p=path: client(alice_token).delete(p),
            lambda p=path: client(alice_token).patch(p, settings_body(assessmentMode="AutomaticByPlatform")),
            lambda p=path: client(alice_token).post(p + "/assessPatches"),
            lambda p=path: client(alice_token).post(p + "/assessPatches"),
            # A worker recording an installation on the same VM meanwhile (claim, guest, record).
            lambda op=install: services.execute_operations([op.pk], now=timezone.now()),
        )
        worker = results.pop()
        assert not isinstance(worker, Exception), f"round {i}: the worker raised {worker!r}"
        for result in results:
            statuses[result if isinstance(result, Exception) else result.status_code] += 1
        survived += VirtualMachine.objects.filter(pk=vm.pk).exists()
    print(
        f"DELETE vs PATCH vs 2x assessPatches vs a recording worker, {rounds} rounds: {dict(statuses)}, VMs surviving: {survived}"
    )
    assert not [s for s in statuses if not isinstance(s, int) or s >= 500], statuses
    assert survived == 0
    assert not Operation.objects.in_flight().filter(vm_name__startswith="race-").exists()
    recorded = Operation.objects.filter(vm_name__startswith="race-", kind=OperationKind.INSTALLATION)
    print(f"  installations: {dict(Counter(recorded.values_list('status', 'error_code')))}")


def test_concurrent_patches_of_different_fields_lose_nothing(alice_token, fleet):
    vm, pairs, statuses = fleet["web1"], 20, Counter()
    path = vm_path(vm)
    for i in range(pairs):
        assessment = ("AutomaticByPlatform", "ImageDefault")[i % 2]
        reboot = ("Never", "Always", "IfRequired")[i % 3]
        results = race(
            lambda a=assessment: client(alice_token).patch(path, settings_body(assessmentMode=a)),
            lambda r=reboot: client(alice_token).patch(
                path, settings_body(automaticByPlatformSettings={"rebootSetting": r})
            ),
        )
        statuses.update(r if isinstance(r, Exception) else r.status_code for r in results)
        vm.refresh_from_db()
        assert (vm.assessment_mode, vm.reboot_setting) == (assessment, reboot), f"pair {i} lost a change"
    print(f"concurrent PATCH pairs: {pairs}, answers {dict(statuses)}, 0 changes lost")
    assert statuses == Counter({200: 2 * pairs})


def test_starts_racing_a_finishing_run_a_queue_and_a_delete_never_raise(fleet):
    rounds, outcomes = 20, Counter()
    for i in range(rounds):
        vm = make_vm(resource_group=fleet["web"], name=f"start-{i:02d}")
        running, _ = services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)

        def start(vm=vm):
            operation, created = services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)
            return "started" if created else "in flight"

        calls = [
            start,
            start,
            lambda vm=vm: f"queued {len(services.queue_operations([vm], OperationKind.ASSESSMENT, enqueue=False))}",
        ]
        if i % 2:  # the worker records the run while the VM is deleted
            calls.append(lambda op=running: f"finished {services.execute_operations([op.pk], now=timezone.now())}")
            calls.append(lambda vm=vm: f"deleted {services.delete_virtual_machine(vm)}")
        else:  # the run ends the quick way (a task giving up, the stale-run job): no VM lock involved
            calls.append(lambda op=running: f"finished {services.fail_operation(op.pk, 'Test', 'ended')}")
        for result in race(*calls):
            if isinstance(result, VirtualMachine.DoesNotExist):
                result = "VM gone"
            outcomes[result if isinstance(result, str) else repr(result)] += 1
        if i % 2:
            assert not VirtualMachine.objects.filter(pk=vm.pk).exists()
            assert not Operation.objects.in_flight().filter(vm_name=vm.name).exists()
        else:
            assert Operation.objects.in_flight().filter(vm=vm).count() <= 1
    print(f"start_operation races, {rounds} rounds: {dict(outcomes)}")
    allowed = ("started", "in flight", "VM gone", "queued", "finished", "deleted")
    assert all(outcome.startswith(allowed) for outcome in outcomes), outcomes
    assert Operation.objects.filter(status=OperationStatus.IN_PROGRESS).count() == 0


def test_a_start_whose_conflicting_run_just_finished_tries_again(fleet, monkeypatch):
    vm = fleet["web1"]
    running, _ = services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)
    constraint = services._constraint

    def finish_right_after_the_conflict(error):
        services.fail_operation(running.pk, "Test", "finished between the insert and the read")
        return constraint(error)

    monkeypatch.setattr(services, "_constraint", finish_right_after_the_conflict)
    operation, created = services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)
    assert created and operation.pk != running.pk and operation.status == OperationStatus.NOT_STARTED


def test_a_start_on_a_deleted_vm_says_so(fleet):
    vm = fleet["web1"]
    VirtualMachine.objects.filter(pk=vm.pk).delete()
    with pytest.raises(VirtualMachine.DoesNotExist):
        services.start_operation(vm, OperationKind.ASSESSMENT, enqueue=False)
    assert services.queue_operations([vm], OperationKind.ASSESSMENT, enqueue=False) == []
