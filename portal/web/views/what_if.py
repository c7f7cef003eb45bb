"""Sandbox: a what-if year over your fleet (/sandbox/what-if/), run as a Celery job (patching.what_if).

The page shows the estimate before it starts, a progress bar polled with htmx while the job runs (the
poll is in the partial only while the run is unfinished, so it stops by itself), then the comparison
as server-drawn SVG charts, each with its figures in a table, and the CSV and JSON downloads. A
maintenance configuration the user sees may be picked to compare as a third scenario.
"""

import csv
import io
import json

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from patching import what_if
from patching.models import WhatIfRun
from vms import access

from .common import partial_for, portal_view

CHART_WIDTH, CHART_HEIGHT, BAR_AREA = 640, 220, 160
SCHEDULES_LISTED = 500
SHORT_LABELS = {"as_is": "As it is", "all_enrolled": "All enrolled", what_if.SCHEDULED: "On schedule"}


def _series(result: dict) -> list[str]:
    """The run's scenarios in the order drawn (the stored JSON does not keep key order)."""
    return what_if.scenario_keys(result.get("schedule") or {})


def _bars(values: dict[str, float]) -> dict:
    """One horizontal bar per scenario, scaled to the largest value."""
    top = max(values.values(), default=0) or 1
    bars = [
        {"key": key, "label": SHORT_LABELS[key], "value": value, "width": round(440 * value / top, 1), "y": 20 + 50 * i}
        for i, (key, value) in enumerate(values.items())
    ]
    return {"bars": bars, "height": 20 + 50 * len(bars)}


def _months(result: dict) -> dict:
    """Grouped columns: per month, the machines needing a window in each scenario."""
    months = result["months"]
    scenarios = result["scenarios"]
    series = _series(result)
    top = max((scenarios[s]["machines_needing_a_window"][m] for s in series for m in months), default=0) or 1
    step = (CHART_WIDTH - 60) / max(len(months), 1)
    groups = []
    for i, month in enumerate(months):
        x = 50 + i * step
        columns = []
        for j, key in enumerate(series):
            value = scenarios[key]["machines_needing_a_window"][month]
            height = round(BAR_AREA * value / top, 1)
            columns.append(
                {
                    "key": key,
                    "value": value,
                    "x": round(x + 4 + j * (step - 8) / len(series), 1),
                    "width": round((step - 8) / len(series) - 1, 1),
                    "y": round(20 + BAR_AREA - height, 1),
                    "height": height,
                }
            )
        groups.append({"month": month, "label_x": round(x + step / 2, 1), "columns": columns})
    return {"groups": groups, "top": top, "baseline": 20 + BAR_AREA}


def charts(result: dict) -> dict:
    scenarios, series = result["scenarios"], _series(result)
    return {
        "reboots": _bars({key: scenarios[key]["reboots_per_machine_year"] for key in series}),
        "compliance": _bars({key: scenarios[key]["days_out_of_compliance"] for key in series}),
        "windows": _months(result),
    }


def _run_context(run: WhatIfRun | None) -> dict:
    context = {"run": run}
    if run is not None and run.is_succeeded:
        context["charts"] = charts(run.result)
        context["scenarios"] = [run.result["scenarios"][key] | {"key": key} for key in _series(run.result)]
    return context


def _page(request: HttpRequest, run: WhatIfRun | None) -> HttpResponse:
    template = "sandbox/what_if.html"
    if partial_for(request, ("what-if-run",)):
        template += "#run"  # the poll: the estimate, the button and the run
    vms = access.vms_for(request.user).count()
    context = {
        "nav": "sandbox-what-if",
        "vms": vms,
        "max_vms": what_if.MAX_VMS,
        "estimate": what_if.estimate_seconds(vms),
        "estimate_with_schedule": what_if.estimate_seconds(vms, scenarios=len(what_if.SCENARIOS) + 1),
        "schedule_choices": what_if.schedule_choices(request.user)[:SCHEDULES_LISTED],
        "per_vm_day_ms": round(what_if.seconds_per_vm_day() * 1000, 3),
        "scenario_labels": what_if.SCENARIOS,
    } | _run_context(run)
    return render(request, template, context)


@portal_view
@require_GET
def what_if_page(request: HttpRequest) -> HttpResponse:
    """The estimate and the start button, and the latest run."""
    return _page(request, WhatIfRun.objects.filter(user=request.user).first())


@require_POST
@portal_view
def start(request: HttpRequest) -> HttpResponse:
    try:
        run, _created = what_if.start_run(request.user, request.POST.get("schedule"))
    except what_if.CannotRun as refused:
        messages.error(request, str(refused))
        return redirect("sandbox-what-if")
    return redirect("sandbox-what-if-run", pk=run.pk)


@portal_view
@require_GET
def run_page(request: HttpRequest, pk: int) -> HttpResponse:
    """One run: its progress (polled) or its result."""
    return _page(request, get_object_or_404(WhatIfRun, pk=pk, user=request.user))  # another user's: 404


@portal_view
@require_GET
def download(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    if fmt not in ("csv", "json"):
        raise Http404("Download as csv or json.")
    run = get_object_or_404(WhatIfRun, pk=pk, user=request.user, status="Succeeded")
    name = f"what-if-{run.start}-{run.pk}"
    if fmt == "json":
        response = HttpResponse(json.dumps(run.result, indent=1), content_type="application/json")
    else:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["scenario", "metric", "month", "value"])
        for key in _series(run.result):
            scenario = run.result["scenarios"][key]
            for metric in (
                "enrolled",
                "reboots",
                "reboots_per_machine_year",
                "days_out_of_compliance",
                "machines_out_of_compliance",
                "days_out_of_compliance_per_machine",
            ):
                writer.writerow([key, metric, "", scenario[metric]])
            for month, value in scenario["machines_needing_a_window"].items():
                writer.writerow([key, "machines_needing_a_window", month, value])
        response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return response
