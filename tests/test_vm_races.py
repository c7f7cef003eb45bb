"""Races on one VM against real PostgreSQL (issue 10): DELETE vs PATCH vs assessPatches, concurrent
PATCHes, starts racing a finishing run. Threads, each with its own connection, released together by a
barrier; bounded rounds so the file stays quick on two slow cores."""

import threading
from collections import Counter

import pytest
from django.db import connections
from django.test import Client

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
        results = race(
            lambda p=path: client(alice_token).delete(p),
            lambda p=path: client(alice_token).patch(p, settings_body(assessmentMode="AutomaticByPlatform")),
            lambda p=path: client(alice_token).post(p + "/assessPatches"),
            lambda p=path: client(alice_token).post(p + "/assessPatches"),
        )
        for result in results:
            statuses[result if isinstance(result, Exception) else result.status_code] += 1
        survived += VirtualMachine.objects.filter(pk=vm.pk).exists()
    print(f"DELETE vs PATCH vs 2x assessPatches, {rounds} rounds: {dict(statuses)}, VMs surviving: {survived}")
    assert not [s for s in statuses if not isinstance(s, int) or s >= 500], statuses
    assert survived == 0
    assert not Operation.objects.in_flight().filter(vm_name__startswith="race-").exists()
