"""The what-if year (patching.what_if, /sandbox/what-if/): "as it is" against "every capable machine
enrolled in hotpatch", over the user's own fleet, as a Celery job with progress, charts and downloads."""

import csv
import io
import json
from datetime import date, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from patching import what_if
from patching.models import WhatIfRun, WhatIfStatus
from tests.browser.data import make_user
from tests.factories import make_resource_group, make_subscription, make_vm
from tests.helpers import wait_for
from vms import fleetfile
from vms.models import VirtualMachine
from vms.patch_settings import PatchSettings

START = date(2026, 7, 1)  # a baseline month (July) then two hotpatch months
AZURE_ORCHESTRATED = PatchSettings(patch_mode="AutomaticByPlatform", assessment_mode="AutomaticByPlatform")


@pytest.fixture
def olivias_fleet(catalog):
    """Olivia's subscription: two enrolled VMs, two capable ones not enrolled, one that cannot be, one off."""
    olivia = make_user("olivia")
    rg = make_resource_group(make_subscription("Olivia's", user=olivia, role="Owner"), "rg-app")
    for n in (1, 2):
        make_vm(resource_group=rg, name=f"hot-{n}")
    for n in (1, 2):
        make_vm(resource_group=rg, name=f"cold-{n}", hotpatch=False)
    make_vm(resource_group=rg, name="classic-1", product="ws2022", settings=AZURE_ORCHESTRATED)
    off = make_vm(resource_group=rg, name="off-1")
    VirtualMachine.objects.filter(pk=off.pk).update(power_state="deallocated")
    theirs = make_subscription("Bob's", user=make_user("bob"), role="Owner")
    make_vm(resource_group=make_resource_group(theirs, "rg-bob"), name="bobs-1")
    return olivia


def test_the_fleet_is_the_users_own(olivias_fleet):
    machines = what_if.fleet_of(olivias_fleet)
    assert len(machines) == 6
    assert sum(m.capable for m in machines) == 5 and sum(m.settings.enable_hotpatching for m in machines) == 3
    assert [m.power_state for m in machines].count("deallocated") == 1


def test_enrolling_every_capable_machine_saves_reboots(olivias_fleet):
    progress = []
    result = what_if.compare(what_if.fleet_of(olivias_fleet), START, 92, progress=progress.append)
    as_is, enrolled = result["scenarios"]["as_is"], result["scenarios"]["all_enrolled"]
    assert (as_is["enrolled"], enrolled["enrolled"]) == (3, 5)
    # July's baseline reboots everyone running; August and September reboot only those not enrolled.
    assert as_is["machines_needing_a_window"]["2026-08"] == 3  # cold-1, cold-2, classic-1
    assert enrolled["machines_needing_a_window"]["2026-08"] == 1  # classic-1
    assert enrolled["reboots"] < as_is["reboots"]
    assert enrolled["reboots_per_machine_year"] < as_is["reboots_per_machine_year"]
    assert result["months"] == ["2026-07", "2026-08", "2026-09"]
    assert progress == sorted(progress) and 0 < progress[0] and progress[-1] <= 1
    assert progress[len(progress) // 2] < 1


def test_the_page_shows_the_estimate_then_queues_one_run_on_commit(
    client, olivias_fleet, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr(what_if, "send", sent.append)
    client.force_login(olivias_fleet)
    page = client.get(reverse("sandbox-what-if")).text
    assert "Estimated run time" in page and "for 6 VMs" in page
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("sandbox-what-if-start"))
    run = WhatIfRun.objects.get()
    assert response["Location"] == reverse("sandbox-what-if-run", args=[run.pk])
    assert sent == [run.pk] and run.vms == 6 and run.estimate_seconds > 0
    # Asking again while it is queued gives the same run, sent again (the broker may have been down).
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("sandbox-what-if-start"))
    assert WhatIfRun.objects.count() == 1 and sent == [run.pk, run.pk]
    WhatIfRun.objects.filter(pk=run.pk).update(status=WhatIfStatus.RUNNING)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("sandbox-what-if-start"))
    assert WhatIfRun.objects.count() == 1 and sent == [run.pk, run.pk]
    assert "A run is in progress below" in client.get(reverse("sandbox-what-if")).text
    WhatIfRun.objects.filter(pk=run.pk).update(status=WhatIfStatus.QUEUED)
    polled = client.get(
        reverse("sandbox-what-if-run", args=[run.pk]), headers={"HX-Request": "true", "HX-Target": "what-if-run"}
    )
    assert polled.text.lstrip().startswith('<div id="what-if-run"') and 'hx-trigger="every 2s"' in polled.text
    assert "Waiting for a worker" in polled.text
    # A minute and still nobody took it: the page stops polling and says what to do; sending it again follows it.
    WhatIfRun.objects.filter(pk=run.pk).update(queued_at=timezone.now() - timedelta(minutes=2))
    stuck = client.get(
        reverse("sandbox-what-if-run", args=[run.pk]), headers={"HX-Request": "true", "HX-Target": "what-if-run"}
    ).text
    assert "hx-trigger" not in stuck and "No worker has taken this run" in stuck
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("sandbox-what-if-start"))
    assert 'hx-trigger="every 2s"' in client.get(reverse("sandbox-what-if-run", args=[run.pk])).text


def test_a_finished_run_draws_charts_stops_polling_and_downloads(client, olivias_fleet):
    run = WhatIfRun.objects.create(user=olivias_fleet, vms=6, days=92, start=START, estimate_seconds=10)
    assert what_if.execute_run(run.pk) is True
    assert what_if.execute_run(run.pk) is False  # a second delivery finds nothing to claim
    run.refresh_from_db()
    assert run.status == WhatIfStatus.SUCCEEDED and run.progress == 1.0 and run.runtime_seconds > 0
    client.force_login(olivias_fleet)
    polled = client.get(
        reverse("sandbox-what-if-run", args=[run.pk]), headers={"HX-Request": "true", "HX-Target": "what-if-run"}
    ).text
    assert "hx-trigger" not in polled  # the poll stops
    assert polled.count("<svg viewBox") == 3 and 'role="img"' in polled and 'id="table-windows"' in polled
    as_is = run.result["scenarios"]["as_is"]
    assert f"<td>{as_is['reboots_per_machine_year']}</td>" in polled

    as_json = client.get(reverse("sandbox-what-if-download", args=[run.pk, "json"]))
    assert as_json["Content-Disposition"].startswith("attachment") and json.loads(as_json.content) == run.result
    rows = list(csv.DictReader(io.StringIO(client.get(reverse("sandbox-what-if-download", args=[run.pk, "csv"])).text)))
    assert {"scenario": "as_is", "metric": "reboots", "month": "", "value": str(as_is["reboots"])} in rows
    assert sum(1 for r in rows if r["metric"] == "machines_needing_a_window") == 2 * len(run.result["months"])
    assert client.get(reverse("sandbox-what-if-download", args=[run.pk, "xml"])).status_code == 404


def test_another_users_run_is_not_found(client, olivias_fleet):
    run = WhatIfRun.objects.create(user=olivias_fleet, vms=6, days=92, start=START, estimate_seconds=10)
    other = Client()
    other.force_login(make_user("mallory"))
    assert other.get(reverse("sandbox-what-if-run", args=[run.pk])).status_code == 404
    assert other.get(reverse("sandbox-what-if-download", args=[run.pk, "json"])).status_code == 404
    assert "You see no VMs yet" in other.get(reverse("sandbox-what-if")).text
    refused = other.post(reverse("sandbox-what-if-start"), follow=True)
    assert "You see no VMs: import your fleet" in refused.text and not WhatIfRun.objects.filter(
        user__username="mallory"
    )
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(olivias_fleet)
    assert strict.post(reverse("sandbox-what-if-start")).status_code == 403
    assert client.get(reverse("sandbox-what-if-start")).status_code in (302, 405)


def test_a_failed_run_says_why(olivias_fleet, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("the scratch database is full")

    monkeypatch.setattr(what_if, "compare", explode)
    run = WhatIfRun.objects.create(user=olivias_fleet, vms=6, days=92, start=START, estimate_seconds=10)
    what_if.execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == WhatIfStatus.FAILED and "the scratch database is full" in run.error


def test_an_imported_fleet_runs_through_the_what_if(catalog, tmp_path):
    from django.core.management import call_command

    olivia = make_user("olivia")
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(fleetfile.generate(40, seed=3)))
    call_command("import_fleet", str(path), owner="olivia")
    result = what_if.compare(what_if.fleet_of(olivia), START, 40)
    assert result["vms"] == VirtualMachine.objects.count() and result["scenarios"]["as_is"]["reboots"] > 0


@pytest.mark.live
def test_a_real_worker_runs_the_what_if_job(live_worker, olivias_fleet):
    """Sent through the broker to a real worker: claimed, progress written while it runs, the result stored."""
    run = WhatIfRun.objects.create(user=olivias_fleet, vms=6, days=92, start=START, estimate_seconds=30)
    what_if.send(run.pk)
    seen = set()

    def finished():
        run.refresh_from_db()
        seen.add((run.status, run.progress))
        return run.is_finished

    wait_for(finished, timeout=240, interval=0.2, message="the what-if run to finish")
    assert run.status == WhatIfStatus.SUCCEEDED, run.error
    assert any(status == WhatIfStatus.RUNNING and 0 < progress < 1 for status, progress in seen)
    assert run.result["scenarios"]["all_enrolled"]["reboots"] < run.result["scenarios"]["as_is"]["reboots"]
    assert run.started_at and run.finished_at - run.started_at < timedelta(minutes=4)


def test_a_run_whose_worker_died_is_taken_over(olivias_fleet, monkeypatch, settings):
    from django.utils import timezone

    monkeypatch.setattr(what_if, "compare", lambda *args, **kwargs: {"scenarios": {}})
    run = WhatIfRun.objects.create(user=olivias_fleet, vms=6, days=92, start=START, estimate_seconds=10)
    WhatIfRun.objects.filter(pk=run.pk).update(status=WhatIfStatus.RUNNING, started_at=timezone.now())
    assert what_if.execute_run(run.pk) is False  # running elsewhere, recently: not ours
    died = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 120)
    WhatIfRun.objects.filter(pk=run.pk).update(started_at=died)
    assert what_if.execute_run(run.pk) is True
    run.refresh_from_db()
    assert run.status == WhatIfStatus.SUCCEEDED


# --- Compared with a maintenance schedule -------------------------------------------------------------


def schedule_body(recur_every: str) -> dict:
    return {
        "location": "westeurope",
        "properties": {
            "maintenanceScope": "InGuestPatch",
            "maintenanceWindow": {
                "startDateTime": "2026-06-01 22:00",
                "duration": "03:00",
                "timeZone": "W. Europe Standard Time",
                "recurEvery": recur_every,
            },
            "installPatches": {
                "rebootSetting": "IfRequired",
                "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]},
            },
        },
    }


@pytest.fixture
def schedules(olivias_fleet):
    """Olivia's bimonthly schedule (Patch Tuesday of July and September) and one of Bob's."""
    from patching.maintenance import services as maintenance
    from vms.models import ResourceGroup

    mine, _, problems = maintenance.save_configuration(
        ResourceGroup.objects.get(name="rg-app"), "bimonthly", schedule_body("2Months Second Tuesday")
    )
    assert not problems
    bobs, _, problems = maintenance.save_configuration(
        ResourceGroup.objects.get(name="rg-bob"), "bobs-weekly", schedule_body("Week Sunday")
    )
    assert not problems
    return mine, bobs


def test_a_schedule_is_a_third_scenario_patching_only_in_its_months(olivias_fleet, schedules):
    mine, _ = schedules
    window = what_if.schedule_window(mine)
    assert (window["recur_every"], window["time_zone"], window["duration"]) == (
        "2Months Second Tuesday",
        "W. Europe Standard Time",
        "03:00",
    )
    result = what_if.compare(what_if.fleet_of(olivias_fleet), START, 92, schedule=window)
    assert list(result["scenarios"]) == ["as_is", "all_enrolled", "scheduled"]
    as_is, scheduled = result["scenarios"]["as_is"], result["scenarios"]["scheduled"]
    assert scheduled["label"] == "On bimonthly's schedule"
    assert scheduled["enrolled"] == 0  # hotpatch off on a customer-managed schedule
    windows = scheduled["machines_needing_a_window"]
    # Windows in July and September only; as it is, the platform reboots the machines not enrolled every month.
    assert windows["2026-07"] > 0 and windows["2026-09"] > 0 and windows["2026-08"] == 0
    assert as_is["machines_needing_a_window"]["2026-08"] > 0
    # Hotpatch off: the enrolled machines reboot in every window too.
    assert windows["2026-09"] > as_is["machines_needing_a_window"]["2026-09"]


def test_choosing_a_schedule_stores_its_window_and_scales_the_estimate(
    client, olivias_fleet, schedules, django_capture_on_commit_callbacks, monkeypatch
):
    mine, bobs = schedules
    monkeypatch.setattr(what_if, "send", lambda run_id: None)
    client.force_login(olivias_fleet)
    page = client.get(reverse("sandbox-what-if")).text
    assert f'<option value="{mine.pk}"' in page and "bimonthly" in page
    assert "bobs-weekly" not in page and f'value="{bobs.pk}"' not in page  # only configurations she sees
    assert "hotpatch off" in page

    for foreign in (bobs.pk, 10**30, "nightly", -1, "²"):
        refused = client.post(reverse("sandbox-what-if-start"), {"schedule": foreign}, follow=True)
        assert refused.status_code == 200
        assert "does not exist or is not in a subscription you see" in refused.text
    assert not WhatIfRun.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("sandbox-what-if-start"), {"schedule": mine.pk})
    run = WhatIfRun.objects.get()
    assert run.schedule == what_if.schedule_window(mine) and run.schedule["name"] == "bimonthly"
    assert run.estimate_seconds == what_if.estimate_seconds(6, scenarios=3) > what_if.estimate_seconds(6)
    assert (
        "Compared with the schedule of <strong>bimonthly</strong>"
        in client.get(reverse("sandbox-what-if-run", args=[run.pk])).text
    )


def test_a_finished_scheduled_run_draws_and_downloads_three_scenarios(client, olivias_fleet, schedules):
    mine, _ = schedules
    run = WhatIfRun.objects.create(
        user=olivias_fleet, vms=6, days=92, start=START, estimate_seconds=10, schedule=what_if.schedule_window(mine)
    )
    assert what_if.execute_run(run.pk) is True
    run.refresh_from_db()
    assert run.status == WhatIfStatus.SUCCEEDED, run.error
    client.force_login(olivias_fleet)
    page = client.get(reverse("sandbox-what-if-run", args=[run.pk])).text
    assert page.count('class="s-scheduled"') == 2 + len(run.result["months"])  # two bars, a column a month
    assert '<svg viewBox="0 0 640 170"' in page and "On bimonthly&#x27;s schedule" in page
    scheduled = run.result["scenarios"]["scheduled"]
    rows = list(csv.DictReader(io.StringIO(client.get(reverse("sandbox-what-if-download", args=[run.pk, "csv"])).text)))
    assert {"scenario": "scheduled", "metric": "reboots", "month": "", "value": str(scheduled["reboots"])} in rows
    assert sum(1 for r in rows if r["metric"] == "machines_needing_a_window") == 3 * len(run.result["months"])
    as_json = json.loads(client.get(reverse("sandbox-what-if-download", args=[run.pk, "json"])).content)
    assert as_json["schedule"]["recur_every"] == "2Months Second Tuesday" and "scheduled" in as_json["scenarios"]
