"""Which VMs a configuration's assignments put in scope: one query, whatever the fleet's size.

Static assignments name VMs; a dynamic scope is a subscription and a filter (resource groups,
locations, OS types, resource types, tags with Any/All), evaluated when it is asked, so a VM created
after the assignment is in scope at the next run.
"""

from django.db.models import Q, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.db.models.lookups import In, IsNull

from vms.models import VirtualMachine

VM_TYPE = "microsoft.compute/virtualmachines"
NOTHING = Q(pk__in=[])


def location_key(name: str) -> str:
    """'West Europe' and 'westeurope' are one region."""
    return "".join(str(name).split()).lower()


def filter_q(subscription_id, flt: dict, resource_group_id=None) -> Q:
    """The VMs of a subscription (or of one of its resource groups) a dynamic scope's filter matches
    (each criterion narrows)."""
    flt = flt or {}
    q = Q(resource_group__subscription_id=subscription_id)
    if resource_group_id is not None:
        q &= Q(resource_group_id=resource_group_id)
    groups = flt.get("resourceGroups") or []
    if groups:
        any_group = NOTHING
        for name in groups:
            any_group |= Q(resource_group__name__iexact=name)
        q &= any_group
    locations = flt.get("locations") or []
    if locations:
        q &= Q(location__in=[location_key(x) for x in locations])
    os_types = [str(x).lower() for x in flt.get("osTypes") or []]
    if os_types and "windows" not in os_types:  # every simulated VM runs Windows Server
        return NOTHING
    types = [str(x).lower() for x in flt.get("resourceTypes") or []]
    if types and VM_TYPE not in types:
        return NOTHING
    settings = flt.get("tagSettings") or {}
    tags = settings.get("tags") or {}
    if tags:
        each = []
        for key, values in tags.items():
            value = KeyTextTransform(key, "tags")
            each.append(Q(In(value, list(values))) if values else Q(IsNull(value, False)))
        if (settings.get("filterOperator") or "Any").lower() == "all":
            for part in each:
                q &= part
        else:
            any_tag = NOTHING
            for part in each:
                any_tag |= part
            q &= any_tag
    return q


def dynamic_matches(subscription_id, flt: dict, resource_group_id=None) -> QuerySet:
    return VirtualMachine.objects.filter(filter_q(subscription_id, flt, resource_group_id))


def in_scope(configuration) -> QuerySet:
    """Every VM a configuration's assignments (static and dynamic) put in scope now."""
    q = Q(maintenance_assignments__configuration=configuration)
    dynamic = configuration.assignments.filter(vm__isnull=True)
    for subscription_id, group_id, flt in dynamic.values_list("subscription_id", "resource_group_id", "filter"):
        q |= filter_q(subscription_id, flt, group_id)
    return VirtualMachine.objects.filter(pk__in=VirtualMachine.objects.filter(q).values("pk"))
