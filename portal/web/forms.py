"""The portal's forms. They collect input; the rules live in the services they feed.

Each form maps the services' problems (ARM property paths) back onto its own fields, so an error
shows next to the field it is about.
"""

from zoneinfo import available_timezones

from django import forms

from patching.models import Classification
from patching.parameters import (
    DEFAULT_DURATION,
    InstallParameters,
    InvalidParameters,
    from_arm,
    split_kbs,
)
from vms import images, regions
from vms.models import ResourceGroup, Subscription
from vms.patch_settings import PatchSettings, Problem
from vms.vocabulary import AssessmentMode, PatchMode, RebootSetting

PS = "properties.osProfile.windowsConfiguration.patchSettings"
# Problem targets (services, patch_settings) -> the field that shows the message.
SETTINGS_FIELDS = {
    f"{PS}.patchMode": "patch_mode",
    f"{PS}.enableHotpatching": "enable_hotpatching",
    f"{PS}.assessmentMode": "assessment_mode",
    f"{PS}.automaticByPlatformSettings.rebootSetting": "reboot_setting",
    "properties.osProfile.windowsConfiguration.enableAutomaticUpdates": "patch_mode",
}
CREATE_FIELDS = {
    **SETTINGS_FIELDS,
    "name": "name",
    "location": "location",
    "zones": "zone",
    "properties.storageProfile.imageReference": "image_sku",
    "properties.osProfile.windowsConfiguration.timeZone": "time_zone",
}

SIZES = [
    "Standard_B2ms",
    "Standard_D2s_v5",
    "Standard_D4s_v5",
    "Standard_D8s_v5",
    "Standard_E4s_v5",
    "Standard_E8s_v5",
    "Standard_F4s_v2",
]
TIME_ZONES = sorted(available_timezones())


def add_problems(form: forms.Form, problems: list[Problem], fields: dict[str, str]) -> None:
    """Attach each problem to the field its target names, or to the form as a whole."""
    for problem in problems:
        field = fields.get(problem.target)
        form.add_error(field if field in form.fields else None, problem.message)


class PatchSettingsFields(forms.Form):
    """Guest OS updates: the part of patchSettings a person sets in the portal."""

    patch_mode = forms.ChoiceField(
        label="Patch orchestration",
        choices=PatchMode.choices,
        widget=forms.RadioSelect,
    )
    enable_hotpatching = forms.BooleanField(
        label="Enable hotpatch",
        required=False,
        help_text="Install security updates without rebooting, between quarterly baselines.",
    )
    reboot_setting = forms.ChoiceField(
        label="Reboot option",
        choices=RebootSetting.choices,
        help_text="How Azure-orchestrated patching reboots the VM when an update needs it.",
    )
    assessment_mode = forms.ChoiceField(
        label="Periodic assessment",
        choices=AssessmentMode.choices,
        help_text="Periodic assessment checks for missing updates every 24 hours.",
    )

    def patch_settings(self, current: PatchSettings) -> PatchSettings:
        data = self.cleaned_data
        return current.with_changes(
            patch_mode=data["patch_mode"],
            enable_hotpatching=data["enable_hotpatching"],
            reboot_setting=data["reboot_setting"],
            assessment_mode=data["assessment_mode"],
        )


class PatchSettingsForm(PatchSettingsFields):
    # The VM's version the page showed: a save made on an older page is refused, not applied over a
    # change its user never saw. The page always sends it; a post without it is merged under the lock.
    version = forms.IntegerField(widget=forms.HiddenInput, min_value=1, required=False)

    @classmethod
    def for_vm(cls, vm, data=None) -> "PatchSettingsForm":
        initial = {
            "patch_mode": vm.patch_mode,
            "enable_hotpatching": vm.enable_hotpatching,
            "reboot_setting": vm.reboot_setting,
            "assessment_mode": vm.assessment_mode,
            "version": vm.version,
        }
        return cls(data=data, initial=initial)

    @classmethod
    def current(cls, vm) -> "PatchSettingsForm":
        """A bound form holding the VM's stored settings (to show them with an error)."""
        initial = cls.for_vm(vm).initial
        form = cls.for_vm(vm, data={name: value for name, value in initial.items() if value is not False})
        form.is_valid()
        return form

    def changes(self) -> dict:
        """The settings this form sets, as PatchSettings field names (merged onto the stored ones)."""
        return {name: self.cleaned_data[name] for name in PatchSettingsFields.base_fields}

    def add_problems(self, problems: list[Problem]) -> None:
        add_problems(self, problems, SETTINGS_FIELDS)


def image_choices() -> list:
    """SKUs grouped by product, hotpatch-capable ones marked, as the create form's image list."""
    groups = []
    for product in images.PRODUCTS.values():
        options = [(sku, f"{sku}{'  (hotpatch)' if sku in product.hotpatch_skus else ''}") for sku in product.skus]
        groups.append((product.name, options))
    return groups


DEFAULT_IMAGE = images.PRODUCTS["ws2025-azure"].default_sku


class CreateVmForm(PatchSettingsFields):
    """Create a virtual machine: Basics, then Management › Guest OS updates (the seed's getting started)."""

    subscription = forms.ModelChoiceField(queryset=Subscription.objects.none(), empty_label=None)
    resource_group = forms.ChoiceField(label="Resource group")
    name = forms.CharField(label="Virtual machine name", max_length=64)
    location = forms.ChoiceField(label="Region", choices=regions.REGION_CHOICES, initial="westeurope")
    zone = forms.ChoiceField(
        label="Availability zone",
        required=False,
        choices=[("", "No infrastructure redundancy required"), ("1", "Zone 1"), ("2", "Zone 2"), ("3", "Zone 3")],
    )
    availability_set = forms.CharField(
        label="Availability set",
        required=False,
        max_length=80,
        help_text="Or put the VM in an availability set (not both).",
    )
    image_sku = forms.ChoiceField(label="Image", choices=image_choices, initial=DEFAULT_IMAGE)
    size = forms.ChoiceField(choices=[(s, s) for s in SIZES], initial="Standard_D2s_v5")
    time_zone = forms.CharField(
        label="Time zone",
        initial="UTC",
        widget=forms.TextInput(attrs={"list": "time-zones", "autocomplete": "off"}),
        help_text="IANA name, e.g. Europe/Stockholm. Automatic patching runs at night in this zone.",
    )

    field_order = [
        "subscription",
        "resource_group",
        "name",
        "location",
        "zone",
        "availability_set",
        "image_sku",
        "size",
        "time_zone",
        "patch_mode",
        "enable_hotpatching",
        "reboot_setting",
        "assessment_mode",
    ]

    def __init__(self, *args, subscriptions, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["subscription"].queryset = subscriptions
        groups: dict[str, list] = {}
        for rg in ResourceGroup.objects.filter(subscription__in=subscriptions).select_related("subscription"):
            groups.setdefault(rg.subscription.display_name, []).append(
                (str(rg.pk), f"{rg.name} ({regions.REGIONS.get(rg.location, rg.location)})")
            )
        self.fields["resource_group"].choices = sorted(groups.items())
        self.resource_groups = subscriptions  # for clean_resource_group
        self.fields["reboot_setting"].initial = "IfRequired"

    def selected(self, name: str, default: str = "") -> str:
        """The value the user picked (bound) or the initial one, before validation."""
        if self.is_bound:
            return self.data.get(self.add_prefix(name), default) or default
        value = self.initial.get(name, self.fields[name].initial)
        return str(value.pk if hasattr(value, "pk") else value or default)

    def clean_resource_group(self) -> ResourceGroup:
        pk = self.cleaned_data["resource_group"]
        rg = ResourceGroup.objects.filter(pk=pk, subscription__in=self.resource_groups).first()
        if rg is None:
            raise forms.ValidationError("Choose one of your resource groups.")
        return rg

    def clean(self):
        data = super().clean()
        rg, subscription = data.get("resource_group"), data.get("subscription")
        if rg and subscription and rg.subscription_id != subscription.pk:
            self.add_error("resource_group", f"Resource group '{rg.name}' is not in subscription '{subscription}'.")
        return data

    def new_patch_settings(self) -> PatchSettings:
        # enableAutomaticUpdates follows the orchestration: Manual needs it off, the others on.
        return self.patch_settings(PatchSettings(enable_automatic_updates=self.cleaned_data["patch_mode"] != "Manual"))

    def add_problems(self, problems: list[Problem]) -> None:
        add_problems(self, problems, CREATE_FIELDS)


class DeleteVmForm(forms.Form):
    confirm_name = forms.CharField(label="Type the virtual machine name to confirm", max_length=64)

    def __init__(self, *args, vm, **kwargs):
        super().__init__(*args, **kwargs)
        self.vm = vm

    def clean_confirm_name(self) -> str:
        value = self.cleaned_data["confirm_name"].strip()
        if value.lower() != self.vm.name.lower():
            raise forms.ValidationError(f"Type '{self.vm.name}' to delete this virtual machine.")
        return value


class TimeZoneForm(forms.Form):
    time_zone = forms.ChoiceField(
        label="Show times in",
        choices=[("", "My browser's time zone")] + [(tz, tz) for tz in TIME_ZONES],
        required=False,
    )


# --- Install updates now: the dialog's fields, turned into the installPatches body that `from_arm` validates.
#
#
# The form only collects what was typed. Every rule (KB syntax, a KB both included and excluded, at
# least one classification or KB, the duration range, the date format) is `parameters.from_arm`'s, so
# the portal and the API refuse exactly the same things; its problems come back onto these fields.

INSTALL_FIELDS = {
    "windowsParameters.classificationsToInclude": "classifications",
    "windowsParameters.kbNumbersToInclude": "kbs_to_include",
    "windowsParameters.kbNumbersToExclude": "kbs_to_exclude",
    "windowsParameters.excludeKbsRequiringReboot": "exclude_kbs_requiring_reboot",
    "windowsParameters.maxPatchPublishDate": "max_patch_publish_date",
    "maximumDuration": "maximum_duration",
    "rebootSetting": "reboot_setting",
}


class InstallForm(forms.Form):
    classifications = forms.MultipleChoiceField(
        label="Update classifications",
        choices=Classification.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        initial=[Classification.CRITICAL, Classification.SECURITY],
    )
    kbs_to_include = forms.CharField(
        label="Include KB IDs",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "KB5012345, 5012346"}),
        help_text="Installed whatever their classification. Separate with commas, spaces or new lines.",
    )
    kbs_to_exclude = forms.CharField(
        label="Exclude KB IDs",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "KB5012345"}),
        help_text="Never installed in this run, even when their classification is selected.",
    )
    exclude_kbs_requiring_reboot = forms.BooleanField(label="Exclude KBs that require a reboot", required=False)
    max_patch_publish_date = forms.CharField(
        label="Include updates published up to",
        required=False,
        widget=forms.DateInput(attrs={"type": "date", "placeholder": "YYYY-MM-DD"}),
        help_text="Optional. Updates published after this date are not installed.",
    )
    reboot_setting = forms.ChoiceField(
        label="Reboot option",
        choices=RebootSetting.choices,
        initial=RebootSetting.IF_REQUIRED,
        widget=forms.RadioSelect,
    )
    maximum_duration = forms.IntegerField(
        label="Maximum duration (minutes)",
        initial=int(DEFAULT_DURATION.total_seconds() // 60),
        help_text="10 to 240. Updates that don't fit stay pending.",
        widget=forms.NumberInput(attrs={"min": 10, "max": 240, "step": 5}),
    )

    def arm_body(self) -> dict:
        """The installPatches request body (azure-api.md §4) for what was typed.

        A field that failed its own cleaning (a duration that is not a number) is left out, so
        `from_arm` still reports everything else in the same round trip.
        """
        data = self.cleaned_data
        body = {
            "rebootSetting": data.get("reboot_setting"),
            "windowsParameters": {
                "classificationsToInclude": list(data.get("classifications", [])),
                "kbNumbersToInclude": split_kbs(data.get("kbs_to_include", "")),
                "kbNumbersToExclude": split_kbs(data.get("kbs_to_exclude", "")),
                "excludeKbsRequiringReboot": data.get("exclude_kbs_requiring_reboot", False),
                "maxPatchPublishDate": (data.get("max_patch_publish_date") or "").strip() or None,
            },
        }
        if data.get("maximum_duration") is not None:
            body["maximumDuration"] = f"PT{data['maximum_duration']}M"
        return body

    def install_parameters(self) -> InstallParameters | None:
        """Validated parameters, or None with every problem attached to its field."""
        valid = self.is_valid()
        own_errors = set(self.errors)  # the form's own message comes first; don't pile on
        try:
            parameters = from_arm(self.arm_body())
        except InvalidParameters as invalid:
            for problem in invalid.problems:
                field = INSTALL_FIELDS.get(problem.target)
                if field not in own_errors:
                    self.add_error(field, problem.message)
            return None
        return parameters if valid else None


# --- Maintenance configurations (Basics · Dynamic scopes · Machines · Updates · Events) -----------------


def _maintenance_choices():
    from patching.maintenance.timezones import windows_names

    return [(name, name) for name in windows_names()]


DURATION_CHOICES = [(f"{m // 60:02d}:{m % 60:02d}", f"{m // 60} h {m % 60:02d} min") for m in range(90, 236, 5)]
MAINTENANCE_REBOOT_CHOICES = [
    ("IfRequired", "Reboot if required"),
    ("Never", "Never reboot"),
    ("Always", "Always reboot"),
]
RECUR_EXAMPLES = [
    "Day",
    "3Days",
    "Week Saturday,Sunday",
    "2Weeks Tuesday",
    "Month day23,day24",
    "Month Last Sunday",
    "Month Second Tuesday Offset3",
    "6Hours",
]


class MaintenanceConfigurationForm(forms.Form):
    """A maintenance configuration as the portal's create/edit form has it; `arm_body()` is what the
    API would receive, so both are validated by the same service (patching.maintenance.services)."""

    resource_group = forms.ModelChoiceField(
        queryset=ResourceGroup.objects.none(), label="Resource group", empty_label=None
    )
    name = forms.CharField(label="Configuration name", max_length=80)
    location = forms.ChoiceField(label="Region", choices=regions.REGION_CHOICES)
    start_date_time = forms.CharField(
        label="Starts on", max_length=16, help_text="yyyy-MM-dd HH:mm, in the time zone below."
    )
    time_zone = forms.ChoiceField(label="Time zone", initial="UTC")
    duration = forms.ChoiceField(label="Maintenance window", choices=DURATION_CHOICES, initial="03:55")
    recur_every = forms.CharField(
        label="Repeats",
        max_length=120,
        widget=forms.TextInput(attrs={"list": "recur-examples"}),
        initial="Month Second Tuesday Offset3",
        help_text="Azure's recurEvery, e.g. " + ", ".join(RECUR_EXAMPLES[:-1]) + ".",
    )
    expiration_date_time = forms.CharField(
        label="Ends on", max_length=19, required=False, help_text="Optional, yyyy-MM-dd HH:mm. Empty: never."
    )
    # Dynamic scope: the configuration's subscription, filtered.
    scope_resource_groups = forms.CharField(label="Resource groups", required=False, help_text="Comma separated.")
    scope_locations = forms.MultipleChoiceField(
        label="Regions", required=False, choices=regions.REGION_CHOICES, widget=forms.SelectMultiple(attrs={"size": 4})
    )
    scope_tags = forms.CharField(
        label="Tags",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One name=value per line (name= alone: any value).",
    )
    scope_operator = forms.ChoiceField(
        label="Match",
        choices=[("Any", "Any of the tags"), ("All", "All of the tags")],
        initial="Any",
        widget=forms.RadioSelect,
    )
    machines = forms.CharField(
        label="Machines",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="VM names in the configuration's subscription, separated by commas or new lines.",
    )
    reboot_setting = forms.ChoiceField(label="Reboot", choices=MAINTENANCE_REBOOT_CHOICES, initial="IfRequired")
    classifications = forms.MultipleChoiceField(
        label="Classifications",
        choices=Classification.choices,
        initial=[Classification.CRITICAL, Classification.SECURITY],
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    kbs_to_include = forms.CharField(label="Include KBs", required=False, max_length=2000)
    kbs_to_exclude = forms.CharField(label="Exclude KBs", required=False, max_length=2000)
    exclude_kbs_requiring_reboot = forms.BooleanField(label="Exclude updates that need a reboot", required=False)
    webhook_url = forms.CharField(
        label="Webhook", required=False, max_length=500, help_text="https URL receiving the pre- and post-events."
    )
    pre_event_minutes = forms.IntegerField(
        label="Pre-event", min_value=0, max_value=20, initial=20, help_text="Minutes before the window (0 to 20)."
    )

    def __init__(self, *args, groups=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["resource_group"].queryset = groups if groups is not None else ResourceGroup.objects.none()
        self.fields["time_zone"].choices = _maintenance_choices()

    def arm_body(self) -> dict:
        data = self.cleaned_data
        return {
            "location": data["location"],
            "properties": {
                "maintenanceScope": "InGuestPatch",
                "visibility": "Custom",
                "extensionProperties": {"InGuestPatchMode": "User"},
                "maintenanceWindow": {
                    "startDateTime": data["start_date_time"].strip(),
                    "duration": data["duration"],
                    "timeZone": data["time_zone"],
                    "recurEvery": data["recur_every"].strip(),
                    **(
                        {"expirationDateTime": data["expiration_date_time"].strip()}
                        if data["expiration_date_time"].strip()
                        else {}
                    ),
                },
                "installPatches": {
                    "rebootSetting": data["reboot_setting"],
                    "windowsParameters": {
                        "classificationsToInclude": list(data["classifications"]),
                        "kbNumbersToInclude": split_kbs(data["kbs_to_include"]),
                        "kbNumbersToExclude": split_kbs(data["kbs_to_exclude"]),
                        "excludeKbsRequiringReboot": data["exclude_kbs_requiring_reboot"],
                    },
                },
                "preEventMinutes": data["pre_event_minutes"],
            },
        }

    def scope_filter(self) -> dict | None:
        """The dynamic scope's filter, or None when no criterion is given."""
        data = self.cleaned_data
        groups = [g.strip() for g in data["scope_resource_groups"].split(",") if g.strip()]
        tags: dict[str, list[str]] = {}
        for line in data["scope_tags"].splitlines():
            if not line.strip():
                continue
            name, _, value = line.partition("=")
            values = tags.setdefault(name.strip(), [])
            if value.strip():
                values.append(value.strip())
        flt = {}
        if groups:
            flt["resourceGroups"] = groups
        if data["scope_locations"]:
            flt["locations"] = list(data["scope_locations"])
        if tags:
            flt["tagSettings"] = {"tags": tags, "filterOperator": data["scope_operator"]}
        return flt or None

    def machine_names(self) -> list[str]:
        return [n for n in split_kbs(self.cleaned_data["machines"]) if n]

    def add_problems(self, problems: list[Problem]) -> None:
        add_problems(self, problems, MAINTENANCE_FIELDS)


W = "properties.maintenanceWindow"
IPW = "properties.installPatches.windowsParameters"
MAINTENANCE_FIELDS = {
    "name": "name",
    "location": "location",
    f"{W}.startDateTime": "start_date_time",
    f"{W}.duration": "duration",
    f"{W}.timeZone": "time_zone",
    f"{W}.recurEvery": "recur_every",
    f"{W}.expirationDateTime": "expiration_date_time",
    "properties.installPatches.rebootSetting": "reboot_setting",
    f"{IPW}.classificationsToInclude": "classifications",
    f"{IPW}.kbNumbersToInclude": "kbs_to_include",
    f"{IPW}.kbNumbersToExclude": "kbs_to_exclude",
    "properties.preEventMinutes": "pre_event_minutes",
    "properties.filter": "scope_resource_groups",
    "properties.filter.resourceGroups": "scope_resource_groups",
    "properties.filter.locations": "scope_locations",
    "properties.filter.tagSettings.tags": "scope_tags",
    "url": "webhook_url",
    "machines": "machines",
}
