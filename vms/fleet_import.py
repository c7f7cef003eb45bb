"""Importing a real fleet: the output of `az vm list -d -o json`, or an Azure Resource Graph CSV export.

Three steps, each stated once:
- `parse(data)`: the file, pure. Anything that is not that output refuses the whole file with
  `FleetFileError`, naming the entry and the field (nothing is created).
- `plan(entries, user)`: what would be created and which entries are refused, and why (Linux, a VM
  that already exists, a region the simulation has no data for, a subscription the user may not
  change). Reads the inventory set-based; writes nothing.
- `create_inventory(plan, owner, now)`: the subscriptions, roles, preview features, resource groups
  and VMs, in bulk. Only `patching.services.import_fleet` calls it, in the transaction that also
  provisions the guests.

The JSON is what the Azure CLI prints: the SDK's models flattened (no "properties" level), keys in
camelCase (`provisionVmAgent`), absent values as null, and with `-d` the extra `powerState`
("VM running"), `publicIps`, `fqdns`, `privateIps` and `macs`. ARM's own shape (a "properties"
level, `provisionVMAgent`, e.g. from `az rest` or this portal's API) is read too.

The CSV is what the Azure portal's Resource Graph Explorer downloads for
`resources | where type =~ 'microsoft.compute/virtualmachines'`: one row per VM with the columns
`id, name, type, tenantId, kind, location, resourceGroup, subscriptionId, managedBy, sku, plan,
properties, tags, identity, zones, extendedLocation`, the dynamic ones (properties, tags, zones) as
JSON text. Needed: id, name, location, properties; tags and zones are read when present. The power
state is `properties.extended.instanceView.powerState.code` ("PowerState/running").
"""

import csv
import io
import json
import re
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime

from django.db.models.functions import Lower

from . import images, regions
from .models import (
    RESOURCE_NAME_RE,
    FeatureRegistration,
    ProviderRegistration,
    ResourceGroup,
    Role,
    RoleAssignment,
    Subscription,
    VirtualMachine,
)
from .patch_settings import PatchSettings, validate
from .vocabulary import REBOOT_SETTING_UNKNOWN, AssessmentMode, PatchMode, RebootSetting

VM_ID_RE = re.compile(
    r"^/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<resource_group>[^/]+)"
    r"/providers/Microsoft\.Compute/virtualMachines/(?P<name>[^/]+)$",
    re.IGNORECASE,
)
AZURE_REGION_RE = re.compile(r"^[a-z][a-z0-9]{1,39}$")
AVAILABILITY_SET_ID_RE = re.compile(r"/providers/Microsoft\.Compute/availabilitySets/(?P<name>[^/]+)$", re.IGNORECASE)
# `az vm list -d` powerState ("VM running") and ARM's status code ("PowerState/running"), as the portal keeps them.
POWER_STATES = {
    "running": "running",
    "starting": "running",
    "stopped": "stopped",
    "stopping": "stopped",
    "deallocated": "deallocated",
    "deallocating": "deallocated",
}
# windowsConfiguration.timeZone holds Windows' zone ids; the simulation keeps IANA names (CLDR's mapping, the usual ones).
WINDOWS_TIME_ZONES = {
    "UTC": "UTC",
    "Coordinated Universal Time": "UTC",
    "GMT Standard Time": "Europe/London",
    "W. Europe Standard Time": "Europe/Berlin",
    "Romance Standard Time": "Europe/Paris",
    "Central Europe Standard Time": "Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw",
    "FLE Standard Time": "Europe/Kiev",
    "E. Europe Standard Time": "Europe/Chisinau",
    "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver",
    "Pacific Standard Time": "America/Los_Angeles",
    "Tokyo Standard Time": "Asia/Tokyo",
    "Singapore Standard Time": "Asia/Singapore",
    "China Standard Time": "Asia/Shanghai",
    "India Standard Time": "Asia/Calcutta",
    "AUS Eastern Standard Time": "Australia/Sydney",
}
RESOURCE_GRAPH_COLUMNS = ("id", "name", "location", "properties")
MAX_PROBLEMS = 50  # a file that is wrong everywhere is reported by its first problems
MAX_TAGS = 50  # Azure's limit per resource


@dataclass(frozen=True)
class FileProblem:
    entry: int | None  # 1-based position in the file (a CSV's data row), None for the file as a whole
    name: str  # the entry's name when it has one
    field: str  # the property path inside the entry, as the file spells it
    message: str

    def __str__(self) -> str:
        where = f"entry {self.entry}" + (f" ({self.name})" if self.name else "") if self.entry else "the file"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class FleetFileError(Exception):
    """The file is not `az vm list` output or a Resource Graph export; nothing was created."""

    def __init__(self, problems: list[FileProblem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


@dataclass(frozen=True)
class Entry:
    """One VM as the file describes it, checked for shape (not yet against the inventory)."""

    index: int
    subscription_id: str
    resource_group: str
    name: str
    location: str  # as the file spells it; plan() normalises it
    vm_id: str
    size: str
    os_type: str  # "Windows" or "Linux"
    image_publisher: str
    image_offer: str
    image_sku: str
    image_version: str
    image_id: str  # a gallery or custom image's resource id (then publisher/offer/sku are empty)
    zone: str
    availability_set: str
    tags: dict
    power_state: str  # running, stopped, deallocated; "" when the file has none (`az vm list` without -d)
    time_zone: str
    settings: dict  # PatchSettings' fields

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/virtualMachines/{self.name}"
        )

    @property
    def patch_settings(self) -> PatchSettings:
        return PatchSettings(**self.settings)

    @property
    def image(self) -> str:
        if self.image_id:
            return self.image_id
        if self.image_publisher:
            return f"{self.image_publisher}:{self.image_offer}:{self.image_sku}"
        return "no image reference"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Entry":
        return cls(**data)


# --- Parsing: the file, pure -----------------------------------------------------------------------


def parse(data: bytes) -> list[Entry]:
    """The VMs of an `az vm list -d -o json` file or a Resource Graph CSV export; FleetFileError otherwise."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FleetFileError([FileProblem(None, "", "", "The file is not UTF-8 text.")]) from None
    if "\x00" in text:
        raise FleetFileError([FileProblem(None, "", "", "The file is not text (it contains NUL characters).")])
    stripped = text.lstrip()
    if not stripped:
        raise FleetFileError([FileProblem(None, "", "", "The file is empty.")])
    if stripped[0] in "[{":
        return _parse_json(stripped)
    return _parse_resource_graph_csv(text)


def _parse_json(text: str) -> list[Entry]:
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        message = f"Not valid JSON: {error}." if isinstance(error, json.JSONDecodeError) else "Nested too deeply."
        raise FleetFileError([FileProblem(None, "", "", message)]) from None
    if isinstance(document, dict) and isinstance(document.get("value"), list):
        document = document["value"]  # ARM's list envelope (az rest, the REST API)
    if not isinstance(document, list):
        raise FleetFileError(
            [FileProblem(None, "", "", "Expected a JSON array of VMs, as `az vm list -d -o json` prints it.")]
        )
    return _entries(document)


def _parse_resource_graph_csv(text: str) -> list[Entry]:
    try:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise FleetFileError([FileProblem(None, "", "", f"Neither JSON nor CSV: {error}.")]) from None
    header = rows[0].keys() if rows else csv.DictReader(io.StringIO(text)).fieldnames or []
    lower = {(name or "").strip().lower(): name for name in header}
    missing = [column for column in RESOURCE_GRAPH_COLUMNS if column.lower() not in lower]
    if missing:
        raise FleetFileError(
            [
                FileProblem(
                    None,
                    "",
                    "",
                    "Neither `az vm list -d -o json` output nor a Resource Graph CSV export: the CSV has no "
                    f"column {', '.join(missing)}.",
                )
            ]
        )
    problems: list[FileProblem] = []
    documents = []
    for index, row in enumerate(rows, start=1):
        if None in row:  # more cells than columns
            problems.append(
                FileProblem(index, row.get(lower["name"]) or "", "", "The row has more cells than columns.")
            )
            continue
        document = {"id": row[lower["id"]], "name": row[lower["name"]], "location": row[lower["location"]]}
        for column in ("properties", "tags", "zones"):
            cell = (row.get(lower.get(column, ""), "") or "").strip()
            if not cell:
                continue
            try:
                document[column] = json.loads(cell)
            except (json.JSONDecodeError, RecursionError):
                problems.append(FileProblem(index, document["name"], column, "is not JSON."))
        documents.append(document)
    if problems:
        raise FleetFileError(problems[:MAX_PROBLEMS])
    return _entries(documents)


def _entries(documents: list) -> list[Entry]:
    if not documents:
        raise FleetFileError([FileProblem(None, "", "", "The file lists no VMs.")])
    problems: list[FileProblem] = []
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for index, document in enumerate(documents, start=1):
        reader = _Reader(index, document)
        entry = reader.entry()
        if reader.problems:
            problems += reader.problems
        elif entry is not None:
            key = entry.arm_id.lower()
            if key in seen:
                problems.append(FileProblem(index, entry.name, "id", f"repeats the id of entry {seen[key]}."))
            else:
                seen[key] = index
                entries.append(entry)
        if len(problems) >= MAX_PROBLEMS:
            break
    if problems:
        raise FleetFileError(problems[:MAX_PROBLEMS])
    return entries


class _Reader:
    """Reads one entry, collecting every field that is wrong."""

    def __init__(self, index: int, document):
        self.index = index
        self.document = document
        self.name = document.get("name") if isinstance(document, dict) and isinstance(document.get("name"), str) else ""
        self.problems: list[FileProblem] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(FileProblem(self.index, self.name, path, message))

    def get(self, obj, path: str, kind, *, required: bool = False, default=None):
        """obj[path] (dotted), of `kind`; null/absent is `default` unless required."""
        value = obj
        for key in path.split("."):
            if not isinstance(value, dict):
                value = None
                break
            value = value.get(key)
        if value is None:
            if required:
                self.problem(path, "is missing.")
            return default
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = {str: "a string", bool: "true or false", dict: "an object", list: "an array", int: "a number"}
            self.problem(path, f"must be {names.get(kind, kind.__name__)}, not {json.dumps(value)[:60]}.")
            return default
        return value

    def entry(self) -> Entry | None:
        document = self.document
        if not isinstance(document, dict):
            self.problem("", "must be an object describing a VM.")
            return None
        # The CLI flattens ARM's "properties"; ARM and Resource Graph keep them one level down.
        has_properties = isinstance(document.get("properties"), dict)
        props = document["properties"] if has_properties else document
        prefix = "properties." if has_properties else ""

        arm_id = self.get(document, "id", str, required=True)
        name = self.get(document, "name", str, required=True)
        location = self.get(document, "location", str, required=True)
        kind = self.get(document, "type", str)
        if kind is not None and kind.lower() != "microsoft.compute/virtualmachines":
            self.problem("type", f"is '{kind}', not Microsoft.Compute/virtualMachines.")
        subscription_id = resource_group = ""
        if arm_id is not None:
            match = VM_ID_RE.match(arm_id)
            if not match:
                self.problem(
                    "id",
                    "must be a VM's resource id: /subscriptions/{id}/resourceGroups/{group}/providers/"
                    "Microsoft.Compute/virtualMachines/{name}.",
                )
            else:
                try:
                    subscription_id = str(uuid.UUID(match["subscription"]))
                except ValueError:
                    self.problem("id", f"names subscription '{match['subscription']}', which is not a GUID.")
                resource_group = match["resource_group"]
                if name is not None and match["name"].lower() != name.lower():
                    self.problem("name", f"is '{name}' but the id names VM '{match['name']}'.")
        if name is not None and not RESOURCE_NAME_RE.match(name):
            self.problem("name", f"'{name}' is not a valid VM name: 1-64 letters, digits, '-', '_' or '.'.")
        # The entry's own resourceGroup (the CLI adds it) must agree with its id.
        group = self.get(document, "resourceGroup", str)
        if group and resource_group and group.lower() != resource_group.lower():
            self.problem("resourceGroup", f"is '{group}' but the id names resource group '{resource_group}'.")

        vm_id = self.get(props, "vmId", str, default="")
        if vm_id:
            try:
                vm_id = str(uuid.UUID(vm_id))
            except ValueError:
                self.problem(f"{prefix}vmId", f"'{vm_id}' is not a GUID.")
        size = self.get(props, "hardwareProfile.vmSize", str, required=True, default="")
        if len(size) > 40:
            self.problem(f"{prefix}hardwareProfile.vmSize", "is longer than 40 characters.")
        os_type = self.get(props, "storageProfile.osDisk.osType", str, required=True, default="")
        if os_type and os_type not in ("Windows", "Linux"):
            self.problem(f"{prefix}storageProfile.osDisk.osType", f"must be Windows or Linux, not '{os_type}'.")
        image = self._image(props, prefix)
        zone = self._zone(document)
        availability_set = self._availability_set(props, prefix)
        tags = self._tags(document)
        power_state = self._power_state(document, props, prefix)
        settings, time_zone = self._windows_configuration(props, prefix, os_type)
        if self.problems:
            return None
        return Entry(
            index=self.index,
            subscription_id=subscription_id,
            resource_group=resource_group,
            name=name,
            location=location,
            vm_id=vm_id,
            size=size,
            os_type=os_type,
            **image,
            zone=zone,
            availability_set=availability_set,
            tags=tags,
            power_state=power_state,
            time_zone=time_zone,
            settings=settings,
        )

    def _image(self, props, prefix) -> dict:
        path = "storageProfile.imageReference"
        reference = self.get(props, path, dict, default={})
        values = {}
        for key in ("publisher", "offer", "sku", "version", "exactVersion"):
            value = self.get(reference, key, str, default="")
            if len(value) > 64:
                self.problem(f"{prefix}{path}.{key}", "is longer than 64 characters.")
            values[key] = value
        image_id = ""
        for key in ("id", "sharedGalleryImageId", "communityGalleryImageId"):
            image_id = image_id or self.get(reference, key, str, default="")
        if len(image_id) > 400:
            self.problem(f"{prefix}{path}.id", "is longer than 400 characters.")
        if values["publisher"] and not (values["offer"] and values["sku"]):
            self.problem(f"{prefix}{path}", "names a publisher but not both offer and sku.")
        marketplace = bool(values["publisher"])
        return {
            "image_publisher": values["publisher"] if marketplace else "",
            "image_offer": values["offer"] if marketplace else "",
            "image_sku": values["sku"] if marketplace else "",
            "image_version": values["exactVersion"] or values["version"] or ("" if marketplace else "latest"),
            "image_id": "" if marketplace else image_id,
        }

    def _zone(self, document) -> str:
        zones = self.get(document, "zones", list, default=[])
        if not zones:
            return ""
        if len(zones) != 1 or zones[0] not in ("1", "2", "3"):
            self.problem("zones", f'must be one zone of "1", "2" or "3", not {json.dumps(zones)[:40]}.')
            return ""
        return zones[0]

    def _availability_set(self, props, prefix) -> str:
        set_id = self.get(props, "availabilitySet.id", str, default="")
        if not set_id:
            return ""
        match = AVAILABILITY_SET_ID_RE.search(set_id)
        if not match or len(match["name"]) > 80:
            self.problem(f"{prefix}availabilitySet.id", "must be an availability set's resource id.")
            return ""
        return match["name"]

    def _tags(self, document) -> dict:
        tags = self.get(document, "tags", dict, default={})
        if len(tags) > MAX_TAGS:
            self.problem("tags", f"has {len(tags)} tags; Azure allows {MAX_TAGS}.")
        for key, value in tags.items():
            if not isinstance(value, str) or len(key) > 512 or len(value) > 256:
                self.problem(f"tags.{key[:40]}", "must be a string of at most 256 characters (name at most 512).")
        return dict(tags)

    def _power_state(self, document, props, prefix) -> str:
        given = self.get(document, "powerState", str)  # az vm list -d
        if given is None:
            given = self.get(props, "extended.instanceView.powerState.code", str)  # Resource Graph
        if given is None:
            statuses = self.get(props, "instanceView.statuses", list, default=[])
            codes = [s.get("code") for s in statuses if isinstance(s, dict) and isinstance(s.get("code"), str)]
            given = next((c for c in codes if c.startswith("PowerState/")), None)
        if given is None:
            return ""
        word = given.removeprefix("VM ").removeprefix("PowerState/").strip().lower()
        if word not in POWER_STATES:
            where = "powerState" if "powerState" in document else f"{prefix}extended.instanceView.powerState.code"
            self.problem(where, f"'{given}' is not a power state (VM running, VM stopped, VM deallocated, ...).")
            return ""
        return POWER_STATES[word]

    def _windows_configuration(self, props, prefix, os_type) -> tuple[dict, str]:
        path = "osProfile.windowsConfiguration"
        config = self.get(props, path, dict, default={})
        if os_type != "Windows" or not config:
            # Linux, or no osProfile (a VM from a specialised disk): Windows' defaults.
            return asdict(PatchSettings()), "UTC"
        p = f"{prefix}{path}"
        provision = config.get("provisionVmAgent", config.get("provisionVMAgent"))
        if provision is not None and not isinstance(provision, bool):
            self.problem(f"{p}.provisionVmAgent", "must be true or false.")
        automatic_updates = self.get(config, "enableAutomaticUpdates", bool, default=True)
        time_zone = self.get(config, "timeZone", str, default="") or "UTC"
        time_zone = WINDOWS_TIME_ZONES.get(time_zone, time_zone)
        settings = self.get(config, "patchSettings", dict, default={})
        patch_mode = self._choice(settings, "patchMode", f"{p}.patchSettings", PatchMode.values, "AutomaticByOS")
        assessment_mode = self._choice(
            settings, "assessmentMode", f"{p}.patchSettings", AssessmentMode.values, "ImageDefault"
        )
        hotpatching = self.get(settings, "enableHotpatching", bool, default=False)
        platform = self.get(settings, "automaticByPlatformSettings", dict, default={})
        reboot = self._choice(
            platform,
            "rebootSetting",
            f"{p}.patchSettings.automaticByPlatformSettings",
            (*RebootSetting.values, REBOOT_SETTING_UNKNOWN),
            "IfRequired",
        )
        bypass = self.get(platform, "bypassPlatformSafetyChecksOnUserSchedule", bool, default=False)
        result = PatchSettings(
            patch_mode=patch_mode,
            enable_hotpatching=hotpatching,
            assessment_mode=assessment_mode,
            reboot_setting="IfRequired" if reboot == REBOOT_SETTING_UNKNOWN else reboot,
            bypass_platform_safety_checks=bypass,
            provision_vm_agent=provision if isinstance(provision, bool) else True,
            enable_automatic_updates=automatic_updates,
        )
        return asdict(result), time_zone[:64]

    def _choice(self, obj, key, path, allowed, default) -> str:
        value = self.get(obj, key, str, default=default)
        if value not in allowed:
            self.problem(f"{path}.{key}", f"must be one of {', '.join(allowed)}, not '{value}'.")
            return default
        return value


# --- Planning: against the inventory, read-only ------------------------------------------------------


@dataclass
class Row:
    """What becomes of one entry: created (with notes on what the simulation assumed) or refused."""

    entry: Entry
    refused: str = ""  # why it is not imported; empty when it will be created
    notes: list[str] = field(default_factory=list)
    region: str = ""
    product: str = ""
    hotpatch_capable: bool = False
    settings: PatchSettings | None = None  # what the VM gets (hotpatch turned off on an unknown image)

    @property
    def enrolled(self) -> bool:
        return bool(self.settings and self.settings.enable_hotpatching)

    @property
    def product_name(self) -> str:
        return images.PRODUCTS[self.product].name if self.product else ""


@dataclass
class Plan:
    rows: list[Row]
    new_subscriptions: list[str]  # ids

    @property
    def created(self) -> list[Row]:
        return [row for row in self.rows if not row.refused]

    @property
    def refused(self) -> list[Row]:
        return [row for row in self.rows if row.refused]

    @property
    def unknown_images(self) -> list[Row]:
        return [row for row in self.created if not row.hotpatch_capable and not _known_image(row.entry)]

    def counts(self) -> dict:
        created = self.created
        return {
            "entries": len(self.rows),
            "created": len(created),
            "refused": len(self.rows) - len(created),
            "enrolled": sum(1 for row in created if row.enrolled),
            "hotpatch_capable": sum(1 for row in created if row.hotpatch_capable),
            "unknown_images": len(self.unknown_images),
            "new_subscriptions": len(self.new_subscriptions),
        }


def _known_image(entry: Entry) -> bool:
    return images.product_for_image(entry.image_publisher, entry.image_offer, entry.image_sku) is not None


def guess_product(entry: Entry) -> images.Product:
    """The simulated product for an image we don't know: the version its names mention, else 2022."""
    # A gallery or custom image id: its names, not the subscription GUID (whose digits could say "2019").
    names = re.findall(r"/(?:images|galleries|offers|skus)/([^/]+)", entry.image_id, re.IGNORECASE)
    text = " ".join((entry.image_offer, entry.image_sku, *names)).lower()
    for year in ("2025", "2022", "2019"):  # e.g. MicrosoftSQLServer:sql2019-ws2022: the OS is the ws one
        if f"ws{year}" in text:
            text = year
            break
    if "2025" in text:
        return images.PRODUCTS["ws2025-azure"]
    if "2019" in text:
        return images.PRODUCTS["ws2019"]
    if "2022" in text and "azure-edition" in text:
        return images.PRODUCTS["ws2022-azure"]
    return images.PRODUCTS["ws2022"]


def plan(entries: list[Entry], user) -> Plan:
    """Decide every entry against the inventory as it is now (set-based reads, no writes).

    `user` is who imports: VMs go into existing subscriptions only where they are Contributor or Owner.
    """
    subscription_ids = sorted({entry.subscription_id for entry in entries})
    existing_subscriptions = {
        str(pk) for pk in Subscription.objects.filter(pk__in=subscription_ids).values_list("pk", flat=True)
    }
    if user is None or user.is_superuser:  # None: the operator at the command line, with no owner named
        may_change = existing_subscriptions
    else:
        may_change = {
            str(sid)
            for sid in RoleAssignment.objects.filter(
                user=user, subscription_id__in=existing_subscriptions, role__in=(Role.CONTRIBUTOR, Role.OWNER)
            ).values_list("subscription_id", flat=True)
        }
    existing_vms = set()
    for sid, group, name in (
        VirtualMachine.objects.filter(resource_group__subscription_id__in=existing_subscriptions)
        .annotate(group=Lower("resource_group__name"), lower_name=Lower("name"))
        .values_list("resource_group__subscription_id", "group", "lower_name")
        .iterator(chunk_size=10_000)
    ):
        existing_vms.add((str(sid), group, name))
    taken_vm_ids = _taken_vm_ids([entry.vm_id for entry in entries if entry.vm_id])

    rows = []
    for entry in entries:
        row = Row(entry)
        rows.append(row)
        sid = entry.subscription_id
        if not RESOURCE_NAME_RE.match(entry.resource_group) or len(entry.resource_group) > 90:
            row.refused = (
                f"Resource group '{entry.resource_group}': the portal's names are letters, digits, '-', '_' and '.'."
            )
            continue
        if entry.os_type == "Linux":
            row.refused = "Linux VM: the portal simulates Windows Server guests only."
            continue
        region = regions.normalize_region(entry.location)
        if region is None:
            # A real Azure region the portal does not list (brazilsouth, centralindia, ...): kept as it
            # is; automatic patching puts regions it does not know in its last rollout phase.
            region = entry.location.replace(" ", "").lower()
            if not AZURE_REGION_RE.match(region):
                row.refused = f"'{entry.location}' is not an Azure region name."
                continue
            row.notes.append(f"Region '{region}' is not one the portal lists: patched in the last rollout phase.")
        if sid in existing_subscriptions and sid not in may_change:
            row.refused = f"Subscription {sid} exists here and you are not a Contributor or Owner on it."
            continue
        if (sid, entry.resource_group.lower(), entry.name.lower()) in existing_vms:
            row.refused = "A VM with this id already exists here (an import never overwrites one)."
            continue
        row.region = region
        product = images.product_for_image(entry.image_publisher, entry.image_offer, entry.image_sku)
        if product is None:
            product = guess_product(entry)
            row.notes.append(
                f"Image {entry.image} is not one the simulation knows: imported as not hotpatch-capable, "
                f"patched as {product.name}."
            )
        row.product = product.code
        row.hotpatch_capable = images.is_hotpatch_capable(entry.image_publisher, entry.image_offer, entry.image_sku)
        settings = entry.patch_settings
        if settings.enable_hotpatching and not row.hotpatch_capable:
            settings = settings.with_changes(enable_hotpatching=False)
            row.notes.append("enableHotpatching turned off: the image is not hotpatch-capable here.")
        problems = validate(
            settings, publisher=entry.image_publisher, offer=entry.image_offer, sku=entry.image_sku, region=region
        )
        if problems:
            row.refused = " ".join(problem.message for problem in problems)
            continue
        row.settings = settings
        if entry.zone and entry.availability_set:
            row.refused = "A VM is either in an availability zone or in an availability set, not both."
            continue
        if entry.vm_id in taken_vm_ids:
            row.notes.append(f"vmId {entry.vm_id} belongs to another VM here: this one gets a new vmId.")
        if not entry.power_state:
            row.notes.append("No power state in the file (az vm list without -d): imported running.")
        try:
            _zone_info(entry.time_zone)
        except ValueError:
            row.notes.append(f"Time zone '{entry.time_zone}' is not an IANA name: the VM keeps UTC.")
    new_subscriptions = sorted({row.entry.subscription_id for row in rows if not row.refused} - existing_subscriptions)
    return Plan(rows, new_subscriptions)


def _taken_vm_ids(vm_ids: list[str]) -> set[str]:
    taken: set[str] = set()
    for start in range(0, len(vm_ids), 10_000):
        chunk = vm_ids[start : start + 10_000]
        taken.update(str(v) for v in VirtualMachine.objects.filter(vm_id__in=chunk).values_list("vm_id", flat=True))
    return taken


def _zone_info(name: str):
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(name) from error


# --- Writing the inventory (called by patching.services.import_fleet inside its transaction) ----------


def create_inventory(fleet: Plan, owner, now: datetime) -> list[VirtualMachine]:
    """Subscriptions (owner as Owner), preview features for those with enrolled VMs, groups and VMs, in bulk.

    A real fleet with hotpatch on has the hotpatch preview features and Microsoft.Compute registered,
    so the subscriptions that receive enrolled VMs get them Registered (PORTAL_PREVIEW_GATE then lets
    their VMs keep hotpatch on, as on Azure).
    """
    rows = fleet.created
    Subscription.objects.bulk_create(
        Subscription(id=uuid.UUID(sid), display_name=f"Imported {sid[:8]}") for sid in fleet.new_subscriptions
    )
    if owner is not None:
        RoleAssignment.objects.bulk_create(
            RoleAssignment(user=owner, subscription_id=sid, role=Role.OWNER) for sid in fleet.new_subscriptions
        )
    _register_hotpatch({row.entry.subscription_id for row in rows if row.enrolled}, now)

    groups = {
        (str(g.subscription_id), g.name.lower()): g
        for g in ResourceGroup.objects.filter(subscription_id__in={row.entry.subscription_id for row in rows})
    }
    new_groups = {}
    for row in rows:
        key = (row.entry.subscription_id, row.entry.resource_group.lower())
        if key not in groups and key not in new_groups:
            new_groups[key] = ResourceGroup(
                subscription_id=row.entry.subscription_id, name=row.entry.resource_group, location=row.region
            )
    ResourceGroup.objects.bulk_create(new_groups.values(), batch_size=2000)
    groups.update(new_groups)

    taken = _taken_vm_ids([row.entry.vm_id for row in rows if row.entry.vm_id])
    domains = _update_domains(rows, groups)
    vms = []
    for row in rows:
        entry = row.entry
        try:
            _zone_info(entry.time_zone)
            time_zone = entry.time_zone
        except ValueError:
            time_zone = "UTC"
        vm = VirtualMachine(
            resource_group=groups[(entry.subscription_id, entry.resource_group.lower())],
            name=entry.name,
            vm_id=uuid.UUID(entry.vm_id) if entry.vm_id and entry.vm_id not in taken else uuid.uuid4(),
            location=row.region,
            zone=entry.zone,
            availability_set=entry.availability_set,
            update_domain=domains.get(entry.index),
            size=entry.size,
            image_publisher=entry.image_publisher,
            image_offer=entry.image_offer,
            image_sku=entry.image_sku,
            image_version=entry.image_version[:40],
            image_id=entry.image_id,
            product=row.product,
            time_zone=time_zone,
            power_state=entry.power_state or VirtualMachine.PowerState.RUNNING,
            tags=entry.tags,
            created_at=now,
        )
        vm.apply_patch_settings(row.settings)
        vms.append(vm)
    VirtualMachine.objects.bulk_create(vms, batch_size=2000)  # PostgreSQL and SQLite return the ids
    return vms


def _update_domains(rows: list[Row], groups: dict) -> dict[int, int]:
    """Round-robin over five update domains per availability set, after the set's VMs already here."""
    counts: dict[tuple, int] = defaultdict(int)
    sets = {
        (row.entry.subscription_id, row.entry.resource_group.lower(), row.entry.availability_set.lower())
        for row in rows
        if row.entry.availability_set
    }
    if sets:
        existing = VirtualMachine.objects.filter(
            resource_group__in=[g for key, g in groups.items() if g.pk], availability_set__gt=""
        ).values_list("resource_group__subscription_id", "resource_group__name", "availability_set")
        for sid, group, name in existing:
            counts[(str(sid), group.lower(), name.lower())] += 1
    domains = {}
    for row in rows:
        if row.entry.availability_set:
            key = (row.entry.subscription_id, row.entry.resource_group.lower(), row.entry.availability_set.lower())
            domains[row.entry.index] = counts[key] % 5
            counts[key] += 1
    return domains


def _register_hotpatch(subscription_ids: set[str], now: datetime) -> None:
    if not subscription_ids:
        return
    for name in FeatureRegistration.HOTPATCH_FEATURES:
        FeatureRegistration.objects.bulk_create(
            [
                FeatureRegistration(subscription_id=sid, name=name, state="Registered", changed_at=now)
                for sid in subscription_ids
            ],
            update_conflicts=True,
            unique_fields=["subscription", "namespace", "name"],
            update_fields=["state", "changed_at"],
        )
    ProviderRegistration.objects.bulk_create(
        [
            ProviderRegistration(subscription_id=sid, namespace="Microsoft.Compute", state="Registered", changed_at=now)
            for sid in subscription_ids
        ],
        update_conflicts=True,
        unique_fields=["subscription", "namespace"],
        update_fields=["state", "changed_at"],
    )
