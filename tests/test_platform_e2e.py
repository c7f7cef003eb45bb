"""End to end: a real Celery worker and two real beats over Redis, on PostgreSQL, patch a small fleet.

Beat sends the automatic-patching and periodic-assessment rounds every two seconds, twice over (two
beats started by mistake); the worker runs the rounds and the installations they queue, in real time
(WORKER_SETTINGS speeds the simulated work up). The VMs' time zones are picked so that the off-peak
window (23:00-05:00 local by default) is open now for most of them, and closed for one.
"""

from datetime import UTC, datetime

from patching.models import GuestState, Operation, OperationKind, StartedBy
from patching.orchestrator import engine
from tests.factories import load_catalog, make_resource_group, make_subscription, make_vm
from tests.helpers import wait_for
from vms.patch_settings import PatchSettings

BEAT = {"PORTAL_PATCH_BEAT_SECONDS": "2", "PORTAL_ASSESSMENT_BEAT_SECONDS": "2"}


def zone_where_it_is(hour: int, now: datetime) -> str:
    """An IANA zone (Etc/GMT±N) whose local time is `hour`:MM now."""
    offset = (hour - now.hour) % 24
    offset = offset - 24 if offset > 14 else offset
    return f"Etc/GMT{-offset:+d}" if offset else "UTC"  # Etc/GMT-3 is three hours ahead of UTC


def platform_installations():
    return Operation.objects.filter(kind=OperationKind.INSTALLATION, started_by=StartedBy.PLATFORM)


AZURE_ORCHESTRATED = PatchSettings(patch_mode="AutomaticByPlatform", assessment_mode="AutomaticByPlatform")


def test_a_worker_and_beat_patch_a_small_fleet_in_its_window_zone_by_zone(start_beat):
    load_catalog()
    now = datetime.now(UTC)
    window = engine.current_rules().window  # the worker's: the same environment
    opens = window.start // 60
    night = zone_where_it_is((opens + 1) % 24, now)  # an hour or two into the window
    noon = zone_where_it_is((opens + window.length // 60 + 4) % 24, now)  # hours after it closed

    def vm(name, **fields):
        rg = make_resource_group(make_subscription(), location="westeurope")
        fields.setdefault("time_zone", night)
        return make_vm(resource_group=rg, name=name, now=now, **fields)

    # Whatever today's date, these need something: the month's .NET update is not part of the image.
    zoned = [vm(f"web-{z}", zone=str(z), hotpatch=False, settings=AZURE_ORCHESTRATED) for z in (1, 2, 3)]
    monthly = vm("file-01", product="ws2022", settings=AZURE_ORCHESTRATED)
    # Enrolled: what it needs depends on the calendar (a hotpatch, or nothing but what it holds).
    enrolled = vm("hp-01")
    daytime = vm("app-01", time_zone=noon)
    manual = vm("dc-01", product="ws2019", settings=PatchSettings(patch_mode="Manual", enable_automatic_updates=False))
    fleet = {v.id: v for v in engine.snapshot(now, engine.current_rules(), engine.load_catalogs()).fleet}
    patched = [*zoned, monthly] + ([enrolled] if fleet[enrolled.pk].need.installs else [])
    assert all(fleet[v.pk].need.installs for v in (*zoned, monthly))

    start_beat(**BEAT)
    start_beat(**BEAT)  # a second beat, started by mistake

    def all_patched():
        done = platform_installations().filter(finished_at__isnull=False, vm__in=patched)
        return done.count() == len(patched)

    wait_for(all_patched, timeout=120, message="the automatic installations of the VMs in their window")
    wait_for(
        lambda: (
            set(GuestState.objects.filter(vm__in=patched).values_list("patch_decision", flat=True))
            <= {"up_to_date", "held_for_baseline", "retry"}  # retry: a patch failed (the simulated rate)
        ),
        timeout=30,
        message="the next round to see them done",
    )

    installs = list(platform_installations().select_related("vm"))
    assert sorted(op.vm.name for op in installs) == sorted(v.name for v in patched)  # each once, two beats or not
    for op in installs:
        assert op.parameters["windowsParameters"]["classificationsToInclude"] == ["Critical", "Security"]
        assert op.error_code in ("", "PatchInstallationFailed"), op.error_message  # a patch may fail, not the run
    # Zones one after the other: no two zones' installations overlap.
    spans = sorted((op.started_at, op.finished_at, op.vm.zone) for op in installs if op.vm.zone)
    assert len(spans) == 3
    for (_, first_end, first_zone), (second_start, _, second_zone) in zip(spans, spans[1:], strict=False):
        assert first_zone != second_zone and first_end <= second_start, spans
    # On the enrolled VM, a hotpatch goes in without a reboot; its .NET update waits for the baseline month.
    for op in installs:
        if op.vm_id == enrolled.pk and not fleet[enrolled.pk].need.reboots and not op.failed_count:
            assert op.reboot_status == "NotNeeded" and "hotpatch" in fleet[enrolled.pk].need.description

    # Why the others were not patched; and periodic assessment came round too.
    assert GuestState.objects.get(pk=daytime.pk).patch_decision == "outside_window"
    assert GuestState.objects.get(pk=manual.pk).patch_decision == "mode_manual"
    assert not platform_installations().filter(vm__in=[daytime, manual]).exists()
    wait_for(
        lambda: Operation.objects.filter(
            kind=OperationKind.ASSESSMENT, started_by=StartedBy.PLATFORM, vm=daytime
        ).exists(),
        timeout=30,
        message="a periodic assessment",
    )
