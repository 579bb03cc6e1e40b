from django.apps import AppConfig


class ApiConfig(AppConfig):
    """Its own app so its tables (tokens, idempotency records) migrate on their own."""

    name = "blockmig.api"
    label = "blockmig_api"
    verbose_name = "REST API"
    default_auto_field = "django.db.models.BigAutoField"
