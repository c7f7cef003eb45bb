"""A what-if year over a user's own fleet: "as it is" against "every capable machine enrolled in hotpatch",
and, when the user picks one of their maintenance configurations, against that schedule.

The fleet simulation (orchestrator.simulation: the real engine on a jumping clock, in a throwaway
in-memory database) runs twice over a copy of the VMs the user sees, from the world's today for a
year. Each copy starts fully patched (fleets.bring_up_to_date), so the year's reboots are its own.
The scheduled scenario is the fleet as it is with every Azure-orchestrated machine on the chosen
configuration's window (hotpatch off: Azure requires it for Customer Managed Schedules); the window is
copied onto the run when it is asked for, so later edits to the configuration do not change it.
The comparison keeps, per scenario: reboots per machine-year, days out of compliance, and the
machines that need a maintenance window (reboot) each month.

`start_run` records the run and hands it to Celery on commit (`RUN_WHAT_IF_TASK`, by name);
`execute_run` claims it (Queued -> Running, compare-and-swap: a redelivered task finds nothing to
do), runs the two or three scenarios side by side in processes of their own (`run_scenario`, each in its
throwaway database), writes their progress to the run, and stores the result. A run still Queued is
sent again when its user asks again (the broker may have been down); a run whose worker died
(Running for longer than the task time limit) is claimed again by the next delivery.
"""

import calendar as calendar_module
import json
import logging
import selectors
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from vms import access, clock, images, regions
from vms.models import VirtualMachine
from vms.patch_settings import PatchSettings

from .maintenance import recurrence
from .maintenance.models import MaintenanceConfiguration
from .models import WhatIfRun, WhatIfStatus
from .orchestrator import fleets
from .orchestrator.simulation import Simulation, throwaway_database

log = logging.getLogger(__name__)

RUN_WHAT_IF_TASK = "patching.tasks.run_what_if"
DAYS = 365
MAX_VMS = 15_000  # 10,000 took 6 minutes on the loaded reference machine; the task limit is 15 minutes
# Wall seconds per VM, simulated day and scenario (the two run side by side), measured by
# bench/what_if.py on the reference machine (2 cores); the estimate uses the runs measured here once
# there are some.
MEASURED_SECONDS_PER_VM_DAY = 0.000031
FIXED_SECONDS = 8.0  # migrating the scratch database, loading the catalog
SCENARIOS = {
    "as_is": "As it is",
    "all_enrolled": "Every capable machine enrolled in hotpatch",
}
SCHEDULED = "scheduled"  # the third scenario, when the run has a schedule


def scenario_keys(schedule: dict) -> list[str]:
    return [*SCENARIOS, SCHEDULED] if schedule else list(SCENARIOS)


def scenario_label(key: str, schedule: dict) -> str:
    return SCENARIOS.get(key) or f"On {schedule['name']}'s schedule"


def schedule_choices(user):
    """The maintenance configurations (all InGuestPatch) the user can see, to compare against."""
    return (
        MaintenanceConfiguration.objects.filter(resource_group__subscription__in=access.subscriptions_for(user))
        .select_related("resource_group")
        .order_by("name", "pk")
    )


def schedule_window(config: MaintenanceConfiguration) -> dict:
    """What the simulation needs of a configuration: its window and what it installs (ARM spelling)."""
    return {
        "configuration": config.arm_id,
        "name": config.name,
        "describe": config.describe,
        "start_time": config.start_date_time[-5:],  # "HH:mm": the simulated year starts its own first day
        "duration": recurrence.format_duration(config.duration),
        "time_zone": config.time_zone,
        "recur_every": config.recur_every,
        "install_patches": {
            "rebootSetting": config.reboot_setting,
            "windowsParameters": config.windows_parameters,
            "linuxParameters": config.linux_parameters,
        },
    }


# --- Asking for a run ---------------------------------------------------------------------------------


def seconds_per_vm_day() -> float:
    """From the last runs that finished here (their own runtime), else the benchmark's figure."""
    recent = WhatIfRun.objects.filter(status=WhatIfStatus.SUCCEEDED, vms__gte=100).order_by("-finished_at")[:5]
    samples = [
        (run.runtime_seconds - FIXED_SECONDS) / (run.vms * run.days * len(run.result.get("scenarios") or SCENARIOS))
        for run in recent
        if run.runtime_seconds and run.runtime_seconds > FIXED_SECONDS
    ]
    return sum(samples) / len(samples) if samples else MEASURED_SECONDS_PER_VM_DAY


def estimate_seconds(vms: int, days: int = DAYS, scenarios: int = len(SCENARIOS)) -> float:
    """Wall seconds: the scenarios share the machine's cores, so the time grows with their number."""
    return round(FIXED_SECONDS + vms * days * scenarios * seconds_per_vm_day(), 1)


def in_flight(user) -> WhatIfRun | None:
    return WhatIfRun.objects.filter(user=user, status__in=(WhatIfStatus.QUEUED, WhatIfStatus.RUNNING)).first()


class CannotRun(Exception):
    """The user's fleet is empty or too large for a what-if year; the message says which."""


def start_run(user, schedule_id: int | str | None = None) -> tuple[WhatIfRun, bool]:
    """The user's run in flight, or a new one queued (sent to Celery once the transaction commits),
    compared with the maintenance configuration `schedule_id` too when given (one the user sees)."""
    schedule = {}
    if schedule_id not in (None, ""):
        pk = str(schedule_id)
        config = schedule_choices(user).filter(pk=int(pk)).first() if pk.isascii() and pk.isdigit() and len(pk) < 19 else None
        if config is None:
            raise CannotRun("That maintenance configuration does not exist or is not in a subscription you see.")
        schedule = schedule_window(config)
    running = in_flight(user)
    if running:
        if running.status == WhatIfStatus.QUEUED or (running.started_at and running.started_at < _stale()):
            # Not picked up (the broker was down?) or its worker died: send it again; the claim is once.
            WhatIfRun.objects.filter(pk=running.pk).update(queued_at=timezone.now())
            transaction.on_commit(lambda: send(running.pk))
        return running, False
    count = access.vms_for(user).count()
    if not count:
        raise CannotRun("You see no VMs: import your fleet or create VMs first.")
    if count > MAX_VMS:
        raise CannotRun(f"A what-if year covers at most {MAX_VMS} VMs; you see {count}.")
    try:
        with transaction.atomic():
            run = WhatIfRun.objects.create(
                user=user,
                vms=count,
                days=DAYS,
                start=clock.now().date(),
                estimate_seconds=estimate_seconds(count, scenarios=len(scenario_keys(schedule))),
                schedule=schedule,
            )
            transaction.on_commit(lambda: send(run.pk))
    except IntegrityError:  # a concurrent request queued one first: that is the run
        return in_flight(user), False
    return run, True


def send(run_id: int) -> None:
    """Publish the task; a broker that is down leaves the run Queued (the page says so), never a 500."""
    try:
        current_app.send_task(RUN_WHAT_IF_TASK, args=[run_id])
    except Exception:  # noqa: BLE001 (any broker error: the row stays Queued and can be asked again)
        log.exception("Could not send what-if run %s to the workers", run_id)


# --- Running it (the Celery task) -------------------------------------------------------------------


def _stale() -> datetime:
    """A run started before this has outlived the task time limit: its worker is gone."""
    return timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)


def _claim(run_id: int) -> WhatIfRun | None:
    claimed = WhatIfRun.objects.filter(
        Q(status=WhatIfStatus.QUEUED) | Q(status=WhatIfStatus.RUNNING, started_at__lt=_stale()), pk=run_id
    ).update(status=WhatIfStatus.RUNNING, started_at=timezone.now(), progress=0.0)
    return WhatIfRun.objects.select_related("user").get(pk=run_id) if claimed else None


def execute_run(run_id: int) -> bool:
    """Run the what-if year; False when there was nothing to claim (finished, or running elsewhere)."""
    run = _claim(run_id)
    if run is None:
        return False
    try:
        specs = fleet_of(run.user)
        result = compare(specs, run.start, run.days, schedule=run.schedule, progress=_progress_writer(run.pk))
    except Exception as error:
        log.exception("What-if run %s failed", run_id)
        WhatIfRun.objects.filter(pk=run_id, status=WhatIfStatus.RUNNING).update(
            status=WhatIfStatus.FAILED, finished_at=timezone.now(), error=f"{type(error).__name__}: {error}"[:500]
        )
        return True
    WhatIfRun.objects.filter(pk=run_id, status=WhatIfStatus.RUNNING).update(
        status=WhatIfStatus.SUCCEEDED, finished_at=timezone.now(), progress=1.0, result=result
    )
    return True


def _progress_writer(run_id: int):
    """Writes the run's progress, at most every percent or two seconds."""
    last = {"fraction": -1.0, "at": 0.0}

    def write(fraction: float) -> None:
        now = time.monotonic()
        if fraction - last["fraction"] < 0.01 and now - last["at"] < 2:
            return
        last.update(fraction=fraction, at=now)
        WhatIfRun.objects.filter(pk=run_id, status=WhatIfStatus.RUNNING).update(progress=round(fraction, 3))

    return write


@dataclass(frozen=True)
class Machine:
    """What the simulation needs of one VM of the user's fleet (JSON to the scenario processes)."""

    subscription: str
    region: str
    product: str
    sku: str
    capable: bool
    time_zone: str
    zone: str
    availability_set: str
    update_domain: int | None
    power_state: str
    settings: PatchSettings

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Machine":
        return cls(**{**data, "settings": PatchSettings(**data["settings"])})


def fleet_of(user) -> list[Machine]:
    """The VMs the user sees, read once (values, not models)."""
    machines = []
    for vm in access.vms_for(user).select_related("resource_group").order_by("pk").iterator(chunk_size=5000):
        machines.append(
            Machine(
                subscription=str(vm.resource_group.subscription_id),
                region=vm.location,
                product=vm.product,
                sku=vm.image_sku,
                capable=vm.hotpatch_capable and not regions.is_government(vm.location),
                time_zone=vm.time_zone,
                zone=vm.zone,
                availability_set=f"{vm.resource_group_id}:{vm.availability_set}" if vm.availability_set else "",
                update_domain=vm.update_domain,
                power_state=vm.power_state if vm.power_state != VirtualMachine.PowerState.STARTING else "running",
                settings=vm.patch_settings,
            )
        )
    return machines


def scenario_fleet(machines: list[Machine], scenario: str, start: datetime) -> fleets.Fleet:
    """The machines as a simulation fleet; in "all_enrolled" every capable one is Azure-orchestrated with hotpatch."""
    specs, off = [], {}
    subscriptions = {sid: i for i, sid in enumerate(dict.fromkeys(m.subscription for m in machines))}
    for n, m in enumerate(machines):
        settings_ = m.settings
        if scenario == "all_enrolled" and m.capable and not settings_.enable_hotpatching:
            settings_ = settings_.with_changes(
                patch_mode="AutomaticByPlatform",
                enable_hotpatching=True,
                assessment_mode="AutomaticByPlatform",
                provision_vm_agent=True,
                enable_automatic_updates=True,
            )
        name = f"vm{n:06d}"  # names are unique per resource group only; the simulation keys by name
        specs.append(
            fleets.VMSpec(
                subscription=subscriptions[m.subscription],
                resource_group=f"rg-{m.region}",
                region=m.region,
                name=name,
                product=m.product,
                sku=m.sku,
                time_zone=m.time_zone,
                settings=settings_,
                zone=m.zone,
                availability_set=m.availability_set[:80],
                update_domain=m.update_domain,
            )
        )
        if m.power_state != "running":
            off[name] = m.power_state
    return fleets.Fleet(
        subscriptions=[(sid, f"What-if {i}") for sid, i in subscriptions.items()], vms=specs, initially_off=off
    )


def compare(
    machines: list[Machine], first_day: date, days: int, *, schedule: dict | None = None, progress=None
) -> dict:
    """The scenarios over the same machines (a third on `schedule`, a schedule_window, when given);
    the JSON the page draws and the downloads hold.

    Each scenario runs in a process of its own (`manage.py what_if_scenario`, reading the machines on
    stdin, printing its progress and then its summary on stdout), all at once: the simulations share
    nothing, and on two cores the year takes half the time.
    """
    schedule = schedule or {}
    keys = scenario_keys(schedule)
    start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    end = start + timedelta(days=days)
    began = time.perf_counter()
    payload = json.dumps(
        {
            "start": start.date().isoformat(),
            "days": days,
            "schedule": schedule,
            "machines": [m.to_json() for m in machines],
        }
    )
    manage = str(Path(settings.BASE_DIR) / "manage.py")
    processes = {
        scenario: subprocess.Popen(
            [sys.executable, manage, "what_if_scenario", scenario],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=settings.BASE_DIR,
        )
        for scenario in keys
    }
    try:
        for process in processes.values():
            process.stdin.write(payload)
            process.stdin.close()
        scenarios = _collect(processes, progress, schedule)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()
    return {
        "start": start.date().isoformat(),
        "end": end.date().isoformat(),
        "vms": len(machines),
        "capable": sum(1 for m in machines if m.capable),
        "enrolled_now": sum(1 for m in machines if m.settings.enable_hotpatching),
        "runtime_seconds": round(time.perf_counter() - began, 1),
        "months": month_labels(start, end),
        "schedule": schedule,
        "scenarios": {key: {"label": scenario_label(key, schedule), **scenarios[key]} for key in keys},
    }


def _collect(processes: dict[str, subprocess.Popen], progress, schedule: dict) -> dict[str, dict]:
    """Read the processes' lines ("progress 0.42", then "result {...}") as they come."""
    done: dict[str, float] = dict.fromkeys(processes, 0.0)
    results: dict[str, dict] = {}
    with selectors.DefaultSelector() as selector:
        for scenario, process in processes.items():
            selector.register(process.stdout, selectors.EVENT_READ, scenario)
        while selector.get_map():
            for key, _ in selector.select():
                scenario, line = key.data, key.fileobj.readline()
                if not line:
                    selector.unregister(key.fileobj)
                elif line.startswith("progress "):
                    done[scenario] = float(line.split()[1])
                    if progress is not None:
                        progress(sum(done.values()) / len(done))
                elif line.startswith("result "):
                    results[scenario] = json.loads(line[len("result ") :])
    for scenario, process in processes.items():
        if process.wait() != 0 or scenario not in results:
            label = scenario_label(scenario, schedule)
            raise RuntimeError(f"The '{label}' simulation stopped (exit code {process.returncode}).")
    return results


def run_scenario(
    machines: list[Machine], scenario: str, first_day: date, days: int, progress, schedule: dict | None = None
) -> dict:
    """One scenario in a throwaway in-memory database: the fleet simulation, summarised."""
    from .catalog import ensure_catalog

    start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    end = start + timedelta(days=days)
    with throwaway_database():
        ensure_catalog(until=end.date() + timedelta(days=31))
        simulation = Simulation(start, end, scenario_fleet(machines, scenario, start))
        simulation.create_fleet()
        if scenario == SCHEDULED:  # every Azure-orchestrated machine on the schedule's window
            problems = simulation.schedule(
                1.0,
                schedule["recur_every"],
                time_zone=schedule["time_zone"],
                duration=schedule["duration"],
                start_time=schedule["start_time"],
                install_patches=schedule["install_patches"],
            )
            if problems:
                raise RuntimeError(f"The schedule of {schedule['name']} cannot be simulated: {problems}")
        simulation.run(on_round=lambda moment: progress((moment - start) / (end - start)))
        return summarize_scenario(simulation.report(), start, end)


def month_labels(start: datetime, end: datetime) -> list[str]:
    months, day = [], start.date().replace(day=1)
    while day < end.date():
        months.append(f"{day:%Y-%m}")
        day = (day + timedelta(days=32)).replace(day=1)
    return months


def summarize_scenario(report: dict, start: datetime, end: datetime) -> dict:
    """The three figures, from the simulation's per-VM report."""
    rows = report["vms"]
    n = len(rows) or 1
    days = [start.date() + timedelta(days=i) for i in range((end - start).days)]
    years = max(sum(1 / (366 if calendar_module.isleap(d.year) else 365) for d in days), 1 / 365)
    windows: dict[str, int] = defaultdict(int)
    for row in rows:
        for month in row["reboot_months"]:
            windows[month] += 1
    reboots = sum(row["reboots"] for row in rows)
    return {
        "enrolled": sum(1 for row in rows if row["hotpatch_enrolled"]),
        "reboots": reboots,
        "reboots_per_machine_year": round(reboots / n / years, 2),
        "days_out_of_compliance": sum(row["days_out_of_compliance"] for row in rows),
        "machines_out_of_compliance": sum(1 for row in rows if row["days_out_of_compliance"]),
        "days_out_of_compliance_per_machine": round(sum(row["days_out_of_compliance"] for row in rows) / n, 2),
        "machines_needing_a_window": {month: windows.get(month, 0) for month in month_labels(start, end)},
        "products": sorted({row["product"] for row in rows}),
    }


def product_names() -> dict[str, str]:
    return {code: product.name for code, product in images.PRODUCTS.items()}
