from django.apps import AppConfig


class BlockmigConfig(AppConfig):
    name = "blockmig"
    verbose_name = "Migrations"
