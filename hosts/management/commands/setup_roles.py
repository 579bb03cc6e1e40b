from django.core.management.base import BaseCommand

from hosts.roles import ROLES, setup_roles


class Command(BaseCommand):
    help = "Create the viewer, operator, approver and admin groups with their permissions."

    def handle(self, *args, **options):
        setup_roles()
        self.stdout.write(f"roles ready: {', '.join(ROLES)}")
