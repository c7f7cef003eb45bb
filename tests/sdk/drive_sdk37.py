"""Drive the portal with the previous generation of the SDK: azure-mgmt-compute 37.x (AutoRest,
final-state-via location) and azure-mgmt-resource 23.x (FeatureClient still inside it).

Runs in its own virtualenv (tests/test_arm_sdk37.py builds it), so it imports nothing of the project.
Usage: python drive_sdk37.py SCENARIO BASE_URL TOKEN SUBSCRIPTION RESOURCE_GROUP VM
Prints one JSON object with what it saw. This uses azure-api.md §8's way C: the SDK's own bearer
policy with a credential, and enforce_https=False on every call (the pollers inherit it).
"""

import json
import sys
import time
from datetime import timedelta
from importlib.metadata import version

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute import models as m
from azure.mgmt.resource import ResourceManagementClient
from azure.mgmt.resource.features import FeatureClient

HTTP = {"enforce_https": False}


class Credential:
    def __init__(self, token: str):
        self.token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self.token, int(time.time()) + 3600)


def error(e: HttpResponseError) -> dict:
    return {"type": type(e).__name__, "status": e.status_code, "code": e.error.code, "target": e.error.target}


def main(scenario, base_url, token, subscription, rg, vm_name):
    credential = Credential(token)
    compute = ComputeManagementClient(credential, subscription, base_url=base_url, polling_interval=0, retry_total=0)
    out = {"compute_version": version("azure-mgmt-compute"), "resource_version": version("azure-mgmt-resource")}

    if scenario == "patching":
        vm = compute.virtual_machines.get(rg, vm_name, expand="instanceView", **HTTP)
        out["patch_mode"] = vm.os_profile.windows_configuration.patch_settings.patch_mode
        out["power"] = [s.code for s in vm.instance_view.statuses if s.code.startswith("PowerState/")]

        assessment = compute.virtual_machines.begin_assess_patches(rg, vm_name, **HTTP).result()
        out["assessment"] = {
            "status": assessment.status,
            "activity": assessment.assessment_activity_id,
            "kbs": sorted(p.kb_id for p in assessment.available_patches),
            "classifications": sorted({c for p in assessment.available_patches for c in p.classifications}),
        }
        parameters = m.VirtualMachineInstallPatchesParameters(
            maximum_duration=timedelta(hours=4),  # AutoRest sends "PT4H"
            reboot_setting="Never",
            windows_parameters=m.WindowsParameters(
                classifications_to_include=["Critical", "Security"], kb_numbers_to_exclude=["890830"]
            ),
        )
        install = compute.virtual_machines.begin_install_patches(rg, vm_name, parameters, **HTTP).result()
        out["install"] = {
            "status": install.status,
            "activity": install.installation_activity_id,
            "installed": install.installed_patch_count,
            "failed": install.failed_patch_count,
            "excluded": install.excluded_patch_count,
            "not_selected": install.not_selected_patch_count,
            "pending": install.pending_patch_count,
            "reboot": install.reboot_status,
            "states": {p.kb_id: p.installation_state for p in install.patches},
        }
        try:
            compute.virtual_machines.begin_install_patches(
                rg, vm_name, {"rebootSetting": "Sometimes", "windowsParameters": {}}, **HTTP
            )
        except HttpResponseError as e:
            out["bad_reboot_setting"] = error(e)
        try:
            compute.virtual_machines.get(rg, "no-such-vm", **HTTP)
        except ResourceNotFoundError as e:
            out["missing_vm"] = error(e)

    elif scenario == "conflict":
        # The caller holds the VM's guest row: the first assessment cannot finish meanwhile.
        compute.virtual_machines.begin_assess_patches(rg, vm_name, polling=False, **HTTP)
        try:
            compute.virtual_machines.begin_assess_patches(rg, vm_name, polling=False, **HTTP)
        except ResourceExistsError as e:
            out["conflict"] = error(e)

    elif scenario == "onboarding":
        features = FeatureClient(credential, subscription, base_url=base_url, retry_total=0)
        feature = features.features.register("Microsoft.Compute", "InGuestAutoPatchVMPreview", **HTTP)
        out["feature"] = {"name": feature.name, "state": feature.properties.state}
        resources = ResourceManagementClient(credential, subscription, base_url=base_url, retry_total=0)
        provider = resources.providers.register("Microsoft.Compute", **HTTP)
        out["provider"] = {"namespace": provider.namespace, "state": provider.registration_state}

    elif scenario == "lifecycle":
        body = m.VirtualMachine(
            location="northeurope",
            storage_profile=m.StorageProfile(
                image_reference=m.ImageReference(
                    publisher="MicrosoftWindowsServer", offer="WindowsServer", sku="2019-datacenter", version="latest"
                )
            ),
        )
        created = compute.virtual_machines.begin_create_or_update(rg, vm_name, body, **HTTP).result()
        out["created"] = {
            "name": created.name,
            "patch_mode": created.os_profile.windows_configuration.patch_settings.patch_mode,
            "hotpatch": created.os_profile.windows_configuration.patch_settings.enable_hotpatching,
        }
        update = m.VirtualMachineUpdate(
            os_profile=m.OSProfile(
                windows_configuration=m.WindowsConfiguration(
                    patch_settings=m.PatchSettings(assessment_mode="AutomaticByPlatform")
                )
            )
        )
        updated = compute.virtual_machines.begin_update(rg, vm_name, update, **HTTP).result()
        out["updated_assessment_mode"] = updated.os_profile.windows_configuration.patch_settings.assessment_mode
        out["deleted"] = compute.virtual_machines.begin_delete(rg, vm_name, **HTTP).result()
        try:
            compute.virtual_machines.get(rg, vm_name, **HTTP)
        except ResourceNotFoundError as e:
            out["after_delete"] = error(e)

    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
