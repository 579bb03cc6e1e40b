"""Background tasks (Django's tasks API, stored by django_tasks_db)."""

from django.tasks import task


@task(queue_name="migrations")
def drive_migration(migration_id: int) -> str:
    """Drive a migration to its end. Safe to enqueue more than once: the lease decides
    which worker drives it, and a second task finds it taken and returns."""
    from blockmig.engine import migration_drive

    return migration_drive(migration_id)
