# Disk.chain_known / chain_note: stopped domains' chains read from files or pools (issue 11).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("hosts", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="disk",
            name="chain_known",
            field=models.BooleanField(default=True),
        ),
        migrations.AddField(
            model_name="disk",
            name="chain_note",
            field=models.CharField(blank=True, max_length=1200),
        ),
    ]
