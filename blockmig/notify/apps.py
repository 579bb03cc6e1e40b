from django.apps import AppConfig


class NotifyConfig(AppConfig):
    """Its own app (label "notify") so its tables and migrations stand apart from the
    migration engine's."""

    name = "blockmig.notify"
    label = "notify"
    verbose_name = "Notifications"
    default_auto_field = "django.db.models.BigAutoField"
