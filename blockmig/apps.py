from django.apps import AppConfig


class BlockmigConfig(AppConfig):
    name = "blockmig"
    verbose_name = "Migrations"

    def ready(self) -> None:
        from blockmig import login_audit, receivers, selectors  # noqa: F401  (connect the audit of sign-ins and inventory changes)
        from hosts import hooks

        # What blockmig adds to the inventory pages (hosts does not import blockmig).
        hooks.fill_slot("domain_actions", "blockmig/_domain_actions.html")
        hooks.fill_slot("disk_actions", "blockmig/_disk_actions.html")
        hooks.set_job_owners(selectors.migration_jobs_of_domains)
