"""How a webhook body is signed, and how a receiver checks it.

The signed material is `<timestamp>.<raw body>`; the signature is HMAC-SHA256 with the
endpoint's secret, sent as `X-Blockmig-Signature: sha256=<hex>` beside
`X-Blockmig-Timestamp: <unix seconds>`. A receiver recomputes it over the bytes it got and
refuses a timestamp older than a few minutes, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Blockmig-Signature"
TIMESTAMP_HEADER = "X-Blockmig-Timestamp"
EVENT_HEADER = "X-Blockmig-Event"
DELIVERY_HEADER = "X-Blockmig-Delivery"
# How old a timestamp a receiver should still accept (verify's default).
TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(secret: str, body: bytes, timestamp: str, sent_signature: str, *, now: float | None = None) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        age = (time.time() if now is None else now) - int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(age) > TOLERANCE_SECONDS:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), sent_signature or "")
