"""The sandbox: move the installation's clock, set faults, reset, and save or load the whole world.

- `advance(to=... | days=...)`: everything that would have happened meanwhile happens, in order, with
  the one engine (orchestrator.simulation.Simulation over the real database: releases from the
  catalog, periodic assessment, automatic patching in each VM's window, halts, registrations
  settling, stale runs failing). The first advance switches the installation into sandbox mode.
- `realtime()`: back to real time.
- `add_fault(...)` / `remove_fault(...)`: faults on demand (applied by patching.faults).
- `export_snapshot()` / `import_snapshot(data)`: the world as versioned JSON, loaded back exactly.
- `reset(demo=...)`: the demo fleet (seed_demo) or an empty one.

Who may do the installation-wide actions is `vms.access.can_manage_installation`; the pages, the API
and the commands check it (commands run as the machine's operator). Snapshots do not carry users,
passwords, API tokens or service principals: role assignments travel by user name and are restored
for the users that exist here.
"""

import io
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.duration import duration_string

from vms import access, clock, regions
from vms.models import (
    FeatureRegistration,
    ProviderRegistration,
    ResourceGroup,
    Role,
    RoleAssignment,
    SandboxClock,
    Subscription,
    VirtualMachine,
)

from . import catalog, rollup
from .maintenance.models import (
    ConfigurationAssignment,
    MaintenanceConfiguration,
    MaintenanceRun,
    RunMachine,
    WebhookDelivery,
    WebhookSubscription,
)
from .models import (
    ComplianceSnapshot,
    Fault,
    FaultKind,
    GuestState,
    InstalledUpdate,
    MissingUpdate,
    Operation,
    PatchResult,
    RolloutHalt,
    Update,
)
from .orchestrator import engine
from .orchestrator.simulation import Simulation

# An advance left unfinished (its process died) no longer blocks the next one after this long.
ADVANCE_LOCK_STALE = timedelta(hours=2)
# Periodic assessments run in batches at most this often while the clock advances.
ASSESSMENT_STEP = timedelta(hours=1)


class SandboxError(Exception):
    """A refused sandbox action; the message says why (nothing was changed)."""


class SandboxBusy(SandboxError):
    """Another advance is running."""


class SandboxForbidden(SandboxError):
    """The user may not do this."""


class SandboxNotFound(SandboxError):
    """No such VM, subscription or fault for this user."""


# --- The clock ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Advanced:
    start: datetime
    end: datetime
    switched: bool  # this advance put the installation into sandbox mode
    rounds: int
    operations: int
    seconds: float

    @property
    def days_per_second(self) -> float:
        return (self.end - self.start).total_seconds() / 86400 / max(self.seconds, 1e-6)

    def message(self) -> str:
        text = (
            f"Clock advanced from {self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC: "
            f"{self.rounds} round(s) of automatic patching, {self.operations} operation(s), in {self.seconds:.1f} s."
        )
        if self.switched:
            text = (
                "Sandbox mode is on: the clock is simulated and stands still until advanced "
                "(`manage.py sandbox realtime` switches back). " + text
            )
        return text


def parse_moment(value: str) -> datetime:
    """'2027-01-13T02:00' or '2027-01-13' (UTC unless an offset is given)."""
    try:
        moment = datetime.fromisoformat(value) if "T" in value or " " in value else None
        if moment is None:
            moment = datetime.combine(date.fromisoformat(value), datetime.min.time())
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise SandboxError(f"'{value}' is not a date and time: use YYYY-MM-DDTHH:MM (UTC).") from None


def target_of(*, to: datetime | None = None, days: float | None = None, start: datetime | None = None) -> datetime:
    """Where an advance would take the clock; SandboxError for a bad request (nothing changes)."""
    start = start or clock.now()
    if (to is None) == (days is None):
        raise SandboxError("Give either a number of days or a moment to advance to, not both or neither.")
    limit = settings.PORTAL_SANDBOX_MAX_ADVANCE
    if days is not None:
        if not days > 0:
            raise SandboxError(f"Advance by a positive number of days, not {days}.")
        if days > limit.days:
            raise SandboxError(
                f"An advance may cover at most {limit.days} days in one step (PORTAL_SANDBOX_MAX_ADVANCE_DAYS); "
                f"{days} days asked. Advance in several steps."
            )
        to = start + timedelta(days=days)
    if to <= start:
        raise SandboxError(
            f"The clock only moves forward: {to:%Y-%m-%d %H:%M} UTC is not after now, {start:%Y-%m-%d %H:%M} UTC."
        )
    if to - start > limit:
        raise SandboxError(
            f"An advance may cover at most {limit.days} days in one step (PORTAL_SANDBOX_MAX_ADVANCE_DAYS); "
            f"{(to - start).total_seconds() / 86400:.1f} days asked. Advance in several steps."
        )
    return to


def _take_lock() -> None:
    SandboxClock.objects.get_or_create(pk=1)
    real = timezone.now()
    taken = (
        SandboxClock.objects.filter(pk=1)
        .filter(Q(advancing_since=None) | Q(advancing_since__lt=real - ADVANCE_LOCK_STALE))
        .update(advancing_since=real)
    )
    if not taken:
        since = SandboxClock.objects.values_list("advancing_since", flat=True).get(pk=1)
        raise SandboxBusy(f"Another advance is running (since {since:%H:%M:%S} UTC); wait for it to finish.")


def _release_lock() -> None:
    SandboxClock.objects.filter(pk=1).update(advancing_since=None)


def is_advancing() -> bool:
    return SandboxClock.objects.filter(pk=1, advancing_since__gte=timezone.now() - ADVANCE_LOCK_STALE).exists()


def advance(*, to: datetime | None = None, days: float | None = None) -> Advanced:
    """Move the clock forward and run everything due meanwhile, in order (see the module's docstring).

    Refused (SandboxError, nothing changed): backwards or not moving, beyond
    PORTAL_SANDBOX_MAX_ADVANCE in one step, or while another advance runs. If the engine fails
    midway, the clock stays where the world got to.
    """
    target_of(to=to, days=days)  # validate before taking the lock
    _take_lock()
    try:
        switched = not clock.is_simulated()
        start = clock.now()
        end = target_of(to=to, days=days, start=start)
        catalog.ensure_catalog(until=(end + timedelta(days=31)).date())
        # Operations queued in sandbox mode that no worker ran yet run first, at the moment they were asked.
        queued = list(Operation.objects.in_flight().order_by("pk").values_list("pk", flat=True))
        engine.run_now(queued, start)
        world = Simulation(
            start,
            end,
            assessments=True,
            resume_after=None,
            assessment_step=ASSESSMENT_STEP,
            housekeeping=True,
            daily_compliance=True,
        )
        try:
            world.run()
        finally:
            _set_clock(world.reached or start)
            rollup.fold()  # a simulated month leaves many deltas; the pages read fewer after this
    finally:
        _release_lock()
    return Advanced(start, end, switched, world.rounds, world.operations + len(queued), world.seconds)


def _set_clock(moment: datetime | None) -> None:
    """Store the simulated time (None: real time); vms.clock's cache follows."""
    SandboxClock.objects.update_or_create(pk=1, defaults={"simulated_now": moment, "changed_at": timezone.now()})
    clock.stored()


def realtime() -> str:
    if is_advancing():
        raise SandboxBusy("An advance is running; switch to real time when it has finished.")
    was = clock.simulated_now()
    _set_clock(None)
    rollup.rebuild()  # the installation rollups' window follows the clock, which may have gone back
    if was is None:
        return "The clock was already real time."
    return f"Back to real time (the simulated clock stood at {was:%Y-%m-%d %H:%M} UTC)."


def status() -> dict:
    simulated = clock.simulated_now()
    return {
        "mode": "sandbox" if simulated else "realtime",
        "now": clock.now(),
        "advancing": is_advancing(),
        "maxAdvanceDays": settings.PORTAL_SANDBOX_MAX_ADVANCE.days,
        "faults": Fault.objects.active().count(),
    }


# --- Faults -------------------------------------------------------------------------------------------

MAX_NEXT = 1_000_000


def add_fault(
    user,
    kind: str,
    *,
    vm: VirtualMachine | None = None,
    subscription: Subscription | None = None,
    location: str = "",
    kb: str = "",
    probability: float | None = None,
    next_n: int | None = None,
) -> Fault:
    """Validate and store a fault (`validate_fault`); SandboxError with the reason."""
    fields = validate_fault(
        user, kind, vm=vm, subscription=subscription, location=location, kb=kb, probability=probability, next_n=next_n
    )
    return Fault.objects.create(
        **fields,
        created_at=clock.now(),
        created_by=user if user is not None and user.is_authenticated else None,
    )


def validate_fault(
    user,
    kind: str,
    *,
    vm: VirtualMachine | None = None,
    subscription: Subscription | None = None,
    location: str = "",
    kb: str = "",
    probability: float | None = None,
    next_n: int | None = None,
) -> dict:
    """A fault's fields, normalised, or SandboxError with the reason. `user` None: the machine's operator.

    A fault on one VM or subscription needs Contributor there (a VM or subscription the user cannot
    see is refused as not found); region-wide and fleet-wide faults are installation-wide actions.
    """
    if kind not in FaultKind.values:
        raise SandboxError(f"Unknown fault kind '{kind}': use one of {', '.join(FaultKind.values)}.")
    if (probability is None) == (next_n is None):
        raise SandboxError("Give either a probability (0 < p <= 1) or a number of next operations, not both.")
    if probability is not None and not 0 < probability <= 1:
        raise SandboxError(f"The probability must be above 0 and at most 1, not {probability}.")
    if next_n is not None and not 1 <= next_n <= MAX_NEXT:
        raise SandboxError(f"The number of next operations must be from 1 to {MAX_NEXT}, not {next_n}.")
    if location:
        location = regions.normalize_region(location) or ""
        if location not in regions.REGIONS:
            raise SandboxError("Unknown region: use a region name such as westeurope.")
    kb = kb.strip().upper().removeprefix("KB").strip()
    if kb and not (kb.isascii() and kb.isdigit() and 6 <= len(kb) <= 8):
        raise SandboxError(f"'{kb}' is not a KB number: 6 to 8 digits, e.g. 5073457.")
    if kb and kind != FaultKind.KB_FAILS:
        raise SandboxError("A KB goes only with the 'kb_fails' kind.")
    if kind == FaultKind.ROLLOUT_HALT and not location:
        raise SandboxError("A rollout halt is per region: give the region.")
    if vm is not None:
        subscription = None  # the VM is the scope
    if user is not None:
        scoped = vm.resource_group.subscription_id if vm is not None else subscription.pk if subscription else None
        allowed = access.can_act(user, scoped) if scoped else access.can_manage_installation(user)
        if not allowed:
            if scoped and access.role_on(user, scoped) is None:
                raise SandboxNotFound("No such virtual machine or subscription.")
            raise SandboxForbidden(
                "You may not set this fault: a VM or subscription needs Contributor there; a region or "
                "the whole fleet needs an installation manager (a superuser, or Owner of every subscription)."
            )
    return {
        "kind": kind,
        "vm": vm,
        "subscription": subscription,
        "location": location,
        "kb": kb,
        "probability": probability,
        "remaining": next_n,
    }


def faults_for(user):
    """The faults a user may see: theirs to scope, or all of them for an installation manager."""
    faults = Fault.objects.select_related("vm", "subscription").order_by("pk")
    if user is None or access.can_manage_installation(user):
        return faults
    visible = access.subscriptions_for(user).values("pk")
    return faults.filter(Q(subscription__in=visible) | Q(vm__resource_group__subscription__in=visible))


def remove_fault(user, pk: int) -> bool:
    """Delete a fault the user may see and act on; False if there is none."""
    fault = faults_for(user).filter(pk=pk).first()
    if fault is None:
        return False
    if user is not None and not access.can_manage_installation(user):
        scoped = fault.vm.resource_group.subscription_id if fault.vm_id else fault.subscription_id
        if not access.can_act(user, scoped):
            raise SandboxForbidden("You may not remove this fault: it needs Contributor on its subscription.")
    fault.delete()
    return True


# --- Snapshots ------------------------------------------------------------------------------------------

FORMAT = "hotpatch-portal-sandbox"
# 2: with the maintenance configurations (SCHEDULES); a version-1 snapshot loads with none.
SCHEMA_VERSION = 2
# Maintenance configurations, their assignments (dynamic scopes' filters too), runs with each VM's
# result, webhooks (with their signing secrets) and the delivery log.
SCHEDULES: list[type[models.Model]] = [
    MaintenanceConfiguration,
    ConfigurationAssignment,
    MaintenanceRun,
    RunMachine,
    WebhookSubscription,
    WebhookDelivery,
]
User = get_user_model()

# The world, in the order it is written (parents first) and deleted (children first). Users, passwords,
# API tokens and service principals are not part of it.
WORLD: list[type[models.Model]] = [
    Update,
    Subscription,
    ResourceGroup,
    VirtualMachine,
    FeatureRegistration,
    ProviderRegistration,
    GuestState,
    Operation,
    PatchResult,
    InstalledUpdate,
    MissingUpdate,
    ComplianceSnapshot,
    RolloutHalt,
    Fault,
    *SCHEDULES,
]
# Foreign keys to users are written as user names.
USER_FIELDS = {"user", "resumed_by", "created_by"}


def _label(model) -> str:
    return model._meta.label_lower


def _fields(model) -> list:
    return [f for f in model._meta.concrete_fields]


def _dump(value):
    if isinstance(value, timedelta):
        return duration_string(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def export_snapshot() -> dict:
    """The whole world as a JSON-able dict: stable order and spelling, so equal worlds export equal."""
    usernames = dict(User.objects.values_list("pk", "username"))
    tables = {}
    for model in WORLD:
        fields = _fields(model)
        names = [f.attname for f in fields]
        rows = []
        for values in model.objects.order_by("pk").values_list(*names):
            row = {}
            for f, value in zip(fields, values, strict=True):
                if f.name in USER_FIELDS and f.is_relation:
                    row[f.name] = usernames.get(value) if value is not None else None
                else:
                    row[f.attname] = _dump(value)
            rows.append(row)
        tables[_label(model)] = rows
    roles = [
        {"subscription": str(s), "user": u, "role": r}
        for s, u, r in RoleAssignment.objects.order_by("subscription_id", "user__username").values_list(
            "subscription_id", "user__username", "role"
        )
    ]
    simulated = clock.simulated_now()
    return {
        "format": FORMAT,
        "schemaVersion": SCHEMA_VERSION,
        "clock": {"mode": "sandbox" if simulated else "realtime", "now": _dump(simulated) if simulated else None},
        "roleAssignments": roles,
        "tables": tables,
    }


def dumps(snapshot: dict) -> str:
    return json.dumps(snapshot, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def loads(text: str | bytes) -> dict:
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SandboxError(f"Not a snapshot: the file is not JSON ({exc}).") from None
    except RecursionError:
        raise SandboxError("Not a snapshot: the JSON is nested too deeply.") from None
    return data


def _check(data) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SandboxError(f"Not a snapshot: 'format' must be '{FORMAT}'.")
    version = data.get("schemaVersion")
    if not isinstance(version, int) or isinstance(version, bool):
        raise SandboxError("Not a snapshot: 'schemaVersion' must be a number.")
    if version > SCHEMA_VERSION:
        raise SandboxError(
            f"This snapshot has schema version {version}, newer than this portal's ({SCHEMA_VERSION}): "
            "load it with a newer portal. Nothing was changed."
        )
    if version < 1:
        raise SandboxError(f"Unknown schema version {version}.")
    tables = data.get("tables")
    if not isinstance(tables, dict):
        raise SandboxError("Not a snapshot: 'tables' is missing.")
    if version < 2:  # from before maintenance configurations: the world had none
        for model in SCHEDULES:
            tables.setdefault(_label(model), [])
    for model in WORLD:
        rows = tables.get(_label(model))
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise SandboxError(f"Not a snapshot: table '{_label(model)}' must be a list of objects.")
    if not isinstance(data.get("roleAssignments", []), list):
        raise SandboxError("Not a snapshot: 'roleAssignments' must be a list.")
    state = data.get("clock")
    if not isinstance(state, dict) or state.get("mode") not in ("sandbox", "realtime"):
        raise SandboxError("Not a snapshot: 'clock' must say mode 'sandbox' or 'realtime'.")


def _is_choice(field, value) -> bool:
    return any(value == choice for choice, _ in field.flatchoices)


def _instances(model, rows: list[dict], users: dict[str, int]) -> list:
    fields = _fields(model)
    out = []
    for i, row in enumerate(rows):
        values = {}
        for f in fields:
            if f.name in USER_FIELDS and f.is_relation:
                name = row.get(f.name)
                if name is not None and not isinstance(name, str):
                    raise SandboxError(
                        f"Not a snapshot: {_label(model)} row {i + 1} field '{f.name}' must be a user name."
                    )
                values[f.attname] = users.get(name)
                continue
            if f.attname not in row:
                if f.primary_key or not (f.null or f.has_default()):
                    raise SandboxError(f"Not a snapshot: {_label(model)} row {i + 1} has no '{f.attname}'.")
                continue
            try:
                values[f.attname] = f.to_python(row[f.attname]) if row[f.attname] is not None else None
                if f.choices and values[f.attname] not in (None, "") and not _is_choice(f, values[f.attname]):
                    raise ValueError(f"'{values[f.attname]}' is not one of its choices")
            except Exception as exc:  # a ValidationError or a type error: the field's value is wrong
                raise SandboxError(
                    f"Not a snapshot: {_label(model)} row {i + 1} field '{f.attname}' is invalid ({exc})."
                ) from None
        out.append(model(**values))
    return out


def _wipe(*, catalog_too: bool = False) -> None:
    """Delete the world (children first); users, tokens and service principals stay."""
    GuestState.objects.update(last_assessment=None, last_installation=None)
    for model in reversed(WORLD):
        if model is not Update:
            model.objects.all().delete()
    if catalog_too:
        Update.objects.update(baseline=None)  # a self-reference that PROTECTs
        Update.objects.all().delete()


def import_snapshot(data: dict) -> dict:
    """Replace the world with the snapshot's, in one transaction: a bad snapshot changes nothing.

    Returns counts per table, and the role assignments skipped because their user is not here.
    """
    _check(data)
    if is_advancing():
        raise SandboxBusy("An advance is running; load the snapshot when it has finished.")
    users = dict(User.objects.values_list("username", "pk"))
    built = {model: _instances(model, data["tables"][_label(model)], users) for model in WORLD}
    skipped = []
    try:
        with transaction.atomic():
            _wipe(catalog_too=True)
            for model in WORLD:
                model.objects.bulk_create(built[model], batch_size=2000)
            roles = []
            for entry in data.get("roleAssignments", []):
                if not isinstance(entry, dict) or not isinstance(entry.get("user"), str):
                    raise SandboxError("Not a snapshot: each role assignment needs a user name.")
                if entry.get("role") not in Role.values or not isinstance(entry.get("subscription"), str):
                    raise SandboxError(
                        f"Not a snapshot: role assignment of '{entry['user']}': the role must be one of "
                        f"{', '.join(Role.values)}, on a subscription id."
                    )
                if entry["user"] not in users:
                    skipped.append(entry["user"])
                    continue
                roles.append(
                    RoleAssignment(
                        user_id=users[entry["user"]], subscription_id=entry["subscription"], role=entry["role"]
                    )
                )
            RoleAssignment.objects.bulk_create(roles)
            # Rows that point nowhere fail here, inside this block (not at some outer commit).
            connection.check_constraints()
            _reset_sequences()
            state = data["clock"]
            _set_clock(_parse_clock(state) if state["mode"] == "sandbox" else None)
            rollup.rebuild()  # a new world, and a clock that may have gone back
    except SandboxError:
        raise
    except Exception as exc:  # an integrity error: rows that do not fit together
        clock.forget()
        raise SandboxError(
            f"The snapshot's rows do not fit together ({type(exc).__name__}: {exc}). Nothing changed."
        ) from None
    return {"tables": {_label(m): len(built[m]) for m in WORLD}, "skippedRoleAssignments": skipped}


def _parse_clock(state: dict) -> datetime:
    try:
        return datetime.fromisoformat(state["now"]).astimezone(UTC)
    except (TypeError, ValueError, KeyError):
        raise SandboxError("Not a snapshot: 'clock.now' must be a date and time.") from None


def _reset_sequences() -> None:
    """After inserting rows with their ids, new rows must get ids above them (PostgreSQL)."""
    if connection.vendor != "postgresql":
        return  # SQLite's AUTOINCREMENT follows the largest id by itself
    from django.core.management.color import no_style

    with connection.cursor() as cursor:
        for statement in connection.ops.sequence_reset_sql(no_style(), WORLD):
            cursor.execute(statement)


def reset(*, demo: bool) -> str:
    """An empty world, or the demo fleet with its history up to the clock's now; the clock stays."""
    if is_advancing():
        raise SandboxBusy("An advance is running; reset when it has finished.")
    with transaction.atomic():  # all or nothing: a seeding that fails leaves the world as it was
        _wipe()
        if demo:
            call_command("seed_demo", stdout=io.StringIO())
        rollup.rebuild()
    if not demo:
        return "The fleet is empty: no subscriptions, VMs, operations or faults. The clock did not move."
    return f"The demo fleet is back: {VirtualMachine.objects.count()} VMs with their history up to {clock.now():%Y-%m-%d %H:%M} UTC."


def require_manager(user) -> None:
    """Installation-wide actions are for a superuser or the Owner of every subscription."""
    if not access.can_manage_installation(user):
        raise SandboxForbidden(
            "Only an installation manager may do this: a superuser, or the Owner of every subscription."
        )
