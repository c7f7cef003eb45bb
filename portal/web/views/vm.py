"""One VM: its Overview and Guest + host updates pages, create and delete."""

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from patching import services
from portal.web.forms import TIME_ZONES, CreateVmForm, DeleteVmForm, PatchSettingsForm
from vms import access, clock, features, images, regions
from vms.models import (
    Role,
    VirtualMachine,
)
from vms.patch_settings import Problem, defaults_for_image

from .common import HtmxHttpRequest, get_vm, in_flight_operations, partial_for, portal_view, vm_context
from .maintenance import vm_maintenance_context


@require_GET
@portal_view
def overview(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    vm, can_act = get_vm(request, pk)
    context = vm_context(request, vm, can_act, "overview")
    try:
        local_now = clock.now().astimezone(ZoneInfo(vm.time_zone))
    except (ZoneInfoNotFoundError, ValueError):
        local_now = None
    context.update(local_now=local_now, running=in_flight_operations(vm))
    return render(request, "vms/overview.html", context)


def hotpatch_prerequisites(vm: VirtualMachine) -> tuple[list[str], bool]:
    """What keeps hotpatch from being turned on now (the services' own rules), and whether the preview gate is one."""
    if vm.enable_hotpatching or not vm.hotpatch_capable:
        return [], False
    wanted = vm.patch_settings.with_changes(enable_hotpatching=True, patch_mode="AutomaticByPlatform")
    problems = [p.message for p in services.check_patch_settings(vm, wanted)]
    gate = bool(features.preview_gate_problems(vm.resource_group.subscription))
    return problems, gate


def _seen(version: int | None) -> list[int] | None:
    """The version the page was rendered from, as the versions the save accepts (None: any)."""
    return None if version is None else [version]


@require_http_methods(["GET", "POST"])
@portal_view
def guest_updates(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """VM › Guest + host updates: the guest OS update settings, editable, and the hotpatch card."""
    vm, can_act = get_vm(request, pk, act=request.method == "POST")
    if request.method == "POST":
        form = PatchSettingsForm.for_vm(vm, data=request.POST)
        if form.is_valid():
            try:
                _, problems = services.update_virtual_machine(
                    vm.pk, form.changes(), versions=_seen(form.cleaned_data["version"])
                )
            except VirtualMachine.DoesNotExist:
                raise Http404(f"The virtual machine {vm.name} was deleted.") from None
            except services.StaleVersion:
                vm = get_object_or_404(VirtualMachine, pk=vm.pk)  # as it is now (or gone since: 404)
                form = PatchSettingsForm.current(vm)  # the settings as they are now, to start over from
                form.add_error(
                    None,
                    "Not saved: someone else changed these settings after you opened this page. "
                    "They are shown as they are now; make your change again and save.",
                )
            else:
                if not problems:
                    messages.success(request, f"Saved the guest OS update settings of {vm.name}.")
                    return redirect("vms:guest-updates", vm.pk)
                form.add_problems(problems)
    else:
        form = PatchSettingsForm.for_vm(vm)
    if not can_act:
        for field in form.fields.values():
            field.disabled = True  # a Reader sees the settings, greyed out
    prerequisites, gate = hotpatch_prerequisites(vm)
    context = vm_context(request, vm, can_act, "guest-updates")
    context.update(form=form, prerequisites=prerequisites, preview_gate=gate)
    context.update(vm_maintenance_context(vm))
    return render(request, "vms/guest_updates.html", context)


@require_http_methods(["GET", "POST"])
@portal_view
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Delete a VM, after typing its name on a confirmation page."""
    vm, can_act = get_vm(request, pk, act=True)
    form = DeleteVmForm(request.POST or None, vm=vm)
    if request.method == "POST" and form.is_valid():
        name = vm.name
        services.delete_virtual_machine(vm)
        messages.success(request, f"Deleted the virtual machine {name}. Its update history is kept.")
        return redirect("vms:list")
    context = vm_context(request, vm, can_act, "delete")
    context.update(form=form, running=in_flight_operations(vm))
    return render(request, "vms/delete.html", context)


# --- Create a VM ----------------------------------------------------------------------------------


def creatable_subscriptions(user):
    subscriptions = access.subscriptions_for(user)
    if not user.is_superuser:
        subscriptions = subscriptions.filter(
            role_assignments__user=user, role_assignments__role__in=[Role.CONTRIBUTOR, Role.OWNER]
        )
    return subscriptions.order_by("display_name")


def guest_os_updates_context(form: CreateVmForm) -> dict:
    """What the Management › Guest OS updates section offers for the chosen image, region and subscription."""
    sku = form.selected("image_sku", images.ALL_SKUS[0]).lower()
    region = regions.normalize_region(form.selected("location", "westeurope")) or "westeurope"
    product = images.product_for_image(images.PUBLISHER, images.OFFER, sku)
    capable = images.is_hotpatch_capable(images.PUBLISHER, images.OFFER, sku)
    government = regions.is_government(region)
    subscription = form.fields["subscription"].queryset.filter(pk=form.selected("subscription") or None).first()
    if subscription is None:
        subscription = form.fields["subscription"].queryset.first()
    gate = features.preview_gate_problems(subscription) if subscription and capable and not government else []
    return {
        "hotpatch_offered": capable and not government,
        "hotpatch_capable": capable,
        "government": government,
        "region_name": regions.REGIONS.get(region, region),
        "chosen_product": product,
        "chosen_subscription": subscription,
        "gate_problems": gate,
    }


def initial_for(sku: str, region: str) -> dict:
    """The seed's defaults for a new VM of this image in this region."""
    defaults = defaults_for_image(images.PUBLISHER, images.OFFER, sku, region)
    return {
        "patch_mode": defaults.patch_mode,
        "enable_hotpatching": defaults.enable_hotpatching,
        "assessment_mode": defaults.assessment_mode,
        "reboot_setting": defaults.reboot_setting,
    }


@require_http_methods(["GET", "POST"])
@portal_view
def create(request: HtmxHttpRequest) -> HttpResponse:
    """Create a virtual machine (the seed's getting-started path) through services.create_virtual_machine."""
    subscriptions = creatable_subscriptions(request.user)
    if not subscriptions.exists():
        raise PermissionDenied("Creating a virtual machine needs the Contributor or Owner role on a subscription.")
    if request.method == "POST" and "apply_defaults" not in request.POST:
        form = CreateVmForm(request.POST, subscriptions=subscriptions)
        if form.is_valid():
            data = form.cleaned_data
            try:
                vm, problems = services.create_virtual_machine(
                    resource_group=data["resource_group"],
                    name=data["name"].strip(),
                    location=data["location"],
                    image_sku=data["image_sku"],
                    size=data["size"],
                    time_zone=data["time_zone"].strip(),
                    zone=data["zone"],
                    availability_set=data["availability_set"].strip(),
                    patch_settings=form.new_patch_settings(),
                )
            except IntegrityError:  # the same name, created by another request meanwhile
                vm, problems = (
                    None,
                    [Problem("name", f"A VM named '{data['name'].strip()}' was just created by someone else.")],
                )
            if vm is not None:
                messages.success(request, f"Created the virtual machine {vm.name}. Its first assessment is running.")
                return redirect("vms:overview", vm.pk)
            form.add_problems(problems)
    else:
        # A first visit, a no-JS "Apply image defaults", or htmx refreshing the Guest OS updates section.
        source = request.POST if request.method == "POST" else request.GET
        sku = source.get("image_sku") or CreateVmForm.base_fields["image_sku"].initial
        region = regions.normalize_region(source.get("location", "")) or "westeurope"
        initial = {**{k: v for k, v in source.items() if k != "csrfmiddlewaretoken"}, **initial_for(sku, region)}
        form = CreateVmForm(initial=initial, subscriptions=subscriptions)
    section = guest_os_updates_context(form)
    if form.is_bound and not section["hotpatch_offered"]:
        # Not offered for this image or region: show it off, whatever was ticked before the image changed.
        form.data = form.data.copy()
        form.data.pop("enable_hotpatching", None)
    context = {"form": form, "time_zones": TIME_ZONES, **section}
    template = "vms/create.html"
    if partial_for(request, ("guest-os-updates",)):
        template += "#guest-os-updates"
    return render(request, template, context)
