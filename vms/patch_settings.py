"""The rules for `osProfile.windowsConfiguration.patchSettings` (azure-api.md §1). Pure, no ORM.

The UI form, the admin and the ARM API all validate through `validate()`, so a rule is stated once.
"""

from dataclasses import dataclass, replace

from .images import is_hotpatch_capable
from .regions import is_government
from .vocabulary import REBOOT_SETTING_UNKNOWN, AssessmentMode, PatchMode, RebootSetting


@dataclass(frozen=True)
class PatchSettings:
    patch_mode: str = "AutomaticByOS"
    enable_hotpatching: bool = False
    assessment_mode: str = "ImageDefault"
    reboot_setting: str = "IfRequired"
    bypass_platform_safety_checks: bool = False
    provision_vm_agent: bool = True
    enable_automatic_updates: bool = True

    def with_changes(self, **changes) -> "PatchSettings":
        return replace(self, **changes)


@dataclass(frozen=True)
class Problem:
    target: str  # the property path, as the ARM error envelope names it
    message: str


def defaults_for_image(publisher: str, offer: str, sku: str, region: str) -> PatchSettings:
    """New VMs: hotpatch on and Azure-orchestrated for capable images (the seed), else Windows' default."""
    if is_hotpatch_capable(publisher, offer, sku) and not is_government(region):
        return PatchSettings(
            patch_mode="AutomaticByPlatform",
            enable_hotpatching=True,
            assessment_mode="AutomaticByPlatform",
        )
    return PatchSettings()


def validate(
    new: PatchSettings,
    *,
    publisher: str,
    offer: str,
    sku: str,
    region: str,
    current: PatchSettings | None = None,
) -> list[Problem]:
    """Every way `new` breaks the rules; empty when it is acceptable. `current` is None at create."""
    p = "properties.osProfile.windowsConfiguration"
    ps = f"{p}.patchSettings"
    problems: list[Problem] = []
    if new.patch_mode not in PatchMode.values:
        problems.append(Problem(f"{ps}.patchMode", f"patchMode must be one of {', '.join(PatchMode.values)}."))
    if new.assessment_mode not in AssessmentMode.values:
        problems.append(
            Problem(f"{ps}.assessmentMode", f"assessmentMode must be one of {', '.join(AssessmentMode.values)}.")
        )
    if new.reboot_setting not in (*RebootSetting.values, REBOOT_SETTING_UNKNOWN):
        problems.append(
            Problem(
                f"{ps}.automaticByPlatformSettings.rebootSetting",
                f"rebootSetting must be one of {', '.join(RebootSetting.values)}.",
            )
        )
    if problems:
        return problems

    if new.patch_mode == "Manual" and new.enable_automatic_updates:
        problems.append(
            Problem(f"{p}.enableAutomaticUpdates", "patchMode Manual requires enableAutomaticUpdates false.")
        )
    if new.patch_mode == "AutomaticByOS" and not new.enable_automatic_updates:
        problems.append(
            Problem(f"{p}.enableAutomaticUpdates", "patchMode AutomaticByOS requires enableAutomaticUpdates true.")
        )
    if new.patch_mode == "AutomaticByPlatform" and not (new.provision_vm_agent and new.enable_automatic_updates):
        problems.append(
            Problem(
                f"{ps}.patchMode",
                "patchMode AutomaticByPlatform requires provisionVMAgent and enableAutomaticUpdates true.",
            )
        )
    if new.assessment_mode == "AutomaticByPlatform" and not new.provision_vm_agent:
        problems.append(
            Problem(f"{ps}.assessmentMode", "assessmentMode AutomaticByPlatform requires provisionVMAgent true.")
        )
    if new.bypass_platform_safety_checks and new.patch_mode != "AutomaticByPlatform":
        problems.append(
            Problem(
                f"{ps}.automaticByPlatformSettings.bypassPlatformSafetyChecksOnUserSchedule",
                "bypassPlatformSafetyChecksOnUserSchedule applies only to patchMode AutomaticByPlatform.",
            )
        )
    if new.enable_hotpatching and new.bypass_platform_safety_checks:
        # Azure's answer (400 InvalidParameter), as reported in claranet/terraform-azurerm-windows-vm#4.
        problems.append(
            Problem(
                f"{ps}.automaticByPlatformSettings.bypassPlatformSafetyChecksOnUserSchedule",
                "Hotpatch updates require platform safety checks. The 'BypassPlatformSafetyChecksOnUserSchedule' "
                "flag must be set to false to enable hotpatching.",
            )
        )
    if new.enable_hotpatching:
        if not is_hotpatch_capable(publisher, offer, sku):
            problems.append(
                Problem(
                    f"{ps}.enableHotpatching",
                    f"Hotpatch is not supported on image {publisher}:{offer}:{sku}; it needs a Windows Server "
                    "Azure Edition Core or Hotpatch image.",
                )
            )
        elif is_government(region):
            problems.append(
                Problem(
                    f"{ps}.enableHotpatching",
                    f"Hotpatch is not available in Azure Government region {region}.",
                )
            )
        if new.patch_mode != "AutomaticByPlatform":
            problems.append(
                Problem(
                    f"{ps}.enableHotpatching",
                    "enableHotpatching requires patchMode AutomaticByPlatform (Azure-orchestrated).",
                )
            )
        if not new.provision_vm_agent:
            problems.append(Problem(f"{ps}.enableHotpatching", "enableHotpatching requires provisionVMAgent true."))

    if current is not None:
        if new.enable_automatic_updates != current.enable_automatic_updates:
            problems.append(
                Problem(
                    f"{p}.enableAutomaticUpdates",
                    "enableAutomaticUpdates can only be set when the VM is created.",
                )
            )
        modes = {current.patch_mode, new.patch_mode}
        if modes == {"AutomaticByOS", "Manual"}:
            problems.append(Problem(f"{ps}.patchMode", "Switching between AutomaticByOS and Manual is not supported."))
    return problems
