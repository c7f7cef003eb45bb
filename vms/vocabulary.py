"""The inventory's words, each stated once with the label the Azure portal shows. Pure: no models.

The values are the ARM wire values (azure-api.md §1); the forms, the admin, the template tags and
/arm/openapi.json all read them from here.
"""

from django.db.models import TextChoices


class PatchMode(TextChoices):
    """patchSettings.patchMode."""

    AUTOMATIC_BY_PLATFORM = "AutomaticByPlatform", "Azure-orchestrated"
    AUTOMATIC_BY_OS = "AutomaticByOS", "Windows automatic updates"
    MANUAL = "Manual", "Manual updates"


class AssessmentMode(TextChoices):
    """patchSettings.assessmentMode."""

    IMAGE_DEFAULT = "ImageDefault", "Image default"
    AUTOMATIC_BY_PLATFORM = "AutomaticByPlatform", "Periodic (every 24 hours)"


class RebootSetting(TextChoices):
    """Whether a patch run may reboot: automaticByPlatformSettings.rebootSetting and installPatches'
    rebootSetting take the same three values."""

    IF_REQUIRED = "IfRequired", "Reboot if required"
    NEVER = "Never", "Never reboot"
    ALWAYS = "Always", "Always reboot"


# "Unknown" is a value Azure reports for rebootSetting; it is accepted on input and means IfRequired.
REBOOT_SETTING_UNKNOWN = "Unknown"


class RegistrationState(TextChoices):
    """Microsoft.Features and provider registration states (azure-api.md §6)."""

    NOT_REGISTERED = "NotRegistered", "Not registered"
    REGISTERING = "Registering"
    REGISTERED = "Registered"
    UNREGISTERING = "Unregistering"
    UNREGISTERED = "Unregistered"


def label(choices: type[TextChoices], value) -> str:
    """The label of a value, or the value itself when it is not one of the choices (shown as it came)."""
    return choices(value).label if value in choices.values else ("" if value is None else str(value))
