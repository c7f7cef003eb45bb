from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("patching", "0010_what_if_queued_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="whatifrun",
            name="schedule",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
