"""Sandbox: import your own fleet (/sandbox/import/): upload, preview, confirm, result.

The upload is parsed at once (a file that is not `az vm list -d -o json` output or a Resource Graph
CSV is refused, naming entry and field) and its entries kept server-side in a FleetImport row;
the preview plans them against the inventory as it is, and the confirmation (POST) plans them again
and imports them, once: the row is claimed by a compare-and-swap on `imported_at`.
"""

from django import forms
from django.conf import settings
from django.contrib import messages
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from patching import services
from vms import clock, fleet_import
from vms.models import FleetImport

from .common import portal_view

SHOWN_ROWS = 200  # the preview lists this many VMs of each kind; the counts are of all of them


class UploadForm(forms.Form):
    file = forms.FileField(
        label="Fleet file",
        help_text="The output of `az vm list -d -o json`, or a Resource Graph CSV export of your VMs.",
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > settings.PORTAL_IMPORT_MAX_BYTES:
            raise forms.ValidationError(
                f"The file is {filesizeformat(upload.size)}; the page takes up to "
                f"{filesizeformat(settings.PORTAL_IMPORT_MAX_BYTES)} (use manage.py import_fleet for larger fleets)."
            )
        return upload


@portal_view
@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    problems = []
    form = UploadForm(request.POST, request.FILES) if request.method == "POST" else UploadForm()
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            entries = fleet_import.parse(upload.read())
        except fleet_import.FleetFileError as error:
            problems = error.problems
        else:
            pending = FleetImport.objects.create(
                user=request.user,
                filename=(upload.name or "fleet")[:200],
                entries=[entry.to_json() for entry in entries],
            )
            # Previews never confirmed are dropped when their owner uploads again.
            FleetImport.objects.filter(user=request.user, imported_at=None).exclude(pk=pending.pk).delete()
            return redirect("sandbox-import-preview", pk=pending.pk)
    context = {
        "form": form,
        "problems": problems,
        "imports": FleetImport.objects.filter(user=request.user).exclude(imported_at=None).defer("entries")[:10],
        "nav": "sandbox-import",
    }
    return render(request, "sandbox/import.html", context, status=400 if problems else 200)


@portal_view
@require_http_methods(["GET"])
def preview(request: HttpRequest, pk: int) -> HttpResponse:
    pending = get_object_or_404(FleetImport, pk=pk, user=request.user)  # another user's: 404
    context = {"pending": pending, "nav": "sandbox-import", "shown": SHOWN_ROWS}
    if pending.imported_at is None:
        plan = fleet_import.plan([fleet_import.Entry.from_json(e) for e in pending.entries], request.user)
        context |= {
            "counts": plan.counts(),
            "created": plan.created[:SHOWN_ROWS],
            "refused": plan.refused[:SHOWN_ROWS],
            "unknown_images": plan.unknown_images[:SHOWN_ROWS],
        }
    return render(request, "sandbox/import_preview.html", context)


@require_POST
@portal_view
def confirm(request: HttpRequest, pk: int) -> HttpResponse:
    pending = get_object_or_404(FleetImport, pk=pk, user=request.user)
    now = clock.now()
    try:
        with transaction.atomic():
            # imported_at is when it happened (real time); the VMs are created at the world's time.
            claimed = FleetImport.objects.filter(pk=pending.pk, imported_at=None).update(imported_at=timezone.now())
            if claimed:  # a second click (or a replayed POST) finds it imported and shows the result
                plan = fleet_import.plan([fleet_import.Entry.from_json(e) for e in pending.entries], request.user)
                vms = services.import_fleet(plan, request.user, now) if plan.created else []
                refused = [[row.entry.arm_id, row.refused] for row in plan.refused[:SHOWN_ROWS]]
                counts = plan.counts() | {"imported": len(vms), "refused_rows": refused}
                FleetImport.objects.filter(pk=pending.pk).update(result=counts, entries=[])
    except IntegrityError:  # someone created one of these VMs meanwhile: nothing was imported
        messages.error(
            request, "Some of these VMs were created meanwhile; nothing was imported. Check the preview again."
        )
    return redirect("sandbox-import-preview", pk=pending.pk)
