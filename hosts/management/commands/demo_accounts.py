from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand

from hosts.roles import ROLES, setup_roles

DEMO_PASSWORD = "blockmig-demo"


class Command(BaseCommand):
    help = "Create the lab's demo accounts (admin, operator, approver, viewer). For the lab only."

    def handle(self, *args, **options):
        setup_roles()
        for role in ROLES:
            user, created = User.objects.get_or_create(username=role)
            if created:
                user.set_password(DEMO_PASSWORD)
                user.is_staff = role == "admin"
                user.is_superuser = role == "admin"
                user.save()
            user.groups.add(Group.objects.get(name=role))
            self.stdout.write(f"{'created' if created else 'kept'} {role}")
        self.stdout.write(f"demo password: {DEMO_PASSWORD}")
