"""The fleet list's name search (name__icontains: UPPER(name::text) LIKE UPPER('%…%')) by a trigram
index on PostgreSQL, instead of reading every VM; SQLite (the embedded default) keeps its scan."""

from django.db import migrations

INDEX = "vm_name_trgm"


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    schema_editor.execute(
        f'CREATE INDEX IF NOT EXISTS {INDEX} ON vms_virtualmachine USING gin ((UPPER("name"::text)) gin_trgm_ops)'
    )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("vms", "0010_fleet_sort_indexes")]

    operations = [migrations.RunPython(create, drop)]
