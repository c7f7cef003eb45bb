"""Importing a real fleet: `az vm list -d -o json` output and Resource Graph CSV exports (vms.fleet_import),
`manage.py import_fleet`, and the /sandbox/import/ page (upload -> preview -> confirm)."""

import copy
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from patching.models import GuestState, HotpatchStatus
from tests.browser.data import make_user
from tests.factories import make_resource_group, make_subscription, make_vm
from vms import fleet_import, fleetfile
from vms.models import (
    FeatureRegistration,
    FleetImport,
    ProviderRegistration,
    RoleAssignment,
    Subscription,
    VirtualMachine,
)

SUB = "2c1a3857-ab2c-454b-92f8-053d0a5b9f15"
GALLERY = f"/subscriptions/{SUB}/resourceGroups/rg-images/providers/Microsoft.Compute/galleries/corp/images/ws2022-golden/versions/1.4.2"


def sample() -> list[dict]:
    """A realistic `az vm list -d -o json`: one of each kind the importer must tell apart."""
    e = fleetfile.entry
    return [
        e(SUB, "RG-Web", "web-01", "westeurope", zone="2", tags={"env": "prod", "owner": "web team"}),
        e(
            SUB,
            "RG-Web",
            "web-02",
            "westeurope",
            image=("MicrosoftWindowsServer", "WindowsServer", "2025-datacenter-azure-edition"),
            size="Standard_D4s_v5",
            zone="1",
        ),
        e(
            SUB,
            "rg-sql",
            "sql-01",
            "northeurope",
            image=("MicrosoftWindowsServer", "WindowsServer", "2022-datacenter-azure-edition-core"),
            availability_set="avset-sql",
        ),
        e(
            SUB,
            "rg-sql",
            "sql-02",
            "northeurope",
            image=("MicrosoftWindowsServer", "WindowsServer", "2022-datacenter-azure-edition-core"),
            availability_set="avset-sql",
            power_state="VM deallocated",
        ),
        e(
            SUB,
            "rg-app",
            "gallery-01",
            "westeurope",
            image=GALLERY,
            patch=("AutomaticByPlatform", False, "AutomaticByPlatform"),
        ),
        e(
            SUB,
            "rg-app",
            "classic-01",
            "eastus",
            image=("MicrosoftWindowsServer", "WindowsServer", "2019-datacenter-gensecond"),
            patch=("AutomaticByOS", False, "ImageDefault"),
            power_state="VM stopped",
            time_zone="Pacific Standard Time",
        ),
        e(
            SUB,
            "rg-app",
            "linux-01",
            "westeurope",
            image=("Canonical", "ubuntu-24_04-lts", "server"),
            linux=True,
            patch=("ImageDefault", False, "ImageDefault"),
        ),
    ]


def upload(data, name="vms.json") -> SimpleUploadedFile:
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    return SimpleUploadedFile(name, body, content_type="application/json")


# --- Parsing ------------------------------------------------------------------------------------------


def test_the_parser_reads_every_kind_of_vm_as_the_cli_prints_it():
    entries = {e.name: e for e in fleet_import.parse(json.dumps(sample()).encode())}
    web = entries["web-01"]
    assert (web.subscription_id, web.resource_group, web.location, web.zone) == (SUB, "RG-Web", "westeurope", "2")
    assert web.tags == {"env": "prod", "owner": "web team"} and web.power_state == "running"
    assert web.patch_settings.enable_hotpatching and web.patch_settings.patch_mode == "AutomaticByPlatform"
    assert web.image_sku == "2022-datacenter-azure-edition-hotpatch" and web.image_version == "20348.2849.241106"
    assert entries["web-02"].size == "Standard_D4s_v5"
    assert entries["sql-01"].availability_set == "AVSET-SQL" and entries["sql-01"].zone == ""
    assert entries["sql-02"].power_state == "deallocated" and entries["classic-01"].power_state == "stopped"
    assert entries["gallery-01"].image_id == GALLERY and entries["gallery-01"].image_publisher == ""
    assert entries["classic-01"].time_zone == "America/Los_Angeles"  # Windows' zone id, mapped
    assert entries["classic-01"].patch_settings.patch_mode == "AutomaticByOS"
    assert entries["linux-01"].os_type == "Linux"


def test_the_parser_reads_a_resource_graph_csv_export_the_same():
    documents = sample()
    from_csv = fleet_import.parse(fleetfile.to_resource_graph_csv(documents).encode())
    from_json = fleet_import.parse(json.dumps(documents).encode())
    assert from_csv == from_json
    assert documents[0]["osProfile"]["windowsConfiguration"]["provisionVmAgent"] is True  # the export copies


def test_the_parser_reads_arms_own_shape_with_a_properties_level():
    arm = {
        "value": [
            {
                "id": f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/arm-01",
                "name": "arm-01",
                "type": "Microsoft.Compute/virtualMachines",
                "location": "westeurope",
                "properties": {
                    "hardwareProfile": {"vmSize": "Standard_D2s_v5"},
                    "storageProfile": {
                        "imageReference": {
                            "publisher": "MicrosoftWindowsServer",
                            "offer": "WindowsServer",
                            "sku": "2022-datacenter-azure-edition-hotpatch",
                            "version": "latest",
                        },
                        "osDisk": {"osType": "Windows"},
                    },
                    "osProfile": {
                        "windowsConfiguration": {
                            "provisionVMAgent": True,
                            "enableAutomaticUpdates": True,
                            "patchSettings": {"patchMode": "AutomaticByPlatform", "enableHotpatching": True},
                        }
                    },
                    "instanceView": {
                        "statuses": [{"code": "ProvisioningState/succeeded"}, {"code": "PowerState/deallocated"}]
                    },
                },
            }
        ]
    }
    (entry,) = fleet_import.parse(json.dumps(arm).encode())
    assert entry.power_state == "deallocated" and entry.patch_settings.enable_hotpatching


def broken(mutate) -> bytes:
    documents = sample()
    mutate(documents)
    return json.dumps(documents).encode()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "the file: The file is empty."),
        (b"\xff\xfe\x00garbage", "the file: The file is not UTF-8 text."),
        (b"[1, 2", "the file: Not valid JSON"),
        (b'{"name": "vm"}', "the file: Expected a JSON array of VMs"),
        (b"[]", "the file: The file lists no VMs."),
        (b"name,size\nvm,big\n", "the CSV has no column id, location, properties"),
        (b"[" * 100_000, "the file: Nested too deeply."),
        (b"[42]", "entry 1: must be an object describing a VM."),
        (broken(lambda d: d[2].pop("id")), "entry 3 (sql-01): id: is missing."),
        (
            broken(
                lambda d: d[1].update(
                    id="/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web-02"
                )
            ),
            "entry 2 (web-02): id: names subscription 'x', which is not a GUID.",
        ),
        (
            broken(lambda d: d[0].update(name="other")),
            "entry 1 (other): name: is 'other' but the id names VM 'web-01'.",
        ),
        (
            broken(lambda d: d[3]["hardwareProfile"].update(vmSize=7)),
            "entry 4 (sql-02): hardwareProfile.vmSize: must be a string, not 7.",
        ),
        (
            broken(lambda d: d[0]["osProfile"]["windowsConfiguration"]["patchSettings"].update(patchMode="Sometimes")),
            "entry 1 (web-01): osProfile.windowsConfiguration.patchSettings.patchMode: must be one of",
        ),
        (
            broken(
                lambda d: d[0]["osProfile"]["windowsConfiguration"]["patchSettings"].update(enableHotpatching="yes")
            ),
            "entry 1 (web-01): enableHotpatching: must be true or false",
        ),
        (
            broken(lambda d: d[4].update(powerState="VM exploded")),
            "entry 5 (gallery-01): powerState: 'VM exploded' is not a power state",
        ),
        (broken(lambda d: d[0].update(zones=["1", "2"])), "entry 1 (web-01): zones: must be one zone"),
        (broken(lambda d: d[0].update(tags={"env": 3})), "entry 1 (web-01): tags.env: must be a string"),
        (
            broken(lambda d: d[5]["storageProfile"]["osDisk"].update(osType="Plan9")),
            "entry 6 (classic-01): storageProfile.osDisk.osType: must be Windows or Linux",
        ),
        (broken(lambda d: d.append(copy.deepcopy(d[0]))), "entry 8 (web-01): id: repeats the id of entry 1."),
        (
            broken(lambda d: d[0].update(type="Microsoft.Network/networkInterfaces")),
            "entry 1 (web-01): type: is 'Microsoft.Network/networkInterfaces'",
        ),
    ],
)
def test_a_file_that_is_not_az_vm_list_output_is_refused_naming_entry_and_field(data, expected):
    with pytest.raises(fleet_import.FleetFileError) as refused:
        fleet_import.parse(data)
    assert expected in str(refused.value)


def test_every_wrong_field_is_reported_not_only_the_first():
    def mutate(d):
        d[0]["hardwareProfile"]["vmSize"] = None
        d[6]["location"] = None

    with pytest.raises(fleet_import.FleetFileError) as refused:
        fleet_import.parse(broken(mutate))
    assert [str(p) for p in refused.value.problems] == [
        "entry 1 (web-01): hardwareProfile.vmSize: is missing.",
        "entry 7 (linux-01): location: is missing.",
    ]


# --- Planning and importing -----------------------------------------------------------------------------


@pytest.fixture
def olivia(catalog):
    return make_user("olivia")


def test_the_plan_refuses_linux_and_lists_unknown_images(olivia):
    plan = fleet_import.plan(fleet_import.parse(json.dumps(sample()).encode()), olivia)
    assert [row.entry.name for row in plan.refused] == ["linux-01"]
    assert "Linux" in plan.refused[0].refused
    assert [row.entry.name for row in plan.unknown_images] == ["gallery-01"]
    assert plan.counts() | {} == {
        "entries": 7,
        "created": 6,
        "refused": 1,
        "enrolled": 4,
        "hotpatch_capable": 4,
        "unknown_images": 1,
        "new_subscriptions": 1,
    }


def test_the_command_imports_the_vms_as_they_were_with_their_guests(olivia, tmp_path, capsys):
    path = tmp_path / "vms.json"
    path.write_text(json.dumps(sample()))
    call_command("import_fleet", str(path), owner="olivia")
    out = capsys.readouterr().out
    assert "refused  " in out and "linux-01: Linux VM" in out and "Imported 6 VMs" in out

    subscription = Subscription.objects.get(pk=SUB)
    assert RoleAssignment.objects.get(subscription=subscription).user == olivia
    assert RoleAssignment.objects.get(subscription=subscription).role == "Owner"
    assert {f.name: f.state for f in FeatureRegistration.objects.filter(subscription=subscription)} == dict.fromkeys(
        FeatureRegistration.HOTPATCH_FEATURES, "Registered"
    )
    assert (
        ProviderRegistration.objects.get(subscription=subscription, namespace="Microsoft.Compute").state == "Registered"
    )
    vms = {vm.name: vm for vm in VirtualMachine.objects.select_related("resource_group", "guest")}
    assert set(vms) == {"web-01", "web-02", "sql-01", "sql-02", "gallery-01", "classic-01"}
    web = vms["web-01"]
    assert web.resource_group.name == "RG-Web" and web.zone == "2" and web.tags == {"env": "prod", "owner": "web team"}
    assert web.enable_hotpatching and web.hotpatch_capable and web.product == "ws2022-azure"
    assert web.vm_id == __import__("uuid").UUID(sample()[0]["vmId"])
    assert web.guest.build and web.guest.baseline_id is not None
    assert vms["web-02"].product == "ws2025-azure" and vms["web-02"].size == "Standard_D4s_v5"
    assert (vms["sql-01"].availability_set, vms["sql-01"].update_domain, vms["sql-02"].update_domain) == (
        "AVSET-SQL",
        0,
        1,
    )
    assert vms["sql-02"].power_state == "deallocated" and vms["classic-01"].power_state == "stopped"
    gallery = vms["gallery-01"]
    assert gallery.image_id == GALLERY and not gallery.hotpatch_capable and not gallery.enable_hotpatching
    assert gallery.patch_mode == "AutomaticByPlatform" and gallery.product == "ws2022"
    assert vms["classic-01"].patch_mode == "AutomaticByOS" and vms["classic-01"].time_zone == "America/Los_Angeles"
    assert GuestState.objects.count() == 6
    assert gallery.guest.hotpatch_status != HotpatchStatus.ENABLED

    # The same file again: every VM exists already; nothing is overwritten or added.
    call_command("import_fleet", str(path), owner="olivia")
    assert "A VM with this id already exists here" in capsys.readouterr().out
    assert VirtualMachine.objects.count() == 6


def test_the_command_refuses_a_bad_file_and_creates_nothing(olivia, tmp_path):
    path = tmp_path / "vms.json"
    path.write_bytes(broken(lambda d: d[3]["storageProfile"]["imageReference"].update(sku=None, offer=None)))
    with pytest.raises(CommandError, match=r"entry 4 \(sql-02\): storageProfile.imageReference: names a publisher"):
        call_command("import_fleet", str(path), owner="olivia")
    assert not Subscription.objects.exists() and not VirtualMachine.objects.exists()


def test_the_command_dry_run_creates_nothing_and_needs_a_known_owner(olivia, tmp_path, capsys):
    path = tmp_path / "vms.json"
    path.write_text(json.dumps(sample()))
    call_command("import_fleet", str(path), owner="olivia", dry_run=True)
    out = capsys.readouterr().out
    assert "Would create 6 of 7 VMs (4 enrolled in hotpatch, 1 on images" in out
    assert (
        f"create   {sample()[0]['id']}: Windows Server 2022 Datacenter: Azure Edition, westeurope, hotpatch on" in out
    )
    assert not VirtualMachine.objects.exists()
    with pytest.raises(CommandError, match="No user 'nobody'"):
        call_command("import_fleet", str(path), owner="nobody")
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_fleet", str(tmp_path / "missing.json"), owner="olivia")


def test_an_existing_subscription_takes_vms_only_from_its_contributors(olivia):
    subscription = make_subscription("Contoso", user=olivia, role="Reader")
    documents = [fleetfile.entry(str(subscription.pk), "rg", "vm-1", "westeurope")]
    entries = fleet_import.parse(json.dumps(documents).encode())
    (row,) = fleet_import.plan(entries, olivia).rows
    assert "you are not a Contributor or Owner" in row.refused
    RoleAssignment.objects.filter(user=olivia).update(role="Contributor")
    make_vm(resource_group=make_resource_group(subscription, "RG"), name="VM-1")
    (row,) = fleet_import.plan(entries, olivia).rows
    assert "already exists" in row.refused  # names compare case-insensitively, as Azure's do


def test_the_generated_fleet_file_imports(olivia, tmp_path):
    path = tmp_path / "fleet.json"
    call_command("generate_fleet_file", vms=300, out=str(path))
    call_command("import_fleet", str(path), owner="olivia")
    documents = json.loads(path.read_text())
    linux = sum(1 for d in documents if d["storageProfile"]["osDisk"]["osType"] == "Linux")
    assert linux and VirtualMachine.objects.count() == 300 - linux
    assert VirtualMachine.objects.filter(enable_hotpatching=True).count() > 120
    assert GuestState.objects.count() == 300 - linux


# --- The page ---------------------------------------------------------------------------------------------


def test_upload_preview_confirm(client, olivia):
    client.force_login(olivia)
    page = client.get(reverse("sandbox-import"))
    assert page.status_code == 200 and "az vm list -d -o json" in page.text
    response = client.post(reverse("sandbox-import"), {"file": upload(sample())})
    pending = FleetImport.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("sandbox-import-preview", args=[pending.pk])
    preview = client.get(response["Location"]).text
    assert "Import 6 VMs" in preview and "Linux VM" in preview and GALLERY in preview
    assert not VirtualMachine.objects.exists()  # nothing until confirmed

    done = client.post(reverse("sandbox-import-confirm", args=[pending.pk]))
    assert done.status_code == 302
    assert VirtualMachine.objects.count() == 6
    assert RoleAssignment.objects.get(subscription_id=SUB).user == olivia
    result = client.get(done["Location"]).text
    assert "6 VMs imported" in result and "linux-01" in result
    # Confirming again (a double click, a replayed POST) imports nothing more.
    client.post(reverse("sandbox-import-confirm", args=[pending.pk]))
    assert VirtualMachine.objects.count() == 6
    assert "web-01" in client.get(reverse("vms:list")).text


def test_a_bad_upload_is_refused_with_its_problems_and_keeps_nothing(client, olivia):
    client.force_login(olivia)
    for data in (b"\x00\x01", b"[{}]", b"id,name\n1,2\n", broken(lambda d: d[0].pop("location"))):
        response = client.post(reverse("sandbox-import"), {"file": upload(data)})
        assert response.status_code == 400 and "Nothing was imported" in response.text
    assert "entry 1 (web-01): location: is missing." in response.text
    response = client.post(reverse("sandbox-import"), {})
    assert response.status_code == 200 and "This field is required" in response.text
    assert not FleetImport.objects.exists() and not VirtualMachine.objects.exists()


def test_a_file_above_the_limit_is_refused(client, olivia, settings):
    settings.PORTAL_IMPORT_MAX_BYTES = 1000
    client.force_login(olivia)
    response = client.post(reverse("sandbox-import"), {"file": upload(sample())})
    assert "use manage.py import_fleet for larger fleets" in response.text
    assert not FleetImport.objects.exists()


def test_another_users_preview_is_not_found_and_confirm_needs_post_and_csrf(client, olivia):
    client.force_login(olivia)
    client.post(reverse("sandbox-import"), {"file": upload(sample())})
    pending = FleetImport.objects.get()
    mallory = make_user("mallory")
    other = Client()
    other.force_login(mallory)
    assert other.get(reverse("sandbox-import-preview", args=[pending.pk])).status_code == 404
    assert other.post(reverse("sandbox-import-confirm", args=[pending.pk])).status_code == 404
    assert client.get(reverse("sandbox-import-confirm", args=[pending.pk])).status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(olivia)
    assert strict.post(reverse("sandbox-import-confirm", args=[pending.pk])).status_code == 403
    assert not VirtualMachine.objects.exists()
    anonymous = Client().get(reverse("sandbox-import"))
    assert anonymous.status_code == 302 and "login" in anonymous["Location"]


def test_the_preview_plans_again_at_confirm_time(client, olivia):
    """A VM created between preview and confirm is refused then, not duplicated."""
    client.force_login(olivia)
    client.post(reverse("sandbox-import"), {"file": upload(sample()[:1])})
    pending = FleetImport.objects.get()
    entries = fleet_import.parse(json.dumps(sample()[:1]).encode())
    from patching import services

    services.import_fleet(fleet_import.plan(entries, olivia), olivia)
    client.post(reverse("sandbox-import-confirm", args=[pending.pk]))
    assert VirtualMachine.objects.count() == 1
    assert FleetImport.objects.get().result["refused"] == 1


def test_the_preview_costs_the_same_queries_for_7_vms_and_for_300(client, olivia):
    client.force_login(olivia)
    counts = []
    for documents in (sample(), fleetfile.generate(300, seed=2)):
        client.post(reverse("sandbox-import"), {"file": upload(documents)})
        url = reverse("sandbox-import-preview", args=[FleetImport.objects.get(imported_at=None).pk])
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_a_vm_created_during_the_import_loses_nothing_and_is_no_500(client, olivia, monkeypatch):
    from django.db import IntegrityError

    from patching import services

    def collide(*args, **kwargs):
        raise IntegrityError('duplicate key value violates unique constraint "unique_vm_name_per_rg"')

    client.force_login(olivia)
    client.post(reverse("sandbox-import"), {"file": upload(sample())})
    pending = FleetImport.objects.get()
    monkeypatch.setattr(services, "import_fleet", collide)
    response = client.post(reverse("sandbox-import-confirm", args=[pending.pk]), follow=True)
    assert response.status_code == 200 and "nothing was imported" in response.text
    pending.refresh_from_db()
    assert pending.imported_at is None and len(pending.entries) == 7  # it can be confirmed again


def test_without_an_owner_the_vms_are_the_superusers_to_see(catalog, tmp_path, capsys):
    path = tmp_path / "vms.json"
    path.write_text(json.dumps(sample()))
    call_command("import_fleet", str(path))
    assert "new subscriptions get no owner" in capsys.readouterr().err
    assert VirtualMachine.objects.count() == 6 and not RoleAssignment.objects.exists()
    root = make_user("root", superuser=True)
    assert VirtualMachine.objects.visible_to(root).count() == 6


def test_a_region_the_portal_does_not_list_is_kept_and_noted(olivia):
    documents = [
        fleetfile.entry(SUB, "rg", "br-01", "brazilsouth"),
        fleetfile.entry(SUB, "rg", "bad-01", "West Europe!"),
        fleetfile.entry(SUB, "rg(legacy)", "old-01", "westeurope"),
    ]
    rows = {
        row.entry.name: row
        for row in fleet_import.plan(fleet_import.parse(json.dumps(documents).encode()), olivia).rows
    }
    assert rows["br-01"].region == "brazilsouth" and not rows["br-01"].refused
    assert "last rollout phase" in rows["br-01"].notes[0]
    assert rows["bad-01"].refused == "'West Europe!' is not an Azure region name."
    assert rows["old-01"].refused.startswith("Resource group 'rg(legacy)': the portal's names are")


@pytest.mark.parametrize(
    ("image", "product"),
    [
        (("MicrosoftSQLServer", "sql2019-ws2022", "enterprise"), "ws2022"),
        (("MicrosoftSQLServer", "sql2022-ws2019", "standard"), "ws2019"),
        (("MicrosoftWindowsServer", "WindowsServer", "2025-datacenter-g2"), "ws2025-azure"),
        (GALLERY.replace("ws2022-golden", "win2019-base"), "ws2019"),
        (GALLERY.replace("ws2022-golden", "golden"), "ws2022"),
        (
            "/subscriptions/00002019-0000-4000-8000-000000002025/resourceGroups/rg/providers/Microsoft.Compute/images/base",
            "ws2022",
        ),
    ],
)
def test_an_unknown_image_is_patched_as_the_version_its_names_mention(image, product):
    documents = [
        fleetfile.entry(SUB, "rg", "vm-1", "westeurope", image=image, patch=("AutomaticByOS", False, "ImageDefault"))
    ]
    (entry,) = fleet_import.parse(json.dumps(documents).encode())
    assert fleet_import.guess_product(entry).code == product
