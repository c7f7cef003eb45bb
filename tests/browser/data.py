"""Test data shared by the portal's view tests (tests/test_ui_*.py) and its browser tests."""

from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone

from patching import services
from patching.models import GuestState, Operation, OperationKind, OperationStatus, StartedBy
from vms import images
from vms.models import ResourceGroup, VirtualMachine
from vms.patch_settings import defaults_for_image

PASSWORD = "correct horse battery"


def make_user(username: str, *, superuser: bool = False):
    user = get_user_model().objects.create_user(username=username, password=PASSWORD)
    if superuser:
        user.is_superuser = user.is_staff = True
        user.save()
    return user


def make_fleet(
    count: int,
    resource_group: ResourceGroup,
    *,
    product: str = "ws2022-azure",
    prefix: str = "node",
    now: datetime | None = None,
    history: bool = True,
) -> list[VirtualMachine]:
    """`count` VMs with provisioned guests in a few set-based queries (fast at 500), with a varied
    compliance summary and, if `history`, an installation and an assessment per VM in the last days."""
    now = now or timezone.now()
    sku = images.PRODUCTS[product].default_sku
    defaults = defaults_for_image(images.PUBLISHER, images.OFFER, sku, resource_group.location)
    vms = []
    for n in range(count):
        vm = VirtualMachine(
            resource_group=resource_group,
            name=f"{prefix}-{n:04d}",
            location=resource_group.location,
            zone=str(1 + n % 3),
            image_sku=sku,
            product=product,
            created_at=now - timedelta(days=40),
        )
        vm.apply_patch_settings(defaults)
        vms.append(vm)
    VirtualMachine.objects.bulk_create(vms)
    services.provision_guests(vms, now - timedelta(days=40))
    # A spread of compliance states, so every tile and badge has something to count.
    pks = [vm.pk for vm in vms]
    GuestState.objects.filter(pk__in=pks[0::4]).update(assessed_at=now - timedelta(hours=3), critical_security_count=2)
    GuestState.objects.filter(pk__in=pks[1::4]).update(assessed_at=now - timedelta(hours=5), other_count=1)
    GuestState.objects.filter(pk__in=pks[2::4]).update(assessed_at=now - timedelta(days=1), reboot_pending=True)
    if history:
        rows = []
        for i, vm in enumerate(vms):
            for kind, status, age in (
                (OperationKind.ASSESSMENT, OperationStatus.SUCCEEDED, timedelta(days=2)),
                (
                    OperationKind.INSTALLATION,
                    (OperationStatus.SUCCEEDED, OperationStatus.FAILED)[i % 2],
                    timedelta(days=3),
                ),
            ):
                rows.append(
                    Operation(
                        vm=vm,
                        subscription_id=resource_group.subscription_id,
                        vm_name=vm.name,
                        location=vm.location,
                        kind=kind,
                        status=status,
                        started_by=StartedBy.PLATFORM,
                        created_at=now - age,
                        started_at=now - age,
                        finished_at=now - age + timedelta(minutes=5),
                        installed_count=1 if kind == OperationKind.INSTALLATION else 0,
                    )
                )
        Operation.objects.bulk_create(rows)
    return vms


def run_now(vm: VirtualMachine, kind: str, *, user=None, parameters=None, minutes_ago: int = 10) -> Operation:
    """Start and run an operation in this process, on a simulated clock a few minutes back."""
    clock = timezone.now() - timedelta(minutes=minutes_ago)
    operation, _ = services.start_operation(
        vm,
        kind,
        user=user,
        started_by=StartedBy.USER if user else StartedBy.PLATFORM,
        parameters=parameters,
        now=clock,
        enqueue=False,
    )
    services.execute_operation(operation.pk, now=clock)
    return Operation.objects.get(pk=operation.pk)
