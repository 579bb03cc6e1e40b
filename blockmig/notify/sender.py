"""Sending what the outbox holds, outside any migration's transaction.

Where it runs: `DeliveryLoop`, a thread of every worker process (blockmig.worker starts it).
Every deployment that runs migrations runs workers, so nothing new has to be supervised,
deployed or monitored; several workers share the work because each claims due deliveries
with one conditional UPDATE (claimed_by/claimed_until), and a claim of a worker that died
lapses by itself. The thread never touches a migration: a webhook that hangs holds this
thread for at most BLOCKMIG_WEBHOOK_TIMEOUT per socket operation, never a driver.

Retries: attempt n failed → the next one after RETRY × 2^(n-1) seconds (at most RETRY_MAX);
after MAX_ATTEMPTS attempts the delivery is marked failed, and admins see it
(/notifications/deliveries/ and the dashboard's banner).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import Error as DatabaseError
from django.db import close_old_connections, connection
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import get_random_string

from blockmig.notify.models import Delivery, Notification
from blockmig.notify.signing import DELIVERY_HEADER, EVENT_HEADER, signed_headers

log = logging.getLogger("blockmig.notify")

# Deliveries one pass claims; the pool sends them side by side.
BATCH = 20
SEND_THREADS = 4
ERROR_LENGTH = 500


@dataclass(frozen=True)
class Outcome:
    ok: bool
    error: str = ""
    status: int | None = None  # the HTTP status a webhook answered with


def backoff_seconds(attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed attempt (1, 2, …)."""
    base = settings.BLOCKMIG_NOTIFY_RETRY_SECONDS
    return min(settings.BLOCKMIG_NOTIFY_RETRY_MAX_SECONDS, base * 2 ** max(attempts - 1, 0))


def body_bytes(notification: Notification) -> bytes:
    """The exact bytes that are signed and sent (the same for every attempt)."""
    return json.dumps(notification.payload, sort_keys=True, separators=(",", ":")).encode()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A webhook answers; it does not send the signed body somewhere else."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


# Straight to the endpoint: no proxy from the environment (the receivers are named by admins).
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects)


def send_webhook(url: str, secret: str, notification: Notification, delivery_id: int) -> Outcome:
    body = body_bytes(notification)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "blockmig-webhook/1",
        EVENT_HEADER: notification.payload.get("event", ""),
        DELIVERY_HEADER: str(delivery_id),
        **signed_headers(secret, body),
    }
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    timeout = settings.BLOCKMIG_WEBHOOK_TIMEOUT
    try:
        with _opener.open(request, timeout=timeout) as response:
            return Outcome(ok=True, status=response.status)
    except urllib.error.HTTPError as error:
        answer = error.read(200).decode(errors="replace").strip()
        if 300 <= error.code < 400:
            return Outcome(False, f"HTTP {error.code}: redirects are not followed; give the final URL.", error.code)
        return Outcome(False, f"HTTP {error.code} {error.reason}" + (f": {answer}" if answer else ""), error.code)
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, ConnectionRefusedError):
            return Outcome(False, "connection refused: nothing listens at that address and port")
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return Outcome(False, f"no answer within {timeout:g} s")
        return Outcome(False, f"cannot connect: {reason}")
    except TimeoutError:
        return Outcome(False, f"no answer within {timeout:g} s")
    except (OSError, ValueError) as error:
        return Outcome(False, f"cannot send: {error}")


def send_test(url: str, secret: str, *, sent_by: str) -> Outcome:
    """A signed POST like a real one, for an admin checking an endpoint (nothing is stored)."""
    body = {
        "event": "test",
        "occurred_at": timezone.now().isoformat(),
        "reason": f"A test sent by {sent_by} from the webhook's page.",
        "actor": sent_by,
        "migration": None,
    }
    return send_webhook(url, secret, Notification(payload=body), delivery_id=0)


def send_email(address: str, notification: Notification) -> Outcome:
    try:
        EmailMessage(subject=notification.subject, body=notification.text, to=[address]).send()
    except Exception as error:  # SMTP and socket errors of every kind: a retry may get through
        return Outcome(False, f"email not accepted: {error}")
    return Outcome(True)


def attempt(delivery: Delivery) -> Outcome:
    notification = delivery.notification
    if delivery.channel == Delivery.Channel.EMAIL:
        return send_email(delivery.recipient, notification)
    endpoint = delivery.endpoint
    if endpoint is None:
        return Outcome(False, "the endpoint was deleted")
    if not endpoint.enabled:
        return Outcome(False, "the endpoint is disabled")
    return send_webhook(endpoint.url, endpoint.secret, notification, delivery.pk)


def _due(now) -> Q:
    return Q(status=Delivery.Status.PENDING, next_attempt_at__lte=now) & (
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    )


def claim_due(owner: str, limit: int = BATCH) -> list[Delivery]:
    """Take up to `limit` due deliveries for this sender (one UPDATE; another sender gets
    the others). The claim outlives the longest send, then lapses."""
    now = timezone.now()
    ids = list(Delivery.objects.filter(_due(now)).order_by("next_attempt_at", "pk").values_list("pk", flat=True)[:limit])
    if not ids:
        return []
    token = f"{owner}:{get_random_string(8)}"
    hold = now + timedelta(seconds=settings.BLOCKMIG_WEBHOOK_TIMEOUT * 4 + 60)
    Delivery.objects.filter(_due(now), pk__in=ids).update(claimed_by=token, claimed_until=hold)
    return list(Delivery.objects.filter(claimed_by=token).select_related("notification", "endpoint"))


def record(delivery: Delivery, outcome: Outcome) -> Delivery:
    """Write how the attempt went, under the claim."""
    now = timezone.now()
    attempts = delivery.attempts + 1
    entry = {"at": now.isoformat(), "ok": outcome.ok}
    if outcome.status is not None:
        entry["status"] = outcome.status
    if outcome.error:
        entry["error"] = outcome.error[:ERROR_LENGTH]
    fields: dict = {"attempts": attempts, "history": [*delivery.history, entry], "claimed_until": None, "claimed_by": ""}
    if outcome.ok:
        fields.update(status=Delivery.Status.SENT, sent_at=now)
    else:
        fields["last_error"] = outcome.error[:ERROR_LENGTH]
        if attempts >= settings.BLOCKMIG_NOTIFY_MAX_ATTEMPTS:
            fields["status"] = Delivery.Status.FAILED
        else:
            fields["next_attempt_at"] = now + timedelta(seconds=backoff_seconds(attempts))
    Delivery.objects.filter(pk=delivery.pk, claimed_by=delivery.claimed_by).update(**fields)
    for name, value in fields.items():
        setattr(delivery, name, value)
    if not outcome.ok:
        log.warning("delivery %s to %s: attempt %s failed: %s", delivery.pk, delivery.recipient, attempts, outcome.error)
    return delivery


def send_one(delivery: Delivery) -> Delivery:
    try:
        outcome = attempt(delivery)
    except Exception as error:  # a bug must not leave the delivery claimed and silent
        log.exception("delivery %s: attempt crashed", delivery.pk)
        outcome = Outcome(False, f"internal error: {error}")
    return record(delivery, outcome)


def deliver_due(owner: str = "sender", pool: ThreadPoolExecutor | None = None) -> list[Delivery]:
    """One pass: claim what is due and send it (side by side in `pool`, else one by one in
    this thread). Returns the deliveries as recorded."""
    claimed = claim_due(owner)
    if pool is None:
        return [send_one(d) for d in claimed]
    return list(pool.map(_send_in_pool, claimed))


def _send_in_pool(delivery: Delivery) -> Delivery:
    close_old_connections()
    try:
        return send_one(delivery)
    finally:
        connection.close()


class DeliveryLoop(threading.Thread):
    """The sender thread of a worker process; stops when `stopping` is set."""

    def __init__(self, owner: str, stopping: threading.Event):
        super().__init__(daemon=True, name="notify-sender")
        self.owner = owner
        self.stopping = stopping

    def run(self) -> None:
        with ThreadPoolExecutor(max_workers=SEND_THREADS, thread_name_prefix="notify-send") as pool:
            while not self.stopping.is_set():
                sent = []
                try:
                    sent = deliver_due(self.owner, pool)
                except DatabaseError as error:
                    log.warning("notifications: cannot read the outbox (%s); retrying", error)
                    connection.close()
                except Exception:
                    log.exception("notifications: sender pass failed")
                if not sent:
                    self.stopping.wait(settings.BLOCKMIG_NOTIFY_POLL_SECONDS)
        connection.close()
