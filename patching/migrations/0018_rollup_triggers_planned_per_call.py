"""The rollup trigger functions again, their statements now EXECUTEd: planned per call."""

from django.db import migrations

from patching import rollup


class Migration(migrations.Migration):
    dependencies = [
        ("patching", "0017_redundant_indexes_dropped"),
    ]

    operations = [migrations.RunPython(rollup.reinstall_functions, migrations.RunPython.noop)]
