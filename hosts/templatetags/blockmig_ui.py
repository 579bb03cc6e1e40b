"""Small presentation helpers shared by every page: times, sizes, roles, state badges."""

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince

from hosts.chain_picture.jobs_and_media import disk_job, job_words
from hosts.chain_picture.text import human_bytes
from hosts.roles import user_roles

register = template.Library()

STATE_TONES = {
    "running": "ok",
    "ok": "ok",
    "completed": "ok",
    "ready": "ok",
    "paused": "warn",
    "blocked": "warn",
    "pmsuspended": "warn",
    "stale": "warn",
    "shutdown": "muted",
    "shutoff": "muted",
    "disabled": "muted",
    "unknown": "muted",
    "nostate": "muted",
    "crashed": "bad",
    "failed": "bad",
}


@register.filter
def timetag(value: datetime | None, empty: str = "never"):
    """<time> in the user's timezone (the tz cookie), with the relative age as a tooltip."""
    if value is None:
        return format_html('<span class="muted">{}</span>', empty)
    local = timezone.localtime(value)
    return format_html(
        '<time datetime="{}" title="{} ago">{}</time>',
        value.isoformat(),
        timesince(value),
        local.strftime("%Y-%m-%d %H:%M:%S %Z"),
    )


@register.filter(name="bytes")
def bytes_filter(value: int | None) -> str:
    return human_bytes(value)


@register.filter
def tone(state: str) -> str:
    """CSS tone for a state word: ok, warn, bad or muted."""
    return STATE_TONES.get(state or "", "muted")


@register.simple_tag
def roles_of(user) -> str:
    return ", ".join(user_roles(user)) or "no role"


@register.filter
def job_summary(disk) -> str:
    """'copy, 42%' / 'copy, ready' for the block job stored on a Disk."""
    job = disk_job(disk)
    if job is None:
        return ""
    return f"{job.type}, {'ready' if job.ready else job_words(job).removeprefix('copying ')}"
