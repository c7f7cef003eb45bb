from django.db import migrations


def reinstall_functions(apps, schema_editor):
    """The rollup trigger functions again, their statements now EXECUTEd: planned per call (patching.rollup)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    from patching import rollup

    with schema_editor.connection.cursor() as cursor:
        for statement in rollup.install_sql():
            cursor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("patching", "0017_redundant_indexes_dropped"),
    ]

    operations = [migrations.RunPython(reinstall_functions, migrations.RunPython.noop)]
