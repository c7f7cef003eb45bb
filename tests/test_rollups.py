"""The fleet figures' rollups (patching.rollup): after every kind of write the portal does, the figures
the pages read from the rollups equal the direct aggregation over VMs, guests and operations, for
several scopes and viewers; and two recording transactions at once neither wait on each other nor
lose a change. Real PostgreSQL (the triggers are PostgreSQL's)."""

import json
import threading
import uuid
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from patching import fleet, rollup, sandbox, services
from patching.models import (
    CoarseFleetRollup,
    CoarseFleetRollupDelta,
    FleetRollup,
    FleetRollupDelta,
    GuestState,
    InstalledUpdate,
    MissingUpdate,
    OperationKind,
    OperationStatus,
)
from portal.web.views.fleet import fleet_for, fleet_operations, rollup_scope
from tests.browser.data import make_fleet, make_user, run_now
from tests.factories import make_resource_group, make_subscription, make_vm
from vms import access, clock, fleet_import, fleetfile
from vms.models import VirtualMachine

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog")]

SCOPES = [
    {},
    {"resource_group": "RG-WEB"},
    {"resource_group": "rg-sql", "update_status": "available"},
    {"location": "northeurope"},
    {"orchestration": "Manual"},
    {"orchestration": "AutomaticByPlatform", "hotpatch": "Enabled"},
    {"update_status": "available"},
    {"update_status": "nodata"},
    {"os": "ws2025-azure"},
]


def figures_both_ways(user, params: dict) -> tuple[dict, dict]:
    """What the pages read for this viewer and filters: from the rollups, and aggregated directly."""
    request = RequestFactory().get("/", params)
    request.user = user
    found = fleet_for(request)
    scope = rollup_scope(user, found)
    assert scope is not None
    now, zone = clock.now(), timezone.get_current_timezone()
    operations = fleet_operations(user, found)

    # The tiles read the coarse rollup unless a resource group is chosen (its key is only in the fine
    # one). The groups asked for exist until the sandbox is reset (an unknown group is dropped).
    assert bool(scope.resource_group) == ("resource_group" in params and access.vms_for(user).exists())
    read_from = FleetRollup if scope.resource_group else CoarseFleetRollup
    with CaptureQueriesContext(connection) as queries:
        counts = rollup.fleet_counts(found.vms, scope, now, guest=True)
    (sql,) = [q["sql"] for q in queries.captured_queries]
    assert f"FROM {read_from._meta.db_table} WHERE" in sql, (params, sql)

    def read(scope) -> dict:
        updates = rollup.updates_missing_or_failed(found.vms, scope)
        return {
            "counts": counts if scope else rollup.fleet_counts(found.vms, scope, now, guest=True),
            "installs": rollup.installation_counts(operations, scope, now, zone),
            "updates": sorted((row.update.pk, row.missing, row.installed, row.failed) for row in updates),
            "per_subscription": {
                row.update.pk: {
                    str(k): v
                    for k, v in rollup.missing_per_subscription(
                        fleet.machines_missing(found.vms, row.update), row.update, scope
                    ).items()
                }
                for row in updates
            },
        }

    return read(scope), read(None)


def assert_rollups_right(users, *, fold_too: bool = True) -> None:
    """For every viewer and scope: rollups == direct, before the fold, after it, and after a rebuild."""
    steps = [lambda: None]
    if fold_too:
        steps += [rollup.fold, rollup.rebuild]
    for step in steps:
        step()
        assert coarse_rows() == coarse_rows(rollup.FLEET)
        for user in users:
            for params in SCOPES:
                from_rollups, direct = figures_both_ways(user, params)
                assert from_rollups == direct, (user.username, params, step)


def coarse_rows(spec: rollup.Spec = rollup.COARSE_FLEET) -> dict:
    """The spec's base + deltas summed per key of the coarse rollup (the fine one: over its groups)."""
    keys, measures = rollup.COARSE_FLEET.keys, rollup.COARSE_FLEET.measures
    columns = ", ".join(keys + measures)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(keys)}, {', '.join(f'sum({m})' for m in measures)} FROM "
            f"(SELECT {columns} FROM {spec.base._meta.db_table} UNION ALL SELECT {columns} "
            f"FROM {spec.delta._meta.db_table}) x GROUP BY {', '.join(keys)}"
        )
        rows = {row[: len(keys)]: row[len(keys) :] for row in cursor.fetchall()}
    return {key: values for key, values in rows.items() if any(values)}


@pytest.fixture
def world(no_random_failures):
    """Two subscriptions; Olivia sees only the first; Root sees both."""
    olivia, root = make_user("olivia"), make_user("root", superuser=True)
    contoso = make_subscription("Contoso", user=olivia, role="Contributor")
    fabrikam = make_subscription("Fabrikam")
    web = make_resource_group(contoso, "rg-web", "westeurope")
    sql = make_resource_group(contoso, "rg-sql", "northeurope")
    other = make_resource_group(fabrikam, "rg-web", "westeurope")  # same name, other subscription
    make_fleet(8, web, prefix="web")
    make_fleet(6, other, prefix="fab")
    behind = [make_vm(resource_group=sql, name=f"sql-{n}", behind_by_months=2) for n in range(3)]
    behind.append(make_vm(resource_group=web, name="new-25", product="ws2025-azure", behind_by_months=1))
    return {"users": [olivia, root], "behind": behind, "groups": (web, sql, other)}


def test_the_rollups_equal_the_direct_figures_through_a_fleets_life(world, settings):
    users, behind = world["users"], world["behind"]
    web, sql, _ = world["groups"]
    assert_rollups_right(users)

    # Assessments find missing updates; installations succeed, fail, and install some.
    for vm in behind:
        run_now(vm, OperationKind.ASSESSMENT)
    assert MissingUpdate.objects.exists()
    run_now(behind[0], OperationKind.INSTALLATION, minutes_ago=8)
    settings.PORTAL_PATCH_FAILURE_RATE = 1.0
    run_now(behind[1], OperationKind.INSTALLATION, minutes_ago=8)
    settings.PORTAL_PATCH_FAILURE_RATE = 0.0
    assert InstalledUpdate.objects.exists() and MissingUpdate.objects.filter(failed=True).exists()
    assert_rollups_right(users, fold_too=False)

    # Patch orchestration changed one VM at a time, and set-based; a VM moves region.
    vm = VirtualMachine.objects.filter(resource_group=sql).first()
    vm.patch_mode, vm.enable_hotpatching = "Manual", False
    vm.save()
    VirtualMachine.objects.filter(resource_group=web, enable_hotpatching=False).update(patch_mode="Manual")
    VirtualMachine.objects.filter(pk=behind[2].pk).update(location="swedencentral")
    # A VM whose guest is gone (deleted by hand) counts as not assessed.
    GuestState.objects.filter(pk=VirtualMachine.objects.filter(resource_group=web).last().pk).delete()
    assert_rollups_right(users)

    # VMs created and deleted; a fleet imported.
    created = make_vm(resource_group=sql, name="late-1", behind_by_months=1)
    run_now(created, OperationKind.ASSESSMENT)
    assert services.delete_virtual_machine(behind[0])
    doc = fleetfile.entry(str(web.subscription_id), "rg-imported", "imp-01", "westeurope", zone="1")
    plan = fleet_import.plan(fleet_import.parse(json.dumps([doc]).encode()), users[1])
    assert services.import_fleet(plan, users[1])
    # Old history pruned (everything finished is older than a day from now + retention).
    later = clock.now() + timedelta(days=settings.PORTAL_HISTORY_RETENTION_DAYS, hours=1)
    assert services.prune_history(now=later) > 0
    assert_rollups_right(users, fold_too=False)

    # The sandbox: a snapshot round trip (bulk deletes and inserts), then an empty world.
    sandbox.import_snapshot(json.loads(json.dumps(sandbox.export_snapshot(), default=str)))
    assert_rollups_right(users)
    sandbox.reset(demo=False)
    assert rollup.fleet_counts(VirtualMachine.objects.all(), rollup.Scope(), clock.now())["total"] == 0
    assert_rollups_right(users)


def test_the_fleet_list_and_overview_read_the_rollups_not_the_vms(client, world):
    """Rows written behind the triggers' back (raw SQL with the triggers off) do not change the tiles:
    the pages read the rollups. A rebuild brings them in."""
    olivia = world["users"][0]
    client.force_login(olivia)
    before = client.get("/vms/").context["tiles"]["total"]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")  # no user triggers fire
        cursor.execute(
            "INSERT INTO vms_virtualmachine (resource_group_id, resource_group_name, name, vm_id, location, zone, availability_set, size, "
            "image_publisher, image_offer, image_sku, image_version, image_id, product, time_zone, power_state, "
            "created_at, tags, provision_vm_agent, enable_automatic_updates, patch_mode, enable_hotpatching, "
            "assessment_mode, reboot_setting, bypass_platform_safety_checks, version) "
            "SELECT resource_group_id, resource_group_name, 'hidden-1', %s, location, zone, availability_set, size, image_publisher, "
            "image_offer, image_sku, image_version, image_id, product, time_zone, power_state, created_at, tags, "
            "provision_vm_agent, enable_automatic_updates, patch_mode, enable_hotpatching, assessment_mode, "
            "reboot_setting, bypass_platform_safety_checks, version FROM vms_virtualmachine "
            "WHERE resource_group_id = %s LIMIT 1",
            [uuid.uuid4(), world["groups"][0].pk],
        )
        cursor.execute("SET LOCAL session_replication_role = origin")
    assert client.get("/vms/").context["tiles"]["total"] == before
    assert client.get("/overview/").context["tiles"]["total"] == before
    rollup.rebuild()
    assert client.get("/vms/").context["tiles"]["total"] == before + 1


def test_a_name_search_is_counted_directly(client, world):
    client.force_login(world["users"][1])
    tiles = client.get("/vms/", {"q": "sql-"}).context["tiles"]
    assert tiles["total"] == 3


@pytest.mark.django_db(transaction=True)
def test_two_recording_transactions_at_once_neither_wait_nor_lose_a_change(catalog, no_random_failures):
    """Both transactions write deltas under the same rollup keys and hold them uncommitted while the
    other writes: with upserted counters the second would block on the first's row lock (the barrier
    would time out); with appended deltas both go through, and every change is counted."""
    root = make_user("root", superuser=True)
    rg = make_resource_group(make_subscription("Contoso"), "rg-web", "westeurope")
    vms = make_fleet(40, rg, history=False)
    halves = [[vm.pk for vm in vms[0::2]], [vm.pk for vm in vms[1::2]]]
    barrier, errors, turn = threading.Barrier(2, timeout=20), [], iter(halves)
    lock = threading.Lock()

    def record() -> None:
        with lock:
            pks = next(turn)
        try:
            with transaction.atomic():
                # What an installation batch writes for its VMs: guest summaries and operations.
                GuestState.objects.filter(pk__in=pks).update(
                    assessed_at=timezone.now(), reboot_pending=False, critical_security_count=0, other_count=0
                )
                targets = list(VirtualMachine.objects.filter(pk__in=pks).select_related("resource_group"))
                services.queue_operations(targets, OperationKind.INSTALLATION, started_by="Platform", enqueue=False)
                barrier.wait()  # both hold uncommitted deltas under the same keys
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=record) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert FleetRollupDelta.objects.exists()
    scope = rollup.Scope()
    counts = rollup.fleet_counts(VirtualMachine.objects.all(), scope, clock.now())
    assert counts == fleet.fleet_counts(VirtualMachine.objects.all(), clock.now())
    assert counts["status_none"] == 40
    zone = timezone.get_current_timezone()
    installs = rollup.installation_counts(None, scope, clock.now(), zone)
    assert sum(f["runs"] for (_, status), f in installs.items() if status == OperationStatus.NOT_STARTED) == 40
    assert rollup.fold()
    assert not FleetRollupDelta.objects.exists()
    assert rollup.fleet_counts(VirtualMachine.objects.all(), scope, clock.now()) == counts
    del root


def test_the_location_filter_lists_the_locations_of_the_visible_vms(world):
    """From the coarse rollup: a region appears with its first visible VM and goes with its last."""
    olivia, root = world["users"]
    _, sql, other = world["groups"]
    make_vm(resource_group=other, name="fab-east", location="eastus")  # Fabrikam: Olivia does not see it

    def choices(user) -> list[str]:
        request = RequestFactory().get("/")
        request.user = user
        found = fleet_for(request)
        return [value for value, _ in next(f.choices for f in found.filters if f.param == "location")]

    def visible_locations(user) -> list[str]:
        return sorted(set(access.vms_for(user).values_list("location", flat=True)))

    assert choices(olivia) == visible_locations(olivia) == ["northeurope", "westeurope"]
    assert choices(root) == visible_locations(root) == ["eastus", "northeurope", "westeurope"]
    rollup.fold()
    # The last VM of a region deleted, one moved to a new region (deltas not folded yet).
    assert services.delete_virtual_machine(VirtualMachine.objects.get(name="fab-east"))
    VirtualMachine.objects.filter(resource_group=sql, name="sql-0").update(location="swedencentral")
    assert choices(olivia) == visible_locations(olivia) == ["northeurope", "swedencentral", "westeurope"]
    assert choices(root) == visible_locations(root) == ["northeurope", "swedencentral", "westeurope"]


def test_an_imported_fleet_is_folded_once_committed(world, django_capture_on_commit_callbacks):
    """No beat need run: the import's deltas are in the base tables when it commits."""
    root = world["users"][1]
    web = world["groups"][0]
    rollup.fold()
    docs = [fleetfile.entry(str(web.subscription_id), "rg-imported", f"imp-{n}", "westeurope") for n in range(3)]
    plan = fleet_import.plan(fleet_import.parse(json.dumps(docs).encode()), root)
    with django_capture_on_commit_callbacks(execute=True):
        assert len(services.import_fleet(plan, root)) == 3
    assert not FleetRollupDelta.objects.exists() and not CoarseFleetRollupDelta.objects.exists()
    assert coarse_rows() == coarse_rows(rollup.FLEET)
    scope = rollup.Scope()
    assert rollup.fleet_counts(VirtualMachine.objects.all(), scope, clock.now())["total"] == 21


def test_a_batch_after_a_one_row_statement_is_still_joined_by_hash(world):
    """The triggers' statements are planned for each call's transition tables: a connection whose
    first recording was one VM's does not join a batch's old and new rows row by row (a nested loop
    over both tables: quadratic in the batch). auto_explain reports each plan to this connection."""
    vms = list(VirtualMachine.objects.order_by("pk"))
    ids = services.queue_operations(vms, OperationKind.ASSESSMENT, enqueue=False)
    with explained() as plans:
        services.execute_operations(ids[:1])
        plans.clear()
        services.execute_operations(ids[1:])
    scans = [line for plan in plans for line in plan.splitlines() if "Named Tuplestore Scan" in line]
    assert len(vms) > 10 and scans
    looped = [line for line in scans if "loops=1)" not in line and "(never executed)" not in line]
    assert not looped, looped


def test_a_reassessment_to_the_same_findings_runs_no_rollup_statement(world):
    """A trigger runs its rollup statement (planned per call: most of a small batch's trigger time)
    only when its rows change what the rollups read; most of a daily round changes nothing."""
    vms = list(VirtualMachine.objects.order_by("pk"))
    services.execute_operations(services.queue_operations(vms, OperationKind.ASSESSMENT, enqueue=False))
    with explained() as plans:
        services.execute_operations(services.queue_operations(vms, OperationKind.ASSESSMENT, enqueue=False))
    assert plans and not [plan for plan in plans if "rollupdelta" in plan]
    from_rollups, direct = figures_both_ways(world["users"][1], {})
    assert from_rollups == direct


@contextmanager
def explained():
    """The plans of every statement run inside (triggers' included), as auto_explain reports them."""
    plans: list[str] = []
    connection.ensure_connection()
    connection.connection.add_notice_handler(lambda notice: plans.append(notice.message_primary))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("LOAD 'auto_explain'")
        for name, value in [("log_min_duration", "0"), ("log_analyze", "on"), ("log_nested_statements", "on")]:
            cursor.execute(f"SET LOCAL auto_explain.{name} = {value}")
        cursor.execute("SET LOCAL auto_explain.log_level = notice")
        yield plans
