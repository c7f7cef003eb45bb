"""The sandbox page (/sandbox/): the clock, faults on demand, snapshots and reset (patching/sandbox.py).

The clock, region- and fleet-wide faults, snapshots and reset are installation-wide: only an
installation manager (vms.access.can_manage_installation) gets their forms, and a POST from anyone
else is refused with a message. Faults on one VM or subscription need Contributor there.
"""

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from patching import sandbox
from patching.models import FaultKind
from vms import access, clock, regions

from .common import portal_view

MAX_SNAPSHOT_BYTES = 200 * 1024 * 1024


class AdvanceForm(forms.Form):
    days = forms.FloatField(required=False, min_value=0.001, help_text="e.g. 35")
    to = forms.CharField(
        label="Or to",
        required=False,
        max_length=40,
        help_text="UTC, e.g. 2027-01-13T02:00",
        widget=forms.TextInput(attrs={"placeholder": "2027-01-13T02:00"}),
    )

    def clean_to(self):
        value = self.cleaned_data["to"].strip()
        if not value:
            return None
        try:
            return sandbox.parse_moment(value)
        except sandbox.SandboxError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self):
        data = super().clean()
        if not self.errors and (data.get("days") is None) == (data.get("to") is None):
            raise forms.ValidationError("Give a number of days or a moment to advance to (one of them).")
        return data


SCOPES = [("vm", "One VM"), ("subscription", "A subscription"), ("region", "A region"), ("fleet", "The whole fleet")]


class FaultForm(forms.Form):
    kind = forms.ChoiceField(choices=FaultKind.choices)
    scope = forms.ChoiceField(choices=SCOPES, initial="vm")
    vm = forms.CharField(label="VM name", required=False, max_length=64)
    subscription = forms.ChoiceField(required=False)
    region = forms.ChoiceField(required=False, choices=[("", "—"), *regions.REGION_CHOICES])
    kb = forms.CharField(label="KB", required=False, max_length=12, help_text="For 'KB fails': empty means every KB.")
    probability = forms.FloatField(required=False, min_value=0.0, max_value=1.0, help_text="0 < p ≤ 1")
    next_n = forms.IntegerField(
        label="Or the next N operations", required=False, min_value=1, max_value=sandbox.MAX_NEXT
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["subscription"].choices = [("", "—")] + [
            (str(s.pk), s.display_name) for s in access.subscriptions_for(user)
        ]

    def clean(self):
        data = super().clean()
        scope = data.get("scope")
        data["vm_obj"] = data["subscription_obj"] = None
        if scope == "vm":
            name = (data.get("vm") or "").strip()
            found = list(access.vms_for(self.user).select_related("resource_group").filter(name__iexact=name)[:2])
            if len(found) != 1:
                self.add_error(
                    "vm", "No VM of yours has that name." if not found else "Several of your VMs have that name."
                )
            else:
                data["vm_obj"] = found[0]
        elif scope == "subscription":
            chosen = access.subscriptions_for(self.user).filter(pk=data.get("subscription") or None).first()
            if chosen is None:
                self.add_error("subscription", "Choose one of your subscriptions.")
            data["subscription_obj"] = chosen
        elif scope == "region" and not data.get("region"):
            self.add_error("region", "Choose a region.")
        if scope != "region" and data.get("kind") == FaultKind.ROLLOUT_HALT:
            self.add_error("scope", "A rollout halt is per region.")
        return data


@never_cache
@portal_view
@require_GET
def sandbox_page(request: HttpRequest) -> HttpResponse:
    return _render(request, AdvanceForm(), FaultForm(user=request.user))


def _render(request, advance_form, fault_form, status=200):
    context = {
        "nav": "sandbox",
        "state": sandbox.status(),
        "manager": access.can_manage_installation(request.user),
        "advance_form": advance_form,
        "fault_form": fault_form,
        "faults": sandbox.faults_for(request.user).select_related("vm__resource_group"),
        "real_now": timezone.now(),
    }
    return render(request, "sandbox.html", context, status=status)


def _manager_or_refuse(request) -> bool:
    if access.can_manage_installation(request.user):
        return True
    messages.error(request, "Only an installation manager (a superuser, or Owner of every subscription) may do this.")
    return False


@portal_view
@require_POST
def advance(request: HttpRequest) -> HttpResponse:
    if not _manager_or_refuse(request):
        return redirect("sandbox")
    form = AdvanceForm(request.POST)
    if not form.is_valid():
        return _render(request, form, FaultForm(user=request.user), status=400)
    try:
        result = sandbox.advance(to=form.cleaned_data["to"], days=form.cleaned_data["days"])
    except sandbox.SandboxError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, result.message())
    return redirect("sandbox")


@portal_view
@require_POST
def realtime(request: HttpRequest) -> HttpResponse:
    if _manager_or_refuse(request):
        try:
            messages.success(request, sandbox.realtime())
        except sandbox.SandboxError as exc:
            messages.error(request, str(exc))
    return redirect("sandbox")


@portal_view
@require_POST
def add_fault(request: HttpRequest) -> HttpResponse:
    form = FaultForm(request.POST, user=request.user)
    if not form.is_valid():
        return _render(request, AdvanceForm(), form, status=400)
    data = form.cleaned_data
    try:
        fault = sandbox.add_fault(
            request.user,
            data["kind"],
            vm=data["vm_obj"],
            subscription=data["subscription_obj"],
            location=data["region"] if data["scope"] == "region" else "",
            kb=data["kb"],
            probability=data["probability"],
            next_n=data["next_n"],
        )
    except sandbox.SandboxError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Fault #{fault.pk} set: {fault}.")
    return redirect("sandbox")


@portal_view
@require_POST
def remove_fault(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        removed = sandbox.remove_fault(request.user, pk)
    except sandbox.SandboxError as exc:
        messages.error(request, str(exc))
    else:
        if removed:
            messages.success(request, f"Fault #{pk} removed.")
        else:
            messages.info(request, f"There is no fault #{pk} (any more).")
    return redirect("sandbox")


@never_cache
@portal_view
@require_GET
def export_snapshot(request: HttpRequest) -> HttpResponse:
    if not access.can_manage_installation(request.user):
        raise PermissionDenied("Only an installation manager may download the whole world.")
    response = HttpResponse(sandbox.dumps(sandbox.export_snapshot()), content_type="application/json")
    stamp = clock.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="hotpatch-sandbox-{stamp}.json"'
    return response


@portal_view
@require_POST
def import_snapshot(request: HttpRequest) -> HttpResponse:
    if not _manager_or_refuse(request):
        return redirect("sandbox")
    upload = request.FILES.get("snapshot")
    if upload is None:
        messages.error(request, "Choose a snapshot file to load.")
    elif upload.size > MAX_SNAPSHOT_BYTES:
        messages.error(request, "That file is larger than any snapshot this page loads (200 MB); use manage.py.")
    else:
        try:
            counts = sandbox.import_snapshot(sandbox.loads(upload.read()))
        except sandbox.SandboxError as exc:
            messages.error(request, str(exc))
        else:
            tables = counts["tables"]
            text = f"Snapshot loaded: {tables['vms.virtualmachine']} VMs, {tables['patching.operation']} operations."
            if counts["skippedRoleAssignments"]:
                text += " Role assignments of users who do not exist here were skipped."
            messages.success(request, text)
    return redirect("sandbox")


@portal_view
@require_POST
def reset(request: HttpRequest) -> HttpResponse:
    if _manager_or_refuse(request):
        try:
            messages.success(request, sandbox.reset(demo=request.POST.get("to") != "empty"))
        except sandbox.SandboxError as exc:
            messages.error(request, str(exc))
    return redirect("sandbox")
