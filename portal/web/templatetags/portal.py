"""Template filters of the portal pages: labels Azure users know, status tones, times in the viewer's zone."""

from datetime import date, datetime
from functools import partial

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince

from patching.vocabulary import HotpatchStatus, PatchState, RebootBehavior
from vms import clock
from vms.vocabulary import AssessmentMode, PatchMode, RebootSetting, RegistrationState, label

register = template.Library()

# Every status word the portal shows, and the colour family it is drawn in.
TONES = {
    "ok": {"Enabled", "Succeeded", "Registered", "running", "Installed", "Completed", "NotNeeded", "none"},
    "warn": {
        "ActionRequired",
        "CompletedWithWarnings",
        "Pending",
        "Required",
        "available",
        "reboot",
        "Started",
        "starting",
    },
    "error": {"Failed"},
    "busy": {"PendingEvaluation", "InProgress", "NotStarted", "Registering", "Unregistering"},
}


# Product names short enough for a table column.
PRODUCT_SHORT = {
    "ws2025-azure": "2025 Azure Edition",
    "ws2022-azure": "2022 Azure Edition",
    "ws2022": "2022 Datacenter",
    "ws2019": "2019 Datacenter",
}


@register.filter
def product_short(code: str) -> str:
    return PRODUCT_SHORT.get(code, code)


# The labels of the domain's vocabularies (vms/vocabulary.py, patching/vocabulary.py), for values a
# template has as plain strings; a value that is not one of the choices shows as it is.
LABELLED = {
    "patch_mode_label": PatchMode,
    "assessment_mode_label": AssessmentMode,
    "reboot_setting_label": RebootSetting,
    "reboot_behavior_label": RebootBehavior,
    "hotpatch_label": HotpatchStatus,
    "patch_state_label": PatchState,
    "registration_label": RegistrationState,
}
for _name, _choices in LABELLED.items():
    register.filter(_name, partial(label, _choices))


@register.filter
def tone(value) -> str:
    """The CSS tone of a status word: ok, warn, error, busy or neutral."""
    for name, words in TONES.items():
        if str(value) in words:
            return name
    return "neutral"


@register.filter
def kb(value) -> str:
    return f"KB{value}" if value else ""


def _local(value: datetime) -> datetime:
    return timezone.localtime(value) if timezone.is_aware(value) else value


@register.filter
def when(value, style: str = "") -> str:
    """A moment in the viewer's time zone, machine-readable in a <time> element.

    `|when` gives "2026-01-13 14:02"; `|when:"tz"` adds the zone's abbreviation ("14:02 CET");
    `|when:"date"` the date only.
    """
    if not value:
        return "—"
    if isinstance(value, date) and not isinstance(value, datetime):
        return format_html('<time datetime="{}">{}</time>', value.isoformat(), value.strftime("%Y-%m-%d"))
    local = _local(value)
    if style == "date":
        text = local.strftime("%Y-%m-%d")
    else:
        text = local.strftime("%Y-%m-%d %H:%M")
        if style == "tz":
            text += f" {local.tzname()}"
    title = f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()} ({timezone.get_current_timezone_name()})"
    return format_html('<time datetime="{}" title="{}">{}</time>', value.isoformat(), title, text)


@register.filter
def ago(value) -> str:
    """'2 hours ago', with the exact local time on hover."""
    if not value:
        return "Never"
    local = _local(value)
    now = clock.now()
    if value > now:
        text = f"in {timesince(now, value, depth=1)}"
    else:
        text = f"{timesince(value, now, depth=1)} ago"
    text = text.replace("\xa0", " ")
    if text.startswith("0 minutes"):
        text = "just now"
    title = f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"
    return format_html('<time datetime="{}" title="{}">{}</time>', value.isoformat(), title, text)


@register.filter
def duration(value) -> str:
    """A timedelta as '4 min 10 s' / '1 h 5 min'."""
    if value is None:
        return "—"
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {seconds} s"
    return f"{seconds} s"


def _chosen(query):
    """A copy of the query string without its empty parameters (a GET form sends every field)."""
    query = query.copy()
    for key in [k for k, v in query.items() if not v.strip()]:
        del query[key]
    return query


@register.simple_tag(takes_context=True)
def query_with(context, **changes) -> str:
    """The current query string with some parameters changed (None or "" drops one); for sort and page links."""
    query = _chosen(context["request"].GET)
    for key, value in changes.items():
        if value in (None, ""):
            query.pop(key, None)
        else:
            query[key] = value
    encoded = query.urlencode()
    return f"?{encoded}" if encoded else "?"


@register.simple_tag(takes_context=True)
def query_drop(context, *names: str) -> str:
    """The current query string without these parameters (and without the page's number or position)."""
    query = _chosen(context["request"].GET)
    for name in (*names, "page", "after", "before"):
        query.pop(name, None)
    encoded = query.urlencode()
    return f"?{encoded}" if encoded else "?"
