"""The rollup trigger functions again, now declared `SET jit = off`."""

from django.db import migrations

from patching import rollup


class Migration(migrations.Migration):
    dependencies = [
        ("patching", "0015_coarse_fleet_rollup"),
    ]

    operations = [migrations.RunPython(rollup.reinstall_functions, migrations.RunPython.noop)]
