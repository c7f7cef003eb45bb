"""Per-patch results no longer indexed by update; the rollup trigger functions installed again."""

import django.db.models.deletion
from django.db import migrations, models

from patching import rollup


class Migration(migrations.Migration):

    dependencies = [
        ('patching', '0020_guest_last_runs_without_database_foreign_keys_or_indexes'),
    ]

    operations = [
        # The trigger functions as written now: the guest state's watches only whether assessed_at is
        # NULL (rollup.NULLNESS_ONLY), and each runs its statement only when it changes a rollup (_guards).
        migrations.RunPython(rollup.reinstall_functions, migrations.RunPython.noop),
        migrations.AlterField(
            model_name='patchresult',
            name='update',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='patching.update'),
        ),
    ]
