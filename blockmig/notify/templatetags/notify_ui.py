"""The dashboard's banner for admins when notifications are failing."""

from __future__ import annotations

from django import template

from blockmig.notify.selectors import delivery_trouble

register = template.Library()


@register.inclusion_tag("blockmig/notification_banner.html")
def delivery_banner(user) -> dict:
    """Nothing for people who cannot see deliveries (and no query for them)."""
    if not user.has_perm("notify.view_delivery"):
        return {"trouble": None}
    return {"trouble": delivery_trouble()}
