"""Faults on demand (the sandbox): which of a batch's operations an injected fault hits, and how.

`hits(operations, vms)` is called by services.execute_operations, the one way operations run, right
after the claim: it reads the active faults once, decides per operation (a deterministic draw for a
probability, the first N in id order for "next N", counted down under a row lock so two workers do
not spend the same one), marks each hit operation as injected and says what the run must do. The
guest (patching.guest, pure) is handed the result as `guest.Injected`. `open_halts(now)` is the
rollout-halt fault, called by the orchestrator's round. Nothing here imports the services.
"""

import hashlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from django.db import transaction

from vms.models import VirtualMachine

from . import guest as sim
from .models import Fault, FaultKind, Operation, OperationKind, RolloutHalt, Update
from .vocabulary import WINDOWS_KINDS

# How much slower a "slow install" fault makes each update: far past any maximumDuration (4 h).
SLOWDOWN = 100
INSTALL_KINDS = (FaultKind.KB_FAILS, FaultKind.SLOW_INSTALL, FaultKind.REBOOT_HANGS)


@dataclass(frozen=True)
class Hit:
    """What the faults that hit one operation make it do."""

    unreachable: bool = False
    assessment_fails: bool = False
    guest: sim.Injected = sim.NO_FAULTS
    notes: tuple[str, ...] = field(default=())

    @property
    def text(self) -> str:
        return f"{sim.INJECTED} (sandbox): " + "; ".join(self.notes)


NONE = Hit()


def describe(fault: Fault) -> str:
    what = {
        FaultKind.ASSESSMENT_FAILS: "the assessment fails",
        FaultKind.AGENT_UNREACHABLE: "the VM agent does not answer",
        FaultKind.KB_FAILS: f"KB{fault.kb} fails to install" if fault.kb else "every KB fails to install",
        FaultKind.SLOW_INSTALL: "installs run slower than the maximum duration allows",
        FaultKind.REBOOT_HANGS: "the VM hangs in its reboot",
        FaultKind.ROLLOUT_HALT: f"health signals in {fault.location} fail",
    }[FaultKind(fault.kind)]
    return f"{what} (fault #{fault.pk})"


def applies(fault: Fault, vm, kind: str) -> bool:
    """Whether `fault` is scoped to this run's VM (services.RunVm) and kind of run."""
    if fault.vm_id and fault.vm_id != vm.pk:
        return False
    if fault.subscription_id and str(fault.subscription_id) != str(vm.subscription_id):
        return False
    if fault.location and fault.location != vm.location:
        return False
    if fault.kind == FaultKind.ASSESSMENT_FAILS:
        return kind == OperationKind.ASSESSMENT
    if fault.kind in INSTALL_KINDS:
        return kind == OperationKind.INSTALLATION
    return fault.kind == FaultKind.AGENT_UNREACHABLE


def draw(fault: Fault, key: str) -> bool:
    """A deterministic draw: the same fault and operation attempt fire the same way every time."""
    digest = hashlib.sha256(f"{fault.pk}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fault.probability


def _apply(hit: Hit, fault: Fault) -> Hit:
    kind, g = fault.kind, hit.guest
    if kind == FaultKind.KB_FAILS:
        g = replace(g, failing_kbs=g.failing_kbs | {fault.kb}) if fault.kb else replace(g, every_kb_fails=True)
    elif kind == FaultKind.SLOW_INSTALL:
        g = replace(g, slowdown=SLOWDOWN)
    elif kind == FaultKind.REBOOT_HANGS:
        g = replace(g, reboot_hangs=True)
    return Hit(
        unreachable=hit.unreachable or kind == FaultKind.AGENT_UNREACHABLE,
        assessment_fails=hit.assessment_fails or kind == FaultKind.ASSESSMENT_FAILS,
        guest=g,
        notes=(*hit.notes, describe(fault)),
    )


def hits(
    operations: list,
    vms: dict,  # the runs' VMs by id (services.RunVm)
    would_install: Callable[[Any], set[str]] = lambda operation: set(),
) -> dict[int, Hit]:
    """The faults that hit each of these claimed operations (only those hit are in the answer): the
    runs of a batch (services.Run: its pk, vm_id, kind, activity_id and attempts).

    A fault on one KB hits only an installation that would install that KB (`would_install`: the KBs
    an installation selects), so it is neither spent on nor marked on a run that never touches it.

    One query when no fault is set. Marks every hit operation's `injected`, and counts the faults
    down (next N) or up (fired), each in one UPDATE per fault.
    """
    if not Fault.objects.active().exclude(kind=FaultKind.ROLLOUT_HALT).exists():
        return {}
    result: dict[int, Hit] = {}
    with transaction.atomic():
        faults = list(Fault.objects.active().exclude(kind=FaultKind.ROLLOUT_HALT).select_for_update().order_by("pk"))
        for fault in faults:
            budget = fault.remaining
            fired = 0
            for operation in sorted(operations, key=lambda op: op.pk):
                vm = vms.get(operation.vm_id)
                if vm is None or not applies(fault, vm, operation.kind):
                    continue
                if fault.kind == FaultKind.KB_FAILS and fault.kb and fault.kb not in would_install(operation):
                    continue
                if budget is not None:
                    if budget <= fired:
                        break
                elif not draw(fault, f"{operation.activity_id}|{operation.attempts}"):
                    continue
                fired += 1
                result[operation.pk] = _apply(result.get(operation.pk, NONE), fault)
            if fired:
                changes = {"fired": fault.fired + fired}
                if budget is not None:
                    changes["remaining"] = budget - fired
                Fault.objects.filter(pk=fault.pk).update(**changes)
        marks: dict[str, list[int]] = defaultdict(list)
        for pk, hit in result.items():
            marks[hit.text[:300]].append(pk)
        for text, pks in marks.items():
            Operation.objects.filter(pk__in=pks).update(injected=text)
    return result


def open_halts(now: datetime) -> list[RolloutHalt]:
    """The rollout-halt faults: halt the current release of each product running in the fault's scope.

    Halts are per release and product, like the platform's own (engine.check_halts); an operator
    resumes them the same way. Each fault halts a release once (a resumed one stays resumed).
    """
    faults = list(Fault.objects.active().filter(kind=FaultKind.ROLLOUT_HALT).order_by("pk"))
    opened: list[RolloutHalt] = []
    for fault in faults:
        scope = VirtualMachine.objects.all()
        if fault.vm_id:
            scope = scope.filter(pk=fault.vm_id)
        if fault.subscription_id:
            scope = scope.filter(resource_group__subscription_id=fault.subscription_id)
        if fault.location:
            scope = scope.filter(location=fault.location)
        products = list(scope.order_by("product").values_list("product", flat=True).distinct())
        fired = 0
        for product in products:
            if fault.remaining is not None and fired >= fault.remaining:
                break
            release = (
                Update.objects.released(now)
                .filter(product=product, kind__in=list(WINDOWS_KINDS))
                .order_by("-published_at")
                .values_list("release_month", flat=True)
                .first()
            )
            if release is None or RolloutHalt.objects.filter(product=product, release_month=release).exists():
                continue
            if fault.probability is not None and not draw(fault, f"{product}|{release}"):
                continue
            halt = RolloutHalt.objects.create(
                release_month=release,
                product=product,
                halted_at=now,
                reason=f"{sim.INJECTED} (sandbox): {describe(fault)}."[:300],
            )
            opened.append(halt)
            fired += 1
        if fired:
            changes = {"fired": fault.fired + fired}
            if fault.remaining is not None:
                changes["remaining"] = fault.remaining - fired
            Fault.objects.filter(pk=fault.pk).update(**changes)
    return opened
