"""System checks: the automatic-patching settings make sense before anything runs on them.

`manage.py check`, `migrate` (and so `make demo`) stop with the setting's name and what is wrong. A
value changed under a running worker is caught again by the beat tasks, which log it and skip.
"""

from django.core.checks import Error, register

from .orchestrator.engine import current_rules


@register()
def orchestrator_settings(app_configs, **kwargs) -> list[Error]:
    try:
        current_rules()
    except ValueError as e:
        return [Error(str(e), hint="Fix the environment variable it names.", id="patching.E001")]
    return []
