from django.apps import AppConfig


class BlockmigConfig(AppConfig):
    name = "blockmig"
    verbose_name = "Migrations"

    def ready(self) -> None:
        from blockmig import login_audit, receivers  # noqa: F401  (connect the audit of sign-ins and inventory changes)
