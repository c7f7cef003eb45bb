"""Fleet figures kept current by the database, so the fleet pages cost the same at any fleet size.

PostgreSQL only: statement-level AFTER triggers with transition tables on the tables the figures
come from (VMs, guest states, missing and installed updates, operations) compute each statement's net
change per rollup key and APPEND it to a delta table. Appending means no row is updated by two
recording transactions, so concurrent batches neither wait on each other nor deadlock. Readers sum the
base table and the deltas in one statement (one snapshot: exact). `fold` (a beat task every few
seconds) moves the deltas into the base; `rebuild` recomputes everything from scratch (after a
sandbox import or reset, or a set-based seeding that bypasses nothing but is large).

Every trigger reads the other tables as they are after its statement, so a statement's delta is
exactly f(after) - f(before) of the aggregate f over "VMs left-joined to their guest": a VM without a
guest counts as a machine with no data, under hotpatch status "".

On SQLite (the embedded demo) there are no triggers; patching.fleet aggregates directly.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from django.db import connection, transaction

from vms import clock
from vms.vocabulary import PatchMode

from . import fleet
from .fleet import INSTALLATION_DAYS, UPDATE_STATUS, UPDATE_STATUS_SQL
from .models import (
    CoarseFleetRollup,
    CoarseFleetRollupDelta,
    FleetRollup,
    FleetRollupDelta,
    HotpatchStatus,
    InstallRollup,
    InstallRollupDelta,
    ScopedInstallRollup,
    ScopedInstallRollupDelta,
    Update,
    UpdateRollup,
    UpdateRollupDelta,
)
from .vocabulary import Classification

# The installation rollups keep this much history: the 30 local days shown, and a margin for time zones.
KEEP = timedelta(days=INSTALLATION_DAYS + 2)
FOLD_LOCK = 7_130_013  # pg advisory lock key of the fold and the rebuild

VM = "vms_virtualmachine"
RG = "vms_resourcegroup"
GUEST = "patching_gueststate"
VM_SCOPE = "r.subscription_id, lower(r.name), v.location, v.product, v.patch_mode"
COARSE_SCOPE = "r.subscription_id, v.location, v.product, v.patch_mode"  # VM_SCOPE without the resource group
SINCE = "coalesce((SELECT since FROM patching_rollupwindow ORDER BY id LIMIT 1), '-infinity'::timestamptz)"


@dataclass(frozen=True)
class Spec:
    base: type
    delta: type
    keys: tuple[str, ...]
    measures: tuple[str, ...]

    @property
    def columns(self) -> str:
        return ", ".join(self.keys + self.measures)


def _measures(model) -> tuple[str, ...]:
    keys = set(model.KEYS)
    return tuple(f.column for f in model._meta.concrete_fields if f.column != "id" and f.column not in keys)


def _spec(base, delta) -> Spec:
    keys = tuple(base._meta.get_field(k).column for k in base.KEYS)
    return Spec(base, delta, keys, _measures(base))


FLEET = _spec(FleetRollup, FleetRollupDelta)
COARSE_FLEET = _spec(CoarseFleetRollup, CoarseFleetRollupDelta)
UPDATES = _spec(UpdateRollup, UpdateRollupDelta)
INSTALLS = _spec(InstallRollup, InstallRollupDelta)
SCOPED_INSTALLS = _spec(ScopedInstallRollup, ScopedInstallRollupDelta)
SPECS = (FLEET, COARSE_FLEET, UPDATES, INSTALLS, SCOPED_INSTALLS)


# --- What each source row contributes (SELECTs of keys then measures, times a sign) -------------


def _fleet_cols(s: str, scope: str = VM_SCOPE) -> str:
    missing = ", ".join(f"{s} * coalesce((g.missing_by_classification ? '{c.value}')::int, 0)" for c in Classification)
    return (
        f"{scope}, coalesce(g.hotpatch_status, ''), {UPDATE_STATUS_SQL}, coalesce(g.counted_year, 0), "
        f"{s}, {missing}, {s} * coalesce(g.installs_without_reboot, 0), {s} * coalesce(g.reboots_avoided, 0)"
    )


VM_JOIN = f"JOIN {RG} r ON r.id = v.resource_group_id"
FLEET_SCOPES = ((FLEET, VM_SCOPE), (COARSE_FLEET, COARSE_SCOPE))
INSTALL_KEY = "date_trunc('hour', o.created_at, 'UTC'), o.status, o.subscription_id"
INSTALL_MEASURES = "{s}, {s} * o.installed_count, {s} * o.failed_count"
SCOPED_INSTALL_KEY = (
    f"{INSTALL_KEY}, lower(r.name), v.location, v.product, v.patch_mode, coalesce(g.hotpatch_status, ''), "
    f"{UPDATE_STATUS_SQL}"
)
# A VM's installations the rollups keep (index: patching_operation (vm_id, created_at)).
RECENT_INSTALLS = f"JOIN patching_operation o ON o.vm_id = v.id AND o.kind = 'installation' AND o.created_at >= {SINCE}"


def _fragments(table: str, src: str, s: str, *, updated: bool = False) -> dict[Spec, list[str]]:
    """Per rollup, the SELECTs giving what the rows of `src` (rows of `table`) contribute, times s.
    `updated`: the rows are one side of an UPDATE (see the guest's)."""
    m = INSTALL_MEASURES.format(s=s)
    if table == VM:
        return {
            **{
                spec: [f"SELECT {_fleet_cols(s, scope)} FROM {src} v {VM_JOIN} LEFT JOIN {GUEST} g ON g.vm_id = v.id"]
                for spec, scope in FLEET_SCOPES
            },
            UPDATES: [
                f"SELECT mu.update_id, {VM_SCOPE}, {s}, {s} * mu.failed::int, 0 FROM {src} v {VM_JOIN} "
                f"JOIN patching_missingupdate mu ON mu.guest_id = v.id",
                f"SELECT iu.update_id, {VM_SCOPE}, 0, 0, {s} FROM {src} v {VM_JOIN} "
                f"JOIN patching_installedupdate iu ON iu.guest_id = v.id",
            ],
            SCOPED_INSTALLS: [
                f"SELECT {SCOPED_INSTALL_KEY}, {m} FROM {src} v {VM_JOIN} {RECENT_INSTALLS} "
                f"LEFT JOIN {GUEST} g ON g.vm_id = v.id"
            ],
        }
    if table == GUEST:
        # An inserted (deleted) guest row replaces (is replaced by) "no guest" for its VM. An updated
        # one had a guest before and has one after: those two terms cancel, and are left out.
        absent = not updated
        return {
            **{
                spec: [
                    f"SELECT {_fleet_cols(s, scope)} FROM {src} g JOIN {VM} v ON v.id = g.vm_id {VM_JOIN}",
                    *[
                        f"SELECT {_fleet_cols(f'-{s}', scope)} FROM {src} t JOIN {VM} v ON v.id = t.vm_id {VM_JOIN} "
                        f"LEFT JOIN {GUEST} g ON false"
                    ][:absent],
                ]
                for spec, scope in FLEET_SCOPES
            },
            # The VM's recent installations move with its hotpatch and update status.
            SCOPED_INSTALLS: [
                f"SELECT {SCOPED_INSTALL_KEY}, {m} FROM {src} g JOIN {VM} v ON v.id = g.vm_id {VM_JOIN} {RECENT_INSTALLS}",
                *[
                    f"SELECT {SCOPED_INSTALL_KEY}, {INSTALL_MEASURES.format(s=f'-{s}')} FROM {src} t "
                    f"JOIN {VM} v ON v.id = t.vm_id {VM_JOIN} {RECENT_INSTALLS} LEFT JOIN {GUEST} g ON false"
                ][:absent],
            ],
        }
    if table == "patching_missingupdate":
        return {
            UPDATES: [
                f"SELECT mu.update_id, {VM_SCOPE}, {s}, {s} * mu.failed::int, 0 FROM {src} mu "
                f"JOIN {VM} v ON v.id = mu.guest_id {VM_JOIN}"
            ]
        }
    if table == "patching_installedupdate":
        return {
            UPDATES: [
                f"SELECT iu.update_id, {VM_SCOPE}, 0, 0, {s} FROM {src} iu JOIN {VM} v ON v.id = iu.guest_id {VM_JOIN}"
            ]
        }
    if table == "patching_operation":
        return {
            INSTALLS: [f"SELECT {INSTALL_KEY}, {m} FROM {src} o WHERE o.kind = 'installation' AND o.vm_id IS NOT NULL"],
            SCOPED_INSTALLS: [
                f"SELECT {SCOPED_INSTALL_KEY}, {m} FROM {src} o JOIN {VM} v ON v.id = o.vm_id {VM_JOIN} "
                f"LEFT JOIN {GUEST} g ON g.vm_id = v.id WHERE o.kind = 'installation'"
            ],
        }
    raise ValueError(table)


# The source tables: primary key, and the columns the rollups read (an UPDATE that changes none of
# them, such as a heartbeat or a power state, costs a join of its transition tables and nothing more).
SOURCES = {
    VM: ("id", ("resource_group_id", "location", "product", "patch_mode")),
    GUEST: (
        "vm_id",
        (
            "hotpatch_status",
            "reboot_pending",
            "assessed_at",
            "critical_security_count",
            "other_count",
            "missing_by_classification",
            "counted_year",
            "installs_without_reboot",
            "reboots_avoided",
        ),
    ),  # fmt: skip
    "patching_missingupdate": ("id", ("guest_id", "update_id", "failed")),
    "patching_installedupdate": ("id", ("guest_id", "update_id")),
    "patching_operation": (
        "id",
        ("kind", "status", "created_at", "vm_id", "subscription_id", "installed_count", "failed_count"),
    ),
}


# Of these, the rollups read only whether it is NULL (UPDATE_STATUS_SQL: a guest never assessed has
# no data): a re-assessment that changes no figure, most of a daily round, moves no rollup and its
# rows are not joined to their VMs.
NULLNESS_ONLY = {"assessed_at"}


def _watched(row: str, column: str) -> str:
    return f"({row}.{column} IS NULL)" if column in NULLNESS_ONLY else f"{row}.{column}"


def _grouped_insert(spec: Spec, selects: list[str], into: str) -> str:
    names = [f"k{n}" for n in range(len(spec.keys))] + [f"m{n}" for n in range(len(spec.measures))]
    keys, measures = names[: len(spec.keys)], names[len(spec.keys) :]
    union = " UNION ALL ".join(selects)
    return (
        f"INSERT INTO {into} ({spec.columns}) SELECT {', '.join(keys)}, "
        f"{', '.join(f'sum({m})' for m in measures)} FROM ({union}) x({', '.join(names)}) "
        f"GROUP BY {', '.join(keys)} HAVING {' OR '.join(f'sum({m}) <> 0' for m in measures)}"
    )


def _together(inserts: list[str], ctes: tuple[str, ...] = ()) -> str:
    """The rollups' INSERTs as one statement (data-modifying CTEs): a statement's transition tables
    are read, and its changed rows found, once for all of them."""
    parts = [*ctes, *(f"d{n} AS ({insert})" for n, insert in enumerate(inserts[:-1]))]
    return (f"WITH {', '.join(parts)} " if parts else "") + inserts[-1]


# The rows of a source table that any rollup reads (the fragments' own filter); absent: all.
RELEVANT = {"patching_operation": "kind = 'installation'"}


def _guards(table: str) -> dict[str, str]:
    """Per statement kind, whether its rows change a rollup: an inserted or deleted row the rollups
    read, or an updated one whose watched columns differ (old and new rows, each side EXCEPT the
    other: a hashed set operation, where a join could be planned as a nested loop)."""
    pk, watched = SOURCES[table]
    where = f" WHERE {RELEVANT[table]}" if table in RELEVANT else ""
    old = f"SELECT o.{pk}, {', '.join(_watched('o', c) for c in watched)} FROM old_rows o{where}"
    new = f"SELECT n.{pk}, {', '.join(_watched('n', c) for c in watched)} FROM new_rows n{where}"
    return {
        "INSERT": f"EXISTS (SELECT FROM new_rows{where})",
        "UPDATE": f"EXISTS (({new} EXCEPT {old}) UNION ALL ({old} EXCEPT {new}))",
        "DELETE": f"EXISTS (SELECT FROM old_rows{where})",
    }


def _trigger_function(table: str) -> str:
    pk, watched = SOURCES[table]
    old, new = ", ".join(_watched("o", c) for c in watched), ", ".join(_watched("n", c) for c in watched)
    changed = (
        f"old_c AS (SELECT o.* FROM old_rows o JOIN new_rows n ON n.{pk} = o.{pk} "
        f"WHERE ({old}) IS DISTINCT FROM ({new}))",
        f"new_c AS (SELECT n.* FROM old_rows o JOIN new_rows n ON n.{pk} = o.{pk} "
        f"WHERE ({old}) IS DISTINCT FROM ({new}))",
    )
    inserted, deleted = _fragments(table, "new_rows", "1"), _fragments(table, "old_rows", "(-1)")
    updated_old = _fragments(table, "old_c", "(-1)", updated=True)
    updated_new = _fragments(table, "new_c", "1", updated=True)
    into = {spec: spec.delta._meta.db_table for spec in inserted}
    branches = {
        "INSERT": [_together([_grouped_insert(spec, inserted[spec], into[spec]) for spec in inserted])],
        "UPDATE": [
            _together(
                [_grouped_insert(spec, updated_old[spec] + updated_new[spec], into[spec]) for spec in inserted],
                changed,
            )
        ],
        "DELETE": [_together([_grouped_insert(spec, deleted[spec], into[spec]) for spec in inserted])],
    }
    # EXECUTE: planned on each call, for the transition tables' actual size. A static statement is
    # planned once per connection, for its first call's size: after a one-row (or empty) first
    # statement, every batch of hundreds would join old to new rows by nested loop (quadratic).
    # Planning them is most of a small batch's trigger time, so each runs only when its statement
    # changed something the rollups read (a guard without a join: linear at any size, and exact).
    guards = _guards(table)
    body = "".join(
        f"{'IF' if n == 0 else 'ELSIF'} TG_OP = '{op}' THEN\n    IF {guards[op]} THEN\n      "
        + ";\n      ".join(f"EXECUTE $rollup${statement}$rollup$" for statement in statements)
        + ";\n    END IF;\n  "
        for n, (op, statements) in enumerate(branches.items())
    )
    return (
        # No JIT: the planner cannot estimate transition tables, guesses thousands of rows, and would
        # spend a second compiling each statement that then aggregates a batch's few hundred rows.
        f"CREATE OR REPLACE FUNCTION {table}_rollup() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $$\n"
        # Every recording transaction takes the first delta table's lock first, whichever it writes:
        # rebuild's LOCK TABLE (same order) then waits for them all without holding any other.
        f"BEGIN\n  LOCK TABLE {FLEET.delta._meta.db_table} IN ROW EXCLUSIVE MODE;\n  {body}END IF;\n"
        "  RETURN NULL;\nEND $$;\n"
    )


def install_sql() -> list[str]:
    """The functions and triggers (idempotent: CREATE OR REPLACE, DROP IF EXISTS)."""
    statements = []
    for table in SOURCES:
        statements.append(_trigger_function(table))
        for op, refs in (
            ("INSERT", "NEW TABLE AS new_rows"),
            ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
            ("DELETE", "OLD TABLE AS old_rows"),
        ):
            name = f"{table}_rollup_{op.lower()}"
            statements.append(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            statements.append(
                f"CREATE TRIGGER {name} AFTER {op} ON {table} REFERENCING {refs} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_rollup()"
            )
    return statements


def uninstall_sql() -> list[str]:
    statements = []
    for table in SOURCES:
        for op in ("insert", "update", "delete"):
            statements.append(f"DROP TRIGGER IF EXISTS {table}_rollup_{op} ON {table}")
        statements.append(f"DROP FUNCTION IF EXISTS {table}_rollup()")
    return statements


def enabled() -> bool:
    return connection.vendor == "postgresql"


def install(db=connection) -> None:
    with db.cursor() as cursor:
        for statement in install_sql():
            cursor.execute(statement)


def reinstall_functions(apps, schema_editor) -> None:
    """A migration's RunPython when the trigger functions change: install them again as written here."""
    if schema_editor.connection.vendor == "postgresql":
        install(schema_editor.connection)


# --- Fold and rebuild ----------------------------------------------------------------------------


def _set_window(cursor, since: datetime, *, forward_only: bool) -> None:
    cursor.execute("SELECT id, since FROM patching_rollupwindow ORDER BY id LIMIT 1")
    row = cursor.fetchone()
    if row is None:
        cursor.execute("INSERT INTO patching_rollupwindow (since) VALUES (%s)", [since])
    elif not forward_only or since > row[1]:
        cursor.execute("UPDATE patching_rollupwindow SET since = %s WHERE id = %s", [since, row[0]])


def fold(now: datetime | None = None) -> bool:
    """Move the committed deltas into the base tables (and drop installation hours older than KEEP).
    Skipped (False) while another fold or a rebuild runs. Readers see the same sums before and after."""
    if not enabled():
        return False
    since = (now or clock.now()) - KEEP
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [FOLD_LOCK])
        if not cursor.fetchone()[0]:
            return False
        for spec in SPECS:
            base, delta = spec.base._meta.db_table, spec.delta._meta.db_table
            keys, measures = ", ".join(spec.keys), spec.measures
            cursor.execute(
                f"WITH moved AS (DELETE FROM {delta} RETURNING {spec.columns}) "
                f"INSERT INTO {base} ({spec.columns}) SELECT {keys}, "
                f"{', '.join(f'sum({m})' for m in measures)} FROM moved GROUP BY {keys} "
                f"ON CONFLICT ({keys}) DO UPDATE SET " + ", ".join(f"{m} = {base}.{m} + EXCLUDED.{m}" for m in measures)
            )
            if spec in (INSTALLS, SCOPED_INSTALLS):
                cursor.execute(f"DELETE FROM {base} WHERE hour < %s", [since])
            else:
                cursor.execute(f"DELETE FROM {base} WHERE " + " AND ".join(f"{m} = 0" for m in measures))
        _set_window(cursor, since, forward_only=True)
    return True


def rebuild(now: datetime | None = None) -> None:
    """Recompute every rollup from the source tables. Recording waits for it (its triggers need the
    delta tables, locked here), so no change is lost or counted twice."""
    if not enabled():
        return
    since = (now or clock.now()) - KEEP
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [FOLD_LOCK])
        deltas = ", ".join(spec.delta._meta.db_table for spec in SPECS)
        cursor.execute(f"LOCK TABLE {deltas} IN EXCLUSIVE MODE")
        _set_window(cursor, since, forward_only=False)
        for spec in SPECS:
            cursor.execute(f"DELETE FROM {spec.delta._meta.db_table}")
            cursor.execute(f"DELETE FROM {spec.base._meta.db_table}")
        for spec, selects in _fragments(VM, VM, "1").items():
            cursor.execute(_grouped_insert(spec, selects, spec.base._meta.db_table))
        (selects,) = _fragments("patching_operation", "patching_operation", "1")[INSTALLS]
        cursor.execute(
            _grouped_insert(INSTALLS, [f"{selects} AND o.created_at >= {SINCE}"], INSTALLS.base._meta.db_table)
        )


# --- Reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Which machines a figure counts: the subscriptions the viewer sees (None: all) and the fleet
    filters chosen (None: any)."""

    visible: tuple | None = None
    subscription: str | None = None
    resource_group: str | None = None
    location: str | None = None
    product: str | None = None
    patch_mode: str | None = None
    hotpatch: str | None = None
    update_status: str | None = None

    @property
    def by_subscription_only(self) -> bool:
        return not any((self.resource_group, self.location, self.product, self.patch_mode, self.hotpatch,
                        self.update_status))  # fmt: skip

    @property
    def by_vm_scope_only(self) -> bool:
        """No hotpatch or update status filter (the per-update rollup does not key them)."""
        return not (self.hotpatch or self.update_status)

    def where(self, columns: tuple[str, ...]) -> tuple[str, list]:
        clauses, params = ["true"], []
        if self.visible is not None:
            clauses.append("subscription_id = ANY(%s::uuid[])")
            params.append([str(s) for s in self.visible])
        for column, value in (
            ("subscription_id", self.subscription),
            ("resource_group", self.resource_group and self.resource_group.lower()),
            ("location", self.location),
            ("product", self.product),
            ("patch_mode", self.patch_mode),
            ("hotpatch_status", self.hotpatch),
            ("update_status", self.update_status),
        ):
            if value is not None:
                if column not in columns:
                    raise ValueError(f"{column} is not a key of this rollup")
                clauses.append(f"{column} = %s")
                params.append(str(value))
        return " AND ".join(clauses), params


def _summed(spec: Spec, scope: Scope, extra: str = "", extra_params=()) -> tuple[str, list]:
    """base UNION ALL delta, in scope: one snapshot, so the sum is exact."""
    where, params = scope.where(spec.keys)
    where += extra
    sql = (
        f"(SELECT {spec.columns} FROM {spec.base._meta.db_table} WHERE {where} "
        f"UNION ALL SELECT {spec.columns} FROM {spec.delta._meta.db_table} WHERE {where}) x"
    )
    return sql, [*params, *extra_params, *params, *extra_params]


def _fleet_spec(scope: Scope) -> Spec:
    """The coarse fleet rollup unless the scope names a resource group."""
    return COARSE_FLEET if scope.resource_group is None else FLEET


def _read_fleet(scope: Scope, aggregates: dict[str, str], params: list) -> dict:
    """One row of named aggregates (SQL over FLEET's columns but the resource group) in scope."""
    source, scope_params = _summed(_fleet_spec(scope), scope)
    names = list(aggregates)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(aggregates[n] for n in names)} FROM {source}", [*params, *scope_params])
        return dict(zip(names, cursor.fetchone(), strict=True))


def _read_installs(scope: Scope, since: datetime, zone_name: str) -> dict[tuple, dict]:
    """(local day, status) -> {runs, installed, failed} for installations created since `since`."""
    spec = INSTALLS if scope.by_subscription_only else SCOPED_INSTALLS
    source, params = _summed(spec, scope, " AND hour >= %s", [since])
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (hour AT TIME ZONE %s)::date, status, sum(runs), sum(installed), sum(failed) FROM {source} "
            "GROUP BY 1, 2 HAVING sum(runs) <> 0",
            [zone_name, *params],
        )
        return {
            (day, status): {"runs": int(r), "installed": int(i), "failed": int(f)}
            for day, status, r, i, f in cursor.fetchall()
        }


def _read_updates(scope: Scope, update_id: int | None = None, by_subscription: bool = False) -> list[tuple]:
    """(update_id or subscription_id, missing, failed, installed) with missing > 0, in scope."""
    extra, extra_params = (" AND update_id = %s", [update_id]) if update_id is not None else ("", [])
    source, params = _summed(UPDATES, scope, extra, extra_params)
    group = "subscription_id" if by_subscription else "update_id"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {group}, sum(missing), sum(failed), sum(installed) FROM {source} "
            f"GROUP BY {group} HAVING sum(missing) > 0",
            params,
        )
        return cursor.fetchall()


# --- The figures: from the rollups, or (SQLite, a name search) aggregated directly by patching.fleet --


def _readable(scope: Scope | None) -> bool:
    return scope is not None and enabled()


def fleet_counts(vms, scope: Scope | None, now: datetime, *, guest: bool = False) -> dict:
    """patching.fleet.fleet_counts' figures for the machines of `vms`, which `scope` describes: one query."""
    if not _readable(scope):
        return fleet.fleet_counts(vms, now, guest=guest)
    machines = "coalesce(sum(machines) FILTER (WHERE {}), 0)"
    aggregates = {
        "total": "coalesce(sum(machines), 0)",
        **{f"status_{key}": machines.format(f"update_status = '{key}'") for key in UPDATE_STATUS},
        **{f"mode_{mode}": machines.format(f"patch_mode = '{mode}'") for mode in PatchMode.values},
        "hotpatch_enabled": machines.format(f"hotpatch_status = '{HotpatchStatus.ENABLED.value}'"),
        "hotpatch_action": machines.format(f"hotpatch_status = '{HotpatchStatus.ACTION_REQUIRED.value}'"),
    }
    params = []
    if guest:
        aggregates.update(
            {f"missing_{c.value}": f"coalesce(sum(missing_{c.value.lower()}), 0)" for c in Classification}
        )
        aggregates["without_reboot"] = "coalesce(sum(installs_without_reboot) FILTER (WHERE counted_year = %s), 0)"
        aggregates["reboots_avoided"] = "coalesce(sum(reboots_avoided) FILTER (WHERE counted_year = %s), 0)"
        params = [now.year, now.year]
    return {key: int(value) for key, value in _read_fleet(scope, aggregates, params).items()}


def locations(visible: tuple | None) -> list[str]:
    """The locations with machines in the visible subscriptions (None: all), from the coarse rollup."""
    source, params = _summed(COARSE_FLEET, Scope(visible=visible))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT location FROM {source} GROUP BY location HAVING sum(machines) > 0", params)
        return sorted(location for (location,) in cursor.fetchall())


def installation_counts(operations, scope: Scope | None, now: datetime, zone: tzinfo) -> dict[tuple, dict]:
    """patching.fleet.installation_counts for the installations of `operations`, which `scope`
    describes: from the rollups (unless the zone has no IANA name)."""
    if _readable(scope) and getattr(zone, "key", None):
        return _read_installs(scope, fleet.installations_since(now, zone), zone.key)
    return fleet.installation_counts(operations, now, zone)


def updates_missing_or_failed(vms, scope: Scope | None) -> list:
    """patching.fleet.updates_missing_or_failed: two queries from the rollups (which do not key hotpatch
    or update status: the by-update view's scope has neither)."""
    if not (_readable(scope) and scope.by_vm_scope_only):
        return fleet.updates_missing_or_failed(vms)
    counts = {pk: (missing, failed, installed) for pk, missing, failed, installed in _read_updates(scope)}
    return [
        fleet.UpdateRow(update, int(counts[update.pk][0]), int(counts[update.pk][2]), int(counts[update.pk][1]))
        for update in Update.objects.filter(pk__in=list(counts))
    ]


def missing_per_subscription(machines, update, scope: Scope | None) -> dict:
    """patching.fleet.missing_per_subscription of machines_missing(vms, update): one query."""
    if not (_readable(scope) and scope.by_vm_scope_only):
        return fleet.missing_per_subscription(machines)
    return {sub: int(n) for sub, n, _, _ in _read_updates(scope, update.pk, by_subscription=True)}
