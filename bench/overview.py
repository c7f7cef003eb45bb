"""Benchmark: the fleet pages (Overview, Updates, one update's machines, History) at 1,000, 10,000 and
100,000 VMs, side by side in one run, as a signed-in user with a role on every subscription.

Seeds its own PostgreSQL database set-based (a template row per table, cloned by INSERT … SELECT over
generate_series: about a minute for 100,000 VMs), growing the same fleet 1,000 → 10,000 → 100,000
and timing every page at each size. Per VM: a guest with its missing-update summary (about two
missing updates: MissingUpdate rows and GuestState counts, as record_findings writes them), ten
operations over the last year (every other one an installation, the newest within the last 30 days:
a million operations at 100,000 VMs) with a per-patch result for each installation, and 90 days of
compliance snapshots per subscription. Each page is requested REPEAT times; the median server time
(Django's test client: URL to rendered response, no network) and the query count are printed per
size, with the ratio to the 1,000-VM figure.

    .venv/bin/python bench/overview.py [--sizes 1000,10000,100000] [--repeat 7]

"fleet tiles" rows time the fleet list's tiles alone (fleet_tiles: update status, orchestration,
hotpatch and the 30-day installations, from the rollups of patching.rollup); with --sizes
100,1000,10000,100000 the 100-VM figures are there to compare with.

Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/hotpatch_bench_overview).
"""

import argparse
import json
import statistics
import time
import uuid

import harness

ENV = harness.environment("hotpatch_bench_overview")
SUBSCRIPTIONS, GROUPS_PER_SUBSCRIPTION, OPERATIONS_PER_VM = 10, 10, 10
# Operation k of a VM is 36·k days old, give or take: ten a VM over a year, one in the last 30 days.
AGE = "(s.k * 36 + (s.h % 30)) * interval '1 day' + (s.h % 24) * interval '1 hour'"


def clone(cursor, model, template_pk: int, source_sql: str, overrides: dict[str, str]) -> None:
    """INSERT one row per row of `source_sql` (aliased s), copying the template row t's columns except
    the primary key and those in `overrides` (column -> SQL expression over s and t)."""
    table = model._meta.db_table
    pk = model._meta.pk.column
    columns = [f.column for f in model._meta.concrete_fields if f.column != pk or pk in overrides]
    values = [overrides.get(c, f't."{c}"') for c in columns]
    names = ", ".join(f'"{c}"' for c in columns)
    # No parameters: "%" in the expressions is SQL's modulo.
    cursor.execute(
        f'INSERT INTO "{table}" ({names}) SELECT {", ".join(values)} FROM ({source_sql}) s '
        f'CROSS JOIN "{table}" t WHERE t."{pk}" = {int(template_pk)}'
    )


def grow(to: int, done: int, world) -> None:
    """Add VMs done+1..to, with their guests, summaries, operations and results (set-based SQL)."""
    from django.db import connection

    from patching import rollup
    from patching.models import GuestState, MissingUpdate, Operation
    from vms.models import VirtualMachine

    t = world
    with connection.cursor() as c:
        clone(
            c,
            VirtualMachine,
            t["vm"],
            f"SELECT g, rg.id AS rg_id, rg.location FROM generate_series({done + 1}, {to}) g "
            f"JOIN (SELECT id, location, row_number() OVER (ORDER BY id) - 1 AS n FROM vms_resourcegroup) rg "
            f"ON rg.n = g % {SUBSCRIPTIONS * GROUPS_PER_SUBSCRIPTION}",
            {
                "name": "'bench-' || s.g",
                "vm_id": "gen_random_uuid()",
                "resource_group_id": "s.rg_id",
                "location": "s.location",
                "zone": "((s.g % 3) + 1)::text",
                "patch_mode": "(ARRAY['AutomaticByPlatform','AutomaticByPlatform','AutomaticByOS','Manual'])[s.g % 4 + 1]",
                "enable_hotpatching": "s.g % 4 < 2",
                "power_state": "CASE WHEN s.g % 20 = 0 THEN 'deallocated' ELSE 'running' END",
            },
        )
        new_vms = f"SELECT id, row_number() OVER (ORDER BY id) + {done} AS g FROM vms_virtualmachine WHERE name LIKE 'bench-%' AND id NOT IN (SELECT vm_id FROM patching_gueststate)"
        clone(
            c,
            GuestState,
            t["guest"],
            new_vms,
            {
                "vm_id": "s.id",
                "assessed_at": "CASE WHEN s.g % 10 = 0 THEN NULL ELSE now() - (s.g % 48) * interval '1 hour' END",
                "reboot_pending": "s.g % 9 = 0",
                "hotpatch_status": "CASE WHEN s.g % 4 < 2 THEN 'Enabled' ELSE 'Disabled' END",
            },
        )
        # About two missing updates per assessed VM, from a pool of twelve.
        c.execute(
            f"INSERT INTO {MissingUpdate._meta.db_table} (guest_id, update_id, failed) "
            "SELECT g.vm_id, p.id, (v.id + p.n) %% 66 = 0 FROM patching_gueststate g "
            "JOIN vms_virtualmachine v ON v.id = g.vm_id "
            "JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM patching_update WHERE id = ANY(%s)) p "
            "ON (v.id + p.n) %% 6 = 0 "
            "WHERE g.assessed_at IS NOT NULL AND v.id > %s",
            [t["pool"], t["last_vm"]],
        )
        c.execute(
            "UPDATE patching_gueststate g SET missing_by_classification = m.counts, "
            "oldest_critical_security_at = m.oldest, critical_security_count = m.critical, other_count = m.other "
            "FROM (SELECT guest_id, jsonb_object_agg(classification, n) AS counts, min(oldest) AS oldest, "
            "  coalesce(sum(n) FILTER (WHERE classification IN ('Critical', 'Security')), 0) AS critical, "
            "  coalesce(sum(n) FILTER (WHERE classification NOT IN ('Critical', 'Security')), 0) AS other "
            "  FROM (SELECT mu.guest_id, u.classification, count(*) AS n, "
            "    min(u.published_at) FILTER (WHERE u.classification IN ('Critical', 'Security')) AS oldest "
            "    FROM patching_missingupdate mu JOIN patching_update u ON u.id = mu.update_id "
            "    WHERE mu.guest_id > %s GROUP BY 1, 2) x GROUP BY guest_id) m "
            "WHERE g.vm_id = m.guest_id",
            [t["last_vm"]],
        )
        clone(
            c,
            Operation,
            t["operation"],
            f"SELECT v.id AS vm_id, v.name, v.location, rg.subscription_id, k, v.id * 11 + k AS h "
            f"FROM vms_virtualmachine v JOIN vms_resourcegroup rg ON rg.id = v.resource_group_id "
            f"CROSS JOIN generate_series(0, {OPERATIONS_PER_VM - 1}) k WHERE v.id > {t['last_vm']}",
            {
                "activity_id": "gen_random_uuid()",
                "vm_id": "s.vm_id",
                "subscription_id": "s.subscription_id",
                "vm_name": "s.name",
                "location": "s.location",
                "kind": "CASE WHEN s.k % 2 = 0 THEN 'installation' ELSE 'assessment' END",
                "status": "CASE WHEN s.h % 17 = 0 THEN 'Failed' WHEN s.h % 13 = 0 THEN 'CompletedWithWarnings' "
                "ELSE 'Succeeded' END",
                "started_by": "CASE WHEN s.h % 5 = 0 THEN 'User' ELSE 'Platform' END",
                "created_at": f"now() - ({AGE})",
                "started_at": f"now() - ({AGE})",
                "finished_at": f"now() - ({AGE}) + interval '9 minutes'",
                "installed_count": "CASE WHEN s.k % 2 = 0 THEN 2 ELSE 0 END",
                "reboot_status": "CASE WHEN s.k % 2 = 1 THEN 'Unknown' WHEN s.h % 3 = 0 THEN 'Completed' "
                "ELSE 'NotNeeded' END",
            },
        )
        c.execute(
            "INSERT INTO patching_patchresult (operation_id, update_id, state, error) "
            "SELECT o.id, (%s::int[])[o.id %% 12 + 1], CASE WHEN o.status = 'Failed' THEN 'Failed' "
            "ELSE 'Installed' END, '' FROM patching_operation o "
            "WHERE o.kind = 'installation' AND o.vm_id > %s",
            [t["pool"], t["last_vm"]],
        )
        c.execute(
            "UPDATE patching_gueststate g SET last_installation_id = o.id FROM "
            "(SELECT DISTINCT ON (vm_id) vm_id, id FROM patching_operation WHERE kind = 'installation' "
            "AND vm_id > %s ORDER BY vm_id, created_at DESC) o WHERE g.vm_id = o.vm_id",
            [t["last_vm"]],
        )
        # This year's installations without a reboot, and with a hotpatch, per guest (as record_findings counts).
        c.execute(
            "UPDATE patching_gueststate g SET counted_year = extract(year FROM now()), "
            "installs_without_reboot = o.n, reboots_avoided = o.hotpatched "
            "FROM (SELECT o.vm_id, count(*) AS n, count(*) FILTER (WHERE u.kind = 'hotpatch') AS hotpatched "
            "  FROM patching_operation o JOIN patching_patchresult r ON r.operation_id = o.id "
            "  JOIN patching_update u ON u.id = r.update_id "
            "  WHERE o.kind = 'installation' AND o.reboot_status = 'NotNeeded' AND o.status <> 'Failed' "
            "  AND o.created_at >= date_trunc('year', now()) AND o.vm_id > %s GROUP BY o.vm_id) o "
            "WHERE g.vm_id = o.vm_id",
            [t["last_vm"]],
        )
        c.execute("SELECT max(id) FROM vms_virtualmachine")
        t["last_vm"] = c.fetchone()[0]
    # The seeding's statements kept the rollups current through their triggers; the rebuild recomputes
    # them from scratch anyway (as after any bulk load), leaving no deltas to sum.
    rollup.rebuild()
    with connection.cursor() as c:
        c.execute("ANALYZE")


def world_template():
    """The subscriptions, resource groups, user and one template row per table the clones copy."""
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.db.models import Q

    from patching import services
    from patching.models import ComplianceSnapshot, GuestState, Operation, Update
    from vms import clock
    from vms.models import ResourceGroup, RoleAssignment, Subscription, VirtualMachine
    from vms.patch_settings import defaults_for_image

    user = get_user_model().objects.create_user("bench", password="bench-password-1")
    regions = ["westeurope", "northeurope", "eastus", "westus2", "swedencentral"]
    groups = []
    for n in range(SUBSCRIPTIONS):
        subscription = Subscription.objects.create(id=uuid.uuid4(), display_name=f"Subscription {n:02d}")
        RoleAssignment.objects.create(user=user, subscription=subscription, role="Contributor")
        groups += [
            ResourceGroup.objects.create(subscription=subscription, name=f"rg-{n}-{m}", location=regions[m % 5])
            for m in range(GROUPS_PER_SUBSCRIPTION)
        ]
        today = clock.now().date()
        ComplianceSnapshot.objects.bulk_create(
            ComplianceSnapshot(subscription=subscription, day=today - timedelta(days=d), machines=1, assessed=1)
            for d in range(90)
        )
    template = VirtualMachine(
        resource_group=groups[0], name="template", location="westeurope", image_sku="2022-datacenter-azure-edition",
        product="ws2022-azure",
    )  # fmt: skip
    template.apply_patch_settings(
        defaults_for_image("MicrosoftWindowsServer", "WindowsServer", template.image_sku, "westeurope")
    )
    template.save()
    services.provision_guests([template], clock.now())
    operation = Operation.objects.create(
        vm=template, subscription=groups[0].subscription, vm_name="template", location="westeurope",
        kind="assessment", status="Succeeded",
    )  # fmt: skip
    pool = list(
        Update.objects.filter(Q(classification__in=["Critical", "Security"]) | Q(kind__in=["dotnet", "hotpatch"]))
        .order_by("-published_at")
        .values_list("pk", flat=True)[:12]
    )
    return {
        "user": user,
        "vm": template.pk,
        "guest": GuestState.objects.get(pk=template.pk).pk,
        "operation": operation.pk,
        "pool": pool,
        "last_vm": template.pk,
    }


def measure(client, url: str, repeat: int) -> tuple[float, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times, queries = [], 0
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as captured:
            began = time.perf_counter()
            response = client.get(url)
            body = b"".join(response.streaming_content) if response.streaming else response.content
            times.append(time.perf_counter() - began)
        assert response.status_code == 200 and body, (url, response.status_code)
        queries = len(captured.captured_queries)
    return statistics.median(times) * 1000, queries


def measure_tiles(user, params: dict, repeat: int) -> tuple[float, int]:
    """The fleet list's tiles alone (portal.web.views.fleet.fleet_tiles), as the page computes them."""
    from django.db import connection
    from django.test import RequestFactory
    from django.test.utils import CaptureQueriesContext

    from portal.web.views.fleet import fleet_for, fleet_tiles

    times, queries = [], 0
    for _ in range(repeat):
        request = RequestFactory().get("/vms/", params)
        request.user = user
        found = fleet_for(request)
        with CaptureQueriesContext(connection) as captured:
            began = time.perf_counter()
            fleet_tiles(user, found)
            times.append(time.perf_counter() - began)
        queries = len(captured.captured_queries)
    return statistics.median(times) * 1000, queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    harness.setup_django(ENV)
    from django.conf import settings
    from django.test import Client
    from django.urls import reverse

    from patching import catalog
    from patching.models import MissingUpdate, Operation
    from vms import clock

    settings.ALLOWED_HOSTS = ["*"]
    catalog.ensure_catalog(until=clock.now().date())
    world = world_template()
    client = Client()
    client.force_login(world["user"])

    results: dict[str, dict[int, tuple[float, int]]] = {}
    done, seeding = 0, {}
    for size in sizes:
        began = time.perf_counter()
        grow(size, done, world)
        done = size
        seeding[size] = round(time.perf_counter() - began, 1)
        update = MissingUpdate.objects.values("update_id").order_by("update_id").first()["update_id"]
        middle = Operation.objects.order_by("-created_at", "-pk")[size * 3 : size * 3 + 1].get()
        cursor = int(middle.created_at.timestamp() * 1_000_000)
        pages = {
            "fleet list (reference)": reverse("vms:list"),
            "overview": reverse("patching:fleet-overview"),
            "overview, one location": reverse("patching:fleet-overview") + "?location=northeurope&trend=90",
            "updates": reverse("patching:updates"),
            "update's machines": reverse("patching:update-machines", args=[update]),
            "history": reverse("patching:history"),
            "history, filtered": reverse("patching:history") + "?kind=installation&status=Failed&started_by=User",
            "history, deep page": reverse("patching:history") + f"?after={cursor}.{middle.pk}",
        }
        pages["update's machines, next page"] = pages["update's machines"] + f"?after={middle.vm_id or 0}"
        for name, url in pages.items():
            results.setdefault(name, {})[size] = measure(client, url, args.repeat)
        for name, params in (
            ("fleet tiles", {}),
            ("fleet tiles, one location", {"location": "northeurope"}),
            ("fleet tiles, update status", {"update_status": "available"}),
        ):
            results.setdefault(name, {})[size] = measure_tiles(world["user"], params, args.repeat)

    # Ratios to the 1,000-VM figures (issue 13's reference) when measured, else to the smallest size.
    first = 1000 if 1000 in sizes else sizes[0]
    header = f"{'page':28}" + "".join(f"{f'{s:,} VMs':>22}" for s in sizes)
    print(header)
    print(f"{'':28}" + "".join(f"{'ms (×) / queries':>22}" for _ in sizes))
    for name, by_size in results.items():
        cells = []
        for s in sizes:
            ms, queries = by_size[s]
            cells.append(f"{ms:8.1f} ({ms / by_size[first][0]:4.2f}×) / {queries:2d}")
        print(f"{name:28}" + "".join(f"{c:>22}" for c in cells))
    print(json.dumps({"seed_seconds": seeding, "operations": Operation.objects.count()}))


if __name__ == "__main__":
    main()
