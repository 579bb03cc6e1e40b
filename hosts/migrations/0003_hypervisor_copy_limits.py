# Copy limits per host and per storage root (blockmig.limits).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("hosts", "0002_disk_chain_known"),
    ]

    operations = [
        migrations.AddField(
            model_name="hypervisor",
            name="max_copies",
            field=models.PositiveIntegerField(
                default=2, help_text="Migrations that may copy at once on this host (0 = no limit)."
            ),
        ),
        migrations.AddField(
            model_name="hypervisor",
            name="root_limits",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
