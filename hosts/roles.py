"""The four roles, as Django auth groups with model permissions.

A viewer sees everything and changes nothing; an operator starts and aborts migrations;
an approver approves pivots and may abort; an admin manages hypervisors, policies and users.
"""

from typing import NoReturn

from django.contrib.auth.models import AnonymousUser, Group, Permission, User
from django.core.exceptions import PermissionDenied

VIEW = [
    "hosts.view_hypervisor",
    "hosts.view_domain",
    "hosts.view_disk",
    "hosts.view_chainlayer",
    "blockmig.view_migration",
    "blockmig.view_migrationdisk",
    "blockmig.view_auditevent",
    "blockmig.view_plan",
    "blockmig.view_plandisk",
]
OPERATE = [
    "blockmig.add_migration",
    "blockmig.change_migration",
    "blockmig.abort_migration",
    "hosts.change_domain",
    # Evacuation plans: build, pause and resume them, change a draft's window.
    "blockmig.add_plan",
    "blockmig.change_plan",
]
APPROVE = ["blockmig.approve_migration", "blockmig.abort_migration", "blockmig.approve_plan"]
ADMINISTER = [
    "hosts.add_hypervisor",
    "hosts.change_hypervisor",
    "hosts.delete_hypervisor",
    "auth.view_user",
    "auth.add_user",
    "auth.change_user",
    "auth.view_group",
    # Notifications (blockmig.notify): webhook endpoints and the deliveries page.
    "notify.view_webhookendpoint",
    "notify.add_webhookendpoint",
    "notify.change_webhookendpoint",
    "notify.delete_webhookendpoint",
    "notify.view_delivery",
    "notify.change_delivery",
]

ROLE_PERMISSIONS: dict[str, list[str]] = {
    "viewer": VIEW,
    "operator": VIEW + OPERATE,
    "approver": VIEW + APPROVE,
    "admin": VIEW + OPERATE + APPROVE + ADMINISTER,
}
ROLES = list(ROLE_PERMISSIONS)


def roles_with(perm: str) -> list[str]:
    """Every role that carries `perm`, in the order above."""
    return [role for role, perms in ROLE_PERMISSIONS.items() if perm in perms]


def least_roles(perm: str) -> list[str]:
    """The roles that carry `perm` and hold no more than they need for it: none of the
    others that carry it holds a strict subset of theirs (so the admin is named only for
    what only the admin may do)."""
    holders = roles_with(perm)
    return [role for role in holders if not any(set(ROLE_PERMISSIONS[other]) < set(ROLE_PERMISSIONS[role]) for other in holders)]


# The role to ask for, per permission, for a 403 page's "… needs the operator role".
ROLE_FOR: dict[str, str] = {
    perm: " or ".join(least_roles(perm)) for perm in dict.fromkeys(p for perms in ROLE_PERMISSIONS.values() for p in perms)
}


def needs_role(perm: str, doing: str = "This") -> str:
    """The refusal the pages and the API give: “Seeing migrations needs the viewer role.”"""
    return f"{doing} needs the {ROLE_FOR.get(perm, 'right')} role."


def deny(perm: str, doing: str = "This") -> NoReturn:
    """403 through the site's 403 page, naming the role that would have been enough."""
    raise PermissionDenied(needs_role(perm, doing))


def setup_roles() -> None:
    """Create or update the four groups so each holds exactly its permissions."""
    for role, perms in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted = []
        for perm in sorted(set(perms)):
            app_label, codename = perm.split(".")
            wanted.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        group.permissions.set(wanted)


def user_roles(user: User | AnonymousUser) -> list[str]:
    return sorted(g.name for g in user.groups.all() if g.name in ROLE_PERMISSIONS)
