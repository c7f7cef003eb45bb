"""Patching's words, each stated once with its label. Pure: no models, so the guest simulation and
the orchestrator's rules use the same values as the database, the pages and /arm/openapi.json.
"""

from django.db.models import TextChoices


class Classification(TextChoices):
    """The install-filter tokens (VMGuestPatchClassificationWindows); labelled as Windows Update names
    the classification in assessment results (free text, not the filter token)."""

    CRITICAL = "Critical", "Critical Updates"
    SECURITY = "Security", "Security Updates"
    UPDATE_ROLLUP = "UpdateRollUp", "Update Rollups"
    FEATURE_PACK = "FeaturePack", "Feature Packs"
    SERVICE_PACK = "ServicePack", "Service Packs"
    DEFINITION = "Definition", "Definition Updates"
    TOOLS = "Tools", "Tools"
    UPDATES = "Updates", "Updates"


class RebootBehavior(TextChoices):
    NEVER = "NeverReboots", "Never reboots"
    ALWAYS = "AlwaysRequiresReboot", "Always requires reboot"
    CAN_REQUEST = "CanRequestReboot", "Can request reboot"


class UpdateKind(TextChoices):
    BASELINE = "baseline", "Baseline (planned)"
    UNPLANNED_BASELINE = "unplanned_baseline", "Baseline (unplanned)"
    HOTPATCH = "hotpatch", "Hotpatch"
    MONTHLY = "monthly", "Monthly cumulative update"
    OUT_OF_BAND = "oob", "Out-of-band cumulative update"
    PREVIEW = "preview", "Non-security preview"
    DOTNET = "dotnet", ".NET cumulative update"
    MSRT = "msrt", "Malicious Software Removal Tool"
    DEFINITION = "definition", "Defender definition update"


BASELINE_KINDS = frozenset({UpdateKind.BASELINE, UpdateKind.UNPLANNED_BASELINE})
# Rebooting security cumulative updates: the newest one released supersedes all Windows updates before it.
SECURITY_CUMULATIVE_KINDS = frozenset({*BASELINE_KINDS, UpdateKind.MONTHLY})
# Non-security cumulative updates: offered on top of the security one, never to hotpatch-enrolled VMs
# (installing one would take the VM off its baseline build).
QUALITY_CUMULATIVE_KINDS = frozenset({UpdateKind.OUT_OF_BAND, UpdateKind.PREVIEW})
# Rebooting cumulative updates of the Windows servicing stack (not hotpatches).
CUMULATIVE_KINDS = SECURITY_CUMULATIVE_KINDS | QUALITY_CUMULATIVE_KINDS
WINDOWS_KINDS = CUMULATIVE_KINDS | {UpdateKind.HOTPATCH}
# Other families: the newest of each supersedes the older ones of that family.
STANDALONE_KINDS = (UpdateKind.DOTNET, UpdateKind.MSRT, UpdateKind.DEFINITION)


class HotpatchStatus(TextChoices):
    """The API's hotpatchEnablementStatus."""

    UNKNOWN = "Unknown"
    PENDING_EVALUATION = "PendingEvaluation", "Pending evaluation"
    DISABLED = "Disabled"
    ACTION_REQUIRED = "ActionRequired", "Action required"
    ENABLED = "Enabled"


class PatchState(TextChoices):
    AVAILABLE = "Available"
    INSTALLED = "Installed"
    FAILED = "Failed"
    PENDING = "Pending"
    EXCLUDED = "Excluded"
    NOT_SELECTED = "NotSelected", "Not selected"


class FaultKind(TextChoices):
    """What a sandbox fault makes happen (patching.faults)."""

    ASSESSMENT_FAILS = "assessment_fails", "Assessment fails"
    AGENT_UNREACHABLE = "agent_unreachable", "VM agent unreachable"
    KB_FAILS = "kb_fails", "KB fails to install"
    SLOW_INSTALL = "slow_install", "Installation exceeds its maximum duration"
    REBOOT_HANGS = "reboot_hangs", "VM hangs in reboot"
    ROLLOUT_HALT = "rollout_halt", "Rollout halts on health"
