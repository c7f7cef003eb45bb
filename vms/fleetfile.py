"""Generated `az vm list -d -o json` output: a realistic fleet for the importer's tests, benchmarks and demos.

Every entry has the shape the Azure CLI prints (the SDK's VirtualMachine flattened, camelCase keys,
nulls for what is not set, and `-d`'s powerState/publicIps/fqdns/privateIps/macs). The mix, by a
seeded random draw: Windows Server 2022 and 2025 Azure Edition on hotpatch images with hotpatch on
(most), Azure Edition Core with hotpatch off, Windows Server 2022 Datacenter Azure-orchestrated, Windows Server 2019 on Windows automatic
updates, a gallery image, Linux; a few VMs stopped or deallocated; zones, availability sets and tags.
`manage.py generate_fleet_file` writes it (JSON, or the Resource Graph CSV with --csv).
"""

import csv
import io
import json
import random
import uuid

REGIONS = [("westeurope", True), ("northeurope", True), ("eastus", True), ("westus2", True), ("uksouth", True)]
TIME_ZONES = [None, None, "W. Europe Standard Time", "UTC"]  # Windows names are what Azure stores; None is common
# (weight, publisher, offer, sku, patch mode, hotpatch, assessment mode)
IMAGES = [
    (
        40,
        "MicrosoftWindowsServer",
        "WindowsServer",
        "2022-datacenter-azure-edition-hotpatch",
        "AutomaticByPlatform",
        True,
        "AutomaticByPlatform",
    ),
    (
        15,
        "MicrosoftWindowsServer",
        "WindowsServer",
        "2022-datacenter-azure-edition-core",
        "AutomaticByPlatform",
        False,  # capable, not enrolled: what the what-if year's second scenario changes
        "AutomaticByPlatform",
    ),
    (
        15,
        "MicrosoftWindowsServer",
        "WindowsServer",
        "2025-datacenter-azure-edition",
        "AutomaticByPlatform",
        True,
        "AutomaticByPlatform",
    ),
    (
        10,
        "MicrosoftWindowsServer",
        "WindowsServer",
        "2022-datacenter-g2",
        "AutomaticByPlatform",
        False,
        "AutomaticByPlatform",
    ),
    (8, "MicrosoftWindowsServer", "WindowsServer", "2019-datacenter-gensecond", "AutomaticByOS", False, "ImageDefault"),
    (5, None, None, None, "AutomaticByPlatform", False, "AutomaticByPlatform"),  # a gallery image
    (4, "MicrosoftSQLServer", "sql2022-ws2022", "enterprise-gen2", "AutomaticByOS", False, "ImageDefault"),
    (3, "Canonical", "ubuntu-24_04-lts", "server", "ImageDefault", False, "ImageDefault"),  # Linux
]
SIZES = ["Standard_D2s_v5", "Standard_D4s_v5", "Standard_E4s_v5", "Standard_B2ms", "Standard_D8as_v5"]
ENVIRONMENTS = ["prod", "prod", "test", "dev"]
VMS_PER_GROUP = 40
VMS_PER_SUBSCRIPTION = 20_000


def subscription_id(seed: int, index: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:hotpatch-portal:fleetfile:{seed}:{index}"))


def generate(count: int, *, seed: int = 7) -> list[dict]:
    """`count` VMs as `az vm list -d -o json` prints them, the same for the same seed."""
    rng = random.Random(seed)
    weights = [image[0] for image in IMAGES]
    documents = []
    for n in range(count):
        sub = subscription_id(seed, n // VMS_PER_SUBSCRIPTION)
        region, zoned = REGIONS[(n // VMS_PER_GROUP) % len(REGIONS)]
        group = f"rg-{ENVIRONMENTS[(n // VMS_PER_GROUP) % len(ENVIRONMENTS)]}-{n // VMS_PER_GROUP:05d}"
        _, publisher, offer, sku, mode, hotpatch, assessment = rng.choices(IMAGES, weights)[0]
        linux = publisher == "Canonical"
        name = f"vm{n:06d}"
        place = rng.random()
        availability_set = f"avset-{group[3:]}" if not linux and place < 0.15 else None
        zone = str(rng.randint(1, 3)) if zoned and availability_set is None and place < 0.75 else None
        power = rng.choices(["VM running", "VM deallocated", "VM stopped"], [94, 4, 2])[0]
        documents.append(
            entry(
                sub,
                group,
                name,
                region,
                size=rng.choice(SIZES),
                image=(publisher, offer, sku)
                if publisher
                else f"/subscriptions/{sub}/resourceGroups/rg-images/providers/Microsoft.Compute/galleries/corpGallery/images/ws2022-golden/versions/1.4.{n % 7}",
                linux=linux,
                patch=(mode, hotpatch, assessment),
                zone=zone,
                availability_set=availability_set,
                tags={"env": group.split("-")[1], "costCenter": f"cc-{n % 13:03d}"} if n % 5 else {},
                power_state=power,
                time_zone=rng.choice(TIME_ZONES),
                vm_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                private_ip=f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}",
            )
        )
    return documents


def entry(
    subscription: str,
    resource_group: str,
    name: str,
    location: str,
    *,
    size: str = "Standard_D2s_v5",
    image: tuple | str = ("MicrosoftWindowsServer", "WindowsServer", "2022-datacenter-azure-edition-hotpatch"),
    linux: bool = False,
    patch: tuple = ("AutomaticByPlatform", True, "AutomaticByPlatform"),
    zone: str | None = None,
    availability_set: str | None = None,
    tags: dict | None = None,
    power_state: str = "VM running",
    time_zone: str | None = None,
    vm_id: str | None = None,
    private_ip: str = "10.0.0.4",
) -> dict:
    """One VM exactly as `az vm list -d -o json` prints it."""
    vm_arm_id = f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Compute/virtualMachines/{name}"
    if isinstance(image, str):
        reference = {
            "communityGalleryImageId": None,
            "exactVersion": image.rsplit("/", 1)[-1],
            "id": image,
            "offer": None,
            "publisher": None,
            "sharedGalleryImageId": None,
            "sku": None,
            "version": None,
        }
    else:
        publisher, offer, sku = image
        version = "20348.2849.241106" if "2022" in sku else "26100.2314.241107"
        reference = {
            "communityGalleryImageId": None,
            "exactVersion": version,
            "id": None,
            "offer": offer,
            "publisher": publisher,
            "sharedGalleryImageId": None,
            "sku": sku,
            "version": "latest",
        }
    mode, hotpatch, assessment = patch
    settings = {
        "assessmentMode": assessment,
        "automaticByPlatformSettings": {
            "bypassPlatformSafetyChecksOnUserSchedule": False,
            "rebootSetting": "IfRequired",
        }
        if mode == "AutomaticByPlatform"
        else None,
        "patchMode": mode,
    }
    if linux:
        linux_configuration = {
            "disablePasswordAuthentication": True,
            "enableVmAgentPlatformUpdates": None,
            "patchSettings": settings,
            "provisionVmAgent": True,
            "ssh": {
                "publicKeys": [
                    {
                        "keyData": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIexample",
                        "path": "/home/azureuser/.ssh/authorized_keys",
                    }
                ]
            },
        }
        windows_configuration = None
    else:
        linux_configuration = None
        windows_configuration = {
            "additionalUnattendContent": None,
            "enableAutomaticUpdates": mode != "Manual",
            "enableVmAgentPlatformUpdates": False,
            "patchSettings": {**settings, "enableHotpatching": hotpatch},
            "provisionVmAgent": True,
            "timeZone": time_zone,
            "winRm": None,
        }
    return {
        "additionalCapabilities": None,
        "applicationProfile": None,
        "availabilitySet": {
            "id": f"/subscriptions/{subscription}/resourceGroups/{resource_group.upper()}/providers/Microsoft.Compute/availabilitySets/{availability_set.upper()}",
            "resourceGroup": resource_group.upper(),
        }
        if availability_set
        else None,
        "billingProfile": None,
        "capacityReservation": None,
        "diagnosticsProfile": {"bootDiagnostics": {"enabled": True, "storageUri": None}},
        "etag": '"1"',
        "evictionPolicy": None,
        "extendedLocation": None,
        "extensionsTimeBudget": None,
        "fqdns": "",
        "hardwareProfile": {"vmSize": size, "vmSizeProperties": None},
        "host": None,
        "hostGroup": None,
        "id": vm_arm_id,
        "identity": None,
        "instanceView": None,
        "licenseType": None if linux else "Windows_Server",
        "location": location,
        "macs": "00-22-48-{:02X}-{:02X}-{:02X}".format(*uuid.uuid5(uuid.NAMESPACE_URL, vm_arm_id).bytes[:3]),
        "managedBy": None,
        "name": name,
        "networkProfile": {
            "networkApiVersion": None,
            "networkInterfaceConfigurations": None,
            "networkInterfaces": [
                {
                    "deleteOption": "Delete",
                    "id": f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Network/networkInterfaces/{name}-nic",
                    "primary": None,
                    "resourceGroup": resource_group,
                }
            ],
        },
        "osProfile": {
            "adminPassword": None,
            "adminUsername": "azureuser",
            "allowExtensionOperations": True,
            "computerName": name[:15],
            "customData": None,
            "linuxConfiguration": linux_configuration,
            "requireGuestProvisionSignal": True,
            "secrets": [],
            "windowsConfiguration": windows_configuration,
        },
        "plan": None,
        "platformFaultDomain": None,
        "powerState": power_state,
        "priority": None,
        "privateIps": private_ip,
        "provisioningState": "Succeeded",
        "proximityPlacementGroup": None,
        "publicIps": "",
        "resourceGroup": resource_group,
        "resources": None,
        "scheduledEventsPolicy": None,
        "scheduledEventsProfile": None,
        "securityProfile": {
            "encryptionAtHost": None,
            "encryptionIdentity": None,
            "proxyAgentSettings": None,
            "securityType": "TrustedLaunch",
            "uefiSettings": {"secureBootEnabled": True, "vTpmEnabled": True},
        },
        "storageProfile": {
            "alignRegionalDisksToVmZone": None,
            "dataDisks": [],
            "diskControllerType": "SCSI",
            "imageReference": reference,
            "osDisk": {
                "caching": "ReadWrite",
                "createOption": "FromImage",
                "deleteOption": "Delete",
                "diffDiskSettings": None,
                "diskSizeGb": 127 if not linux else 30,
                "encryptionSettings": None,
                "image": None,
                "managedDisk": {
                    "diskEncryptionSet": None,
                    "id": f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Compute/disks/{name}_OsDisk_1",
                    "resourceGroup": resource_group,
                    "securityProfile": None,
                    "storageAccountType": "Premium_LRS",
                },
                "name": f"{name}_OsDisk_1",
                "osType": "Linux" if linux else "Windows",
                "vhd": None,
                "writeAcceleratorEnabled": None,
            },
        },
        "tags": tags or {},
        "timeCreated": "2025-03-04T09:12:45.1234567+00:00",
        "type": "Microsoft.Compute/virtualMachines",
        "userData": None,
        "virtualMachineScaleSet": None,
        "vmId": vm_id or str(uuid.uuid5(uuid.NAMESPACE_URL, vm_arm_id)),
        "zones": [zone] if zone else None,
    }


RESOURCE_GRAPH_HEADER = [
    "id",
    "name",
    "type",
    "tenantId",
    "kind",
    "location",
    "resourceGroup",
    "subscriptionId",
    "managedBy",
    "sku",
    "plan",
    "properties",
    "tags",
    "identity",
    "zones",
    "extendedLocation",
]
FLATTENED = {
    "id",
    "name",
    "type",
    "location",
    "tags",
    "zones",
    "resourceGroup",
    "etag",
    "identity",
    "plan",
    "managedBy",
    "extendedLocation",
    "powerState",
    "publicIps",
    "fqdns",
    "privateIps",
    "macs",
    "resources",
}


def to_resource_graph_csv(documents: list[dict], tenant_id: str = "72f988bf-86f1-41af-91ab-2d7cd011db47") -> str:
    """The same VMs as the Azure portal's Resource Graph Explorer downloads them (see vms.fleet_import)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(RESOURCE_GRAPH_HEADER)
    for document in documents:
        properties = json.loads(json.dumps({k: v for k, v in document.items() if k not in FLATTENED and v is not None}))
        windows = (properties.get("osProfile") or {}).get("windowsConfiguration")
        if windows:  # ARM spells it provisionVMAgent
            windows["provisionVMAgent"] = windows.pop("provisionVmAgent")
        code = "PowerState/" + document["powerState"].removeprefix("VM ")
        properties["extended"] = {
            "instanceView": {"powerState": {"code": code, "displayStatus": document["powerState"], "level": "Info"}}
        }
        writer.writerow(
            [
                document["id"],
                document["name"],
                "microsoft.compute/virtualmachines",
                tenant_id,
                "",
                document["location"],
                document["resourceGroup"].lower(),
                document["id"].split("/")[2],
                "",
                "",
                "",
                json.dumps(properties),
                json.dumps(document["tags"]),
                "",
                json.dumps(document["zones"]) if document["zones"] else "",
                "",
            ]
        )
    return out.getvalue()
