"""Celery tasks: thin wrappers that take ids and call the services."""

import logging

from celery import shared_task

from . import fleet, rollup, sandbox, services, what_if
from .orchestrator import engine

log = logging.getLogger(__name__)


@shared_task(name=services.RUN_OPERATIONS_TASK, acks_late=True)
def run_operations(operation_ids: list[int], retries: int = 0) -> int:
    """Start a batch of queued operations (their simulated time is left to advance_operations). Safe to
    receive twice: the claim is compare-and-swap. Agent retries come back as `retries` + 1."""
    return len(services.run_batch(operation_ids, retries).unreachable)


@shared_task(acks_late=True)
def run_operation(operation_id: int) -> None:
    """A batch of one (messages sent by an earlier version of the portal)."""
    services.run_batch([operation_id])


@shared_task(name=services.ADVANCE_OPERATIONS_TASK, acks_late=True)
def advance_operations(operation_ids: list[int]) -> int:
    """The due steps of parked runs (reboot started, finished), sent for when they fall due."""
    return len(services.advance_and_reschedule(operation_ids))


@shared_task
def dispatch_queued() -> int:
    """Beat: the outbox. Committed operations the broker did not get, and runs whose worker died, are sent."""
    sent = services.dispatch_queued()
    if sent:
        log.info("Dispatched %d queued or abandoned operation(s)", sent)
    return sent


@shared_task
def fail_stale_operations() -> int:
    """Beat: no operation stays in progress forever when a worker dies under it."""
    failed = services.fail_stale_operations()
    if failed:
        log.warning("Failed %d stale operation(s)", failed)
    return failed


@shared_task
def prune_history() -> int:
    """Beat: keep update history for PORTAL_HISTORY_RETENTION_DAYS, then let it go."""
    return services.prune_history()


@shared_task
def patch_fleet() -> str:
    """Beat: one round of automatic patching (idempotent: a second beat's round finds the lock taken)."""
    if sandbox.is_advancing():  # the advance runs the rounds of its simulated time itself
        return "skipped: the sandbox clock is advancing"
    try:
        result = engine.patch_fleet()
    except ValueError as exc:  # the rules were changed at run time into something invalid
        log.error("Automatic patching skipped: %s", exc)
        return f"skipped: {exc}"
    if result.started or result.halted:
        log.info("Automatic patching: %s", result)
    return str(result)


@shared_task
def assess_fleet() -> int:
    """Beat: periodic assessment of the running VMs whose slot has come."""
    if sandbox.is_advancing():
        return 0
    try:
        return len(engine.assess_fleet().started)
    except ValueError as exc:
        log.error("Periodic assessment skipped: %s", exc)
        return 0


@shared_task
def record_compliance_snapshots() -> int:
    """Beat: today's compliance per subscription, for the overview's trend (re-recorded until the day ends)."""
    return fleet.record_compliance_snapshots()


@shared_task
def fold_rollups() -> bool:
    """Beat: move the fleet figures' deltas into their base tables (patching.rollup)."""
    return rollup.fold()


@shared_task(name=what_if.RUN_WHAT_IF_TASK, acks_late=True)
def run_what_if(run_id: int) -> None:
    """A what-if year (patching.what_if): one task per run; a second delivery finds it claimed."""
    what_if.execute_run(run_id)
