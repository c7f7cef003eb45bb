"""Install updates now: the dialog's fields, turned into the installPatches body that `from_arm` validates.

The form only collects what was typed. Every rule (KB syntax, a KB both included and excluded, at
least one classification or KB, the duration range, the date format) is `parameters.from_arm`'s, so
the portal and the API refuse exactly the same things; its problems come back onto these fields.
"""

from django import forms

from .models import CLASSIFICATION_LABELS, Classification
from .parameters import DEFAULT_DURATION, REBOOT_SETTINGS, InstallParameters, InvalidParameters, from_arm, split_kbs

FIELDS = {
    "windowsParameters.classificationsToInclude": "classifications",
    "windowsParameters.kbNumbersToInclude": "kbs_to_include",
    "windowsParameters.kbNumbersToExclude": "kbs_to_exclude",
    "windowsParameters.excludeKbsRequiringReboot": "exclude_kbs_requiring_reboot",
    "windowsParameters.maxPatchPublishDate": "max_patch_publish_date",
    "maximumDuration": "maximum_duration",
    "rebootSetting": "reboot_setting",
}
REBOOT_CHOICES = [("IfRequired", "Reboot if required"), ("Never", "Never reboot"), ("Always", "Always reboot")]
assert [value for value, _ in REBOOT_CHOICES] == list(REBOOT_SETTINGS)


class InstallForm(forms.Form):
    classifications = forms.MultipleChoiceField(
        label="Update classifications",
        choices=[(c.value, CLASSIFICATION_LABELS[c]) for c in Classification],
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
        label="Reboot option", choices=REBOOT_CHOICES, initial="IfRequired", widget=forms.RadioSelect
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
                field = FIELDS.get(problem.target)
                if field not in own_errors:
                    self.add_error(field, problem.message)
            return None
        return parameters if valid else None
