"""The commands, one function each (`cmd_<name>(args, out) -> exit code`): login, hosts,
chain, migrate, watch, migrations, approve / abort / bandwidth, audit."""

from __future__ import annotations

import argparse
import csv
import getpass
import json
import re
import socket
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO
from urllib.parse import quote

from blockmig.cli.client import Client, client_from_config
from blockmig.cli.config import save_config
from blockmig.cli.exits import AWAITING, OK, TERMINAL, USAGE, CliError
from blockmig.cli.formatting import format_bytes, print_table, progress_line

POLL_SECONDS = 1.0


def cmd_login(args: argparse.Namespace, out: TextIO) -> int:
    url = args.url.rstrip("/")
    if not re.match(r"^https?://", url):
        raise CliError(f"give the console's address with its scheme, e.g. http://{url}", USAGE)
    token = args.token or ""
    if not token and not args.user:
        token = getpass.getpass(
            "API token (from your profile page; empty: create one with your user name and password): "
        ).strip()
    if not token:
        user = args.user or input("User name: ").strip()
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("Password: ")
        name = args.name or f"cli@{socket.gethostname()}"
        made = Client(url).call(
            "POST",
            "/api/v1/tokens/",
            {"username": user, "password": password, "name": name, "expires_in_days": args.expires_days},
        )
        token = made["token"]
        out.write(f"Created the token “{made['name']}” (revoke it on {url}/profile/).\n")
    me = Client(url, token).call("GET", "/api/v1/me/")
    path = save_config({"url": url, "token": token})
    roles = ", ".join(me["roles"]) or "no role"
    out.write(f"Signed in to {url} as {me['username']} ({roles}); the token is in {path} (mode 0600).\n")
    return OK


def cmd_hosts(args: argparse.Namespace, out: TextIO) -> int:
    client = client_from_config()
    rows = [["NAME", "HEALTH", "DOMAINS", "RUNNING", "AUTO-PIVOT", "URI"]]
    page: str | None = "/api/v1/hypervisors/"
    while page:
        body = client.call("GET", page)
        rows += [
            [
                h["name"],
                h["health"],
                str(h["domain_count"]),
                str(h["running_count"]),
                "yes" if h["auto_pivot"] else "no",
                h["uri"],
            ]
            for h in body["results"]
        ]
        page = body["next"]
    if len(rows) == 1:
        out.write("No hypervisors yet: an admin adds them on the console's Hypervisors page.\n")
    else:
        print_table(rows, out)
    return OK


def _disk_path(host: str, domain: str, disk: str) -> str:
    return f"/api/v1/hypervisors/{quote(host)}/domains/{quote(domain)}/disks/{quote(disk)}/"


def cmd_chain(args: argparse.Namespace, out: TextIO) -> int:
    disk = client_from_config().call("GET", _disk_path(args.host, args.domain, args.disk))
    out.write(disk["chain_text"] + "\n")
    if args.verbose:
        for layer in disk["chain"]:
            size = format_bytes(layer["allocation"]) if layer["allocation"] is not None else "?"
            role = "active" if layer["depth"] == 0 else f"backing {layer['depth']}"
            out.write(f"  {role:<10} {layer['path'] or '(missing)'}  {layer['format']}  {size}\n")
    job = disk.get("job")
    if job:
        ready = "ready" if job["ready"] else "not ready"
        out.write(f"block job: {job['type']} → {job['mirror_path'] or '?'} ({ready})\n")
    return OK


def watch(client: Client, migration_id: int, out: TextIO, err: TextIO) -> int:
    """Follow a migration to its end with a progress bar; the exit code says how it ended."""
    live = err.isatty()
    last = ""
    told_ready = False
    while True:
        migration = client.call("GET", f"/api/v1/migrations/{migration_id}/")
        line = progress_line(migration)
        if live:
            err.write("\r" + line + "\033[K")
        elif line != last:
            err.write(line + "\n")
        err.flush()
        last = line
        state = migration["state"]
        if state == AWAITING and not told_ready:
            told_ready = True
            err.write(
                ("\n" if live else "")
                + f"Mirror ready: waiting for the pivot's approval (an approver runs `blockmig approve {migration_id}`).\n"
            )
        if state in TERMINAL:
            if live:
                err.write("\n")
            reason = f": {migration['failure_reason']}" if migration.get("failure_reason") else ""
            out.write(f"Migration #{migration_id} {state}{reason}\n")
            return TERMINAL[state]
        time.sleep(POLL_SECONDS)


def cmd_migrate(args: argparse.Namespace, out: TextIO) -> int:
    client = client_from_config()
    body: dict[str, Any] = {
        "hypervisor": args.host,
        "domain": args.domain,
        "disks": [{"target": args.disk, "destination": args.dest}],
        "mode": "full" if args.full else "shallow",
        "bandwidth_mib": args.bandwidth,
    }
    if args.format:
        body["dest_format"] = args.format
    if args.reuse:
        body["reuse_destination"] = True
    # One key for this command's request however often the connection makes it retry.
    migration = client.call("POST", "/api/v1/migrations/", body, idempotency_key=args.idempotency_key or str(uuid.uuid4()))
    disks = ", ".join(f"{d['target']} → {d['destination']}" for d in migration["disks"])
    out.write(f"Migration #{migration['id']} requested ({migration['mode']}: {disks}).\n")
    out.flush()
    if not args.wait:
        return OK
    return watch(client, migration["id"], out, sys.stderr)


def cmd_watch(args: argparse.Namespace, out: TextIO) -> int:
    return watch(client_from_config(), args.id, out, sys.stderr)


def action_command(path: str, done: str, body: dict | None = None):
    def run(args: argparse.Namespace, out: TextIO) -> int:
        key = args.idempotency_key or str(uuid.uuid4())
        migration = client_from_config().call(
            "POST", f"/api/v1/migrations/{args.id}/{path}/", body or _body(args), idempotency_key=key
        )
        out.write(done.format(id=migration["id"], state=migration["state"], bandwidth=migration["bandwidth_mib"]) + "\n")
        return OK

    return run


def _body(args: argparse.Namespace) -> dict:
    return {"bandwidth_mib": args.mib} if hasattr(args, "mib") else {}


def cmd_migrations(args: argparse.Namespace, out: TextIO) -> int:
    body = client_from_config().call("GET", "/api/v1/migrations/", params={"state": args.state, "hypervisor": args.host})
    rows = [["ID", "HOST", "DOMAIN", "DISKS", "STATE", "PROGRESS", "REQUESTED BY"]]
    for m in body["results"]:
        percent = m["progress"]["percent"]
        rows.append([str(m["id"]), m["hypervisor"], m["domain_name"], ",".join(d["target"] for d in m["disks"]), m["state"],
                     "?" if percent is None else f"{percent:.1f} %", m["requested_by"]])  # fmt: skip
    if len(rows) == 1:
        out.write("No migrations match.\n")
    else:
        print_table(rows, out)
    return OK


SINCE = re.compile(r"^(\d+)\s*([smhdw])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
AUDIT_COLUMNS = ["id", "created_at", "event_type", "actor", "via", "hypervisor", "domain", "disks", "migration", "from_state",
                 "to_state", "details"]  # fmt: skip


def since_to_iso(text: str, now: datetime | None = None) -> str:
    """`1h`, `30m`, `2d` → that long before now; an ISO 8601 time passes as it is (UTC if it has no zone)."""
    match = SINCE.match(text.strip())
    if match:
        delta = timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
        return ((now or datetime.now(UTC)) - delta).isoformat()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--since {text}: give an age like 1h, 30m, 2d, or a time like 2026-12-03T10:00", USAGE) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).isoformat()


def _spreadsheet_safe(value: Any) -> Any:
    # A cell starting with = + - @ is a formula to a spreadsheet (as the console's own export does).
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def cmd_audit(args: argparse.Namespace, out: TextIO) -> int:
    client = client_from_config()
    params = {
        "since": since_to_iso(args.since) if args.since else None,
        "host": args.host,
        "domain": args.domain,
        "user": args.user,
        "event_type": args.event_type,
        "migration": args.migration,
        "page_size": 500,
    }
    page: str | None = "/api/v1/audit/"
    events: list[dict] = []
    first = True
    while page:
        body = client.call("GET", page, params=params if first else None)
        events += body["results"]
        page, first = body["next"], False
    if args.format == "json":
        json.dump(events, out, indent=2, ensure_ascii=False)
        out.write("\n")
    else:
        writer = csv.writer(out)
        writer.writerow(AUDIT_COLUMNS)
        for event in events:
            row = [event.get(c) for c in AUDIT_COLUMNS]
            row[-1] = json.dumps(event["details"], sort_keys=True)
            writer.writerow([_spreadsheet_safe(v) if i < len(AUDIT_COLUMNS) - 1 else v for i, v in enumerate(row)])
    return OK
