"""`/metrics` in Prometheus' text format, computed at scrape time from the shared truth.

Several daphne and worker processes serve one deployment, so counters kept in one process
would each tell a part. Every figure here is read when Prometheus scrapes, by one custom
collector, from what all processes share: the database (migrations, their progress, the
audit trail's timestamps, leases, deliveries) and Redis (sync counters that every sync
increments, worker heartbeats, the websocket slots blockmig.live.handshake keeps per user).
A Redis outage drops the Redis-backed series and sets blockmig_redis_up to 0; the
database-backed ones are still served.

Access: a bearer token (METRICS_TOKEN) or an address in METRICS_ALLOW (this machine only by
default). The metric names and what each means are listed in docs/operations.md.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from blockmig.health import live_workers
from blockmig.live.handshake import slots_key
from blockmig.live.publish import redis_client
from blockmig.models import AuditEvent, Migration
from blockmig.notify.models import Delivery
from blockmig.states import ACTIVE_STATES, State
from hosts.models import Hypervisor

log = logging.getLogger(__name__)

APPROVAL_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 8 * 3600.0, 24 * 3600.0)
PIVOT_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
SYNC_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Migrations whose copy has a size and a rate worth showing.
COPY_STATES = (State.COPYING, State.READY, State.PIVOTING, State.ABORTING)


# ---- sync counters (written by every process that syncs, read here) --------------------


def sync_stats_key(host: str) -> str:
    prefix = settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix", "blockmig")
    return f"{prefix}:sync-stats:{host}"


def bucket_index(value: float, buckets: Iterable[float]) -> int:
    """Index of the first bucket whose upper bound holds `value` (len(buckets) for +Inf)."""
    for index, bound in enumerate(buckets):
        if value <= bound:
            return index
    return len(tuple(buckets))


def record_sync(host: str, *, ok: bool, duration: float) -> None:
    """Count one sync of `host` (blockmig.receivers calls this for hosts.signals.sync_finished).
    Never raises: a Redis outage must not fail a sync; those syncs go uncounted."""
    try:
        pipe = redis_client().pipeline(transaction=True)
        key = sync_stats_key(host)
        pipe.hincrby(key, "count", 1)
        pipe.hincrby(key, "errors", 0 if ok else 1)
        pipe.hincrbyfloat(key, "sum", duration)
        pipe.hincrby(key, f"b{bucket_index(duration, SYNC_BUCKETS)}", 1)
        pipe.execute()
    except Exception as error:
        log.warning("sync of %s not counted in the metrics (%s)", host, error)


def forget_sync_stats(host: str) -> None:
    """A deleted or renamed host's counters go, so /metrics stops showing a host that is gone."""
    try:
        redis_client().delete(sync_stats_key(host))
    except Exception as error:
        log.warning("sync counters of %s not removed (%s)", host, error)


def _cumulative(counts: list[int], buckets: tuple[float, ...]) -> list[tuple[str, float]]:
    running = 0
    out: list[tuple[str, float]] = []
    for index, bound in enumerate(buckets):
        running += counts[index]
        out.append((repr(bound), running))
    out.append(("+Inf", running + counts[len(buckets)]))
    return out


def histogram_of(values: Iterable[float], buckets: tuple[float, ...]) -> tuple[list[tuple[str, float]], float]:
    """Prometheus buckets (cumulative, +Inf last) and the sum of `values`."""
    counts = [0] * (len(buckets) + 1)
    total = 0.0
    for value in values:
        counts[bucket_index(value, buckets)] += 1
        total += value
    return _cumulative(counts, buckets), total


# ---- the collector ----------------------------------------------------------------------


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _seconds(later: datetime, earlier: datetime) -> float:
    return max((later - earlier).total_seconds(), 0.0)


class BlockmigCollector:
    """Reads everything at scrape time; see the module docstring."""

    def describe(self) -> list[Metric]:
        return []  # no database work when the registry is built

    def collect(self) -> Iterator[Metric]:
        yield from self._migrations()
        yield from self._copies()
        yield from self._approval_wait()
        yield from self._pivots()
        yield from self._leases()
        yield from self._deliveries()
        yield from self._hosts()
        yield from self._redis_backed()

    def _migrations(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("blockmig_migrations", "Migrations in each state.", labels=["state"])
        counts = dict(Migration.objects.values_list("state").annotate(n=Count("id")).values_list("state", "n"))
        for state in State.values:
            family.add_metric([state], counts.get(state, 0))
        yield family

    def _copies(self) -> Iterator[Metric]:
        labels = ["migration", "host", "domain"]
        done = GaugeMetricFamily("blockmig_migration_copy_bytes", "Bytes copied so far, per active migration.", labels=labels)
        total = GaugeMetricFamily("blockmig_migration_copy_total_bytes", "Bytes to copy, per active migration.", labels=labels)
        rate = GaugeMetricFamily(
            "blockmig_migration_copy_rate_bytes_per_second", "Recent copy rate, per active migration.", labels=labels
        )
        rows = Migration.objects.filter(state__in=COPY_STATES).values_list(
            "pk", "hypervisor__name", "domain_name", "bytes_done", "bytes_total", "rate_bps"
        )
        for pk, host, domain, bytes_done, bytes_total, rate_bps in rows:
            key = [str(pk), host, domain]
            done.add_metric(key, bytes_done)
            total.add_metric(key, bytes_total)
            rate.add_metric(key, rate_bps)
        yield from (done, total, rate)

    def _approval_wait(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "blockmig_approval_wait_seconds",
            "From every mirror ready to the approval (by a person, or by the host's auto-pivot policy).",
            labels=["by"],
        )
        waits: dict[str, list[float]] = {"person": [], "policy": []}
        rows = AuditEvent.objects.filter(
            event_type__in=("approved", "auto_pivot"), migration__ready_at__isnull=False
        ).values_list("event_type", "created_at", "migration__ready_at")
        for event_type, approved_at, ready_at in rows:
            if ready_at is None:
                continue
            waits["person" if event_type == "approved" else "policy"].append(_seconds(approved_at, ready_at))
        for by, values in waits.items():
            buckets, total = histogram_of(values, APPROVAL_BUCKETS)
            family.add_metric([by], buckets, total)
        yield family

    def _pivots(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "blockmig_pivot_duration_seconds", "From the approval to completed (or failed) after the pivot.", labels=["outcome"]
        )
        started = dict(
            AuditEvent.objects.filter(to_state=State.PIVOTING)
            .exclude(from_state=State.PIVOTING)
            .values_list("migration_id", "created_at")
        )
        durations: dict[str, list[float]] = {"completed": [], "failed": []}
        ended = AuditEvent.objects.filter(from_state=State.PIVOTING, to_state__in=(State.COMPLETED, State.FAILED)).values_list(
            "migration_id", "to_state", "created_at"
        )
        for migration_id, outcome, at in ended:
            if migration_id in started:
                durations[outcome].append(_seconds(at, started[migration_id]))
        for outcome, values in durations.items():
            buckets, total = histogram_of(values, PIVOT_BUCKETS)
            family.add_metric([outcome], buckets, total)
        yield family

    def _leases(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("blockmig_worker_leases", "Migrations each worker holds a live lease on.", labels=["worker"])
        rows = (
            Migration.objects.filter(state__in=ACTIVE_STATES, lease_expires_at__gt=timezone.now())
            .exclude(lease_owner="")
            .values_list("lease_owner")
            .annotate(n=Count("id"))
            .values_list("lease_owner", "n")
        )
        for owner, n in rows:
            family.add_metric([owner], n)
        yield family

    def _deliveries(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "blockmig_notification_deliveries", "Notification deliveries by channel and status.", labels=["channel", "status"]
        )
        counts = defaultdict(int)
        for channel, status, n in (
            Delivery.objects.values_list("channel", "status").annotate(n=Count("id")).values_list("channel", "status", "n")
        ):
            counts[(channel, status)] = n
        for channel in Delivery.Channel.values:
            for status in Delivery.Status.values:
                family.add_metric([channel, status], counts[(channel, status)])
        yield family

    def _hosts(self) -> Iterator[Metric]:
        last_ok = GaugeMetricFamily(
            "blockmig_host_last_sync_success_timestamp_seconds", "When the host was last read without error.", labels=["host"]
        )
        failing = GaugeMetricFamily("blockmig_host_sync_failing", "1 while the host's last sync failed.", labels=["host"])
        for name, ok_at, error in Hypervisor.objects.filter(enabled=True).values_list(
            "name", "last_sync_ok_at", "last_sync_error"
        ):
            if ok_at is not None:
                last_ok.add_metric([name], ok_at.timestamp())
            failing.add_metric([name], 1 if error else 0)
        yield from (last_ok, failing)

    def _redis_backed(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("blockmig_redis_up", "1 when Redis answered this scrape.")
        try:
            families = list(self._from_redis())
        except Exception as error:
            log.warning("metrics: Redis-backed series left out (%s)", error)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _from_redis(self) -> Iterator[Metric]:
        client = redis_client()
        durations = HistogramMetricFamily(
            "blockmig_host_sync_duration_seconds", "Inventory syncs per host and how long they took.", labels=["host"]
        )
        errors = CounterMetricFamily("blockmig_host_sync_errors", "Inventory syncs per host that failed.", labels=["host"])
        prefix = sync_stats_key("")
        for key in client.scan_iter(match=sync_stats_key("*"), count=500):
            host = _text(key)[len(prefix) :]
            stats = {_text(k): v for k, v in client.hgetall(key).items()}
            counts = [int(stats.get(f"b{i}", 0)) for i in range(len(SYNC_BUCKETS) + 1)]
            durations.add_metric([host], _cumulative(counts, SYNC_BUCKETS), float(stats.get("sum", 0)))
            errors.add_metric([host], int(stats.get("errors", 0)))
        workers = GaugeMetricFamily("blockmig_workers_alive", "Workers whose heartbeat has not lapsed.")
        workers.add_metric([], len(live_workers()))
        sockets = GaugeMetricFamily("blockmig_websocket_clients", "Open websockets over every daphne process.")
        seconds, micros = client.time()
        now = seconds + micros / 1_000_000
        open_sockets = 0
        for key in client.scan_iter(match=slots_key("*"), count=500):
            open_sockets += client.zcount(key, now, "+inf")  # a slot counts until it lapses
        sockets.add_metric([], open_sockets)
        yield from (durations, errors, workers, sockets)


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(BlockmigCollector())


# ---- access and the view ----------------------------------------------------------------


def _bearer(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _address_allowed(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in settings.METRICS_ALLOW:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            log.warning("METRICS_ALLOW: %r is not an address or network; ignored", entry)
    return False


def metrics_refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the request may read the metrics, else the answer that says why not."""
    token = settings.METRICS_TOKEN
    sent = _bearer(request)
    if token and sent and hmac.compare_digest(sent.encode(), token.encode()):
        return None
    address = request.META.get("REMOTE_ADDR", "")
    if _address_allowed(address):
        return None
    if token:
        response = HttpResponse(
            "Send the metrics token as `Authorization: Bearer <METRICS_TOKEN>`.\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Bearer realm="blockmig metrics"'
        return response
    return HttpResponse(
        f"{address or 'This address'} may not read the metrics: add it to METRICS_ALLOW, or set METRICS_TOKEN and send it as a bearer token.\n",
        status=403,
        content_type="text/plain",
    )


@login_not_required
@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    refusal = metrics_refusal(request)
    if refusal is not None:
        return refusal
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
