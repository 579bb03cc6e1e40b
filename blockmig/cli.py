"""`blockmig`: the command-line client of the REST API (docs/api.md).

A thin HTTP client on the standard library only: it never imports Django, so it runs from
any machine that can reach the console. The token lives in
`$XDG_CONFIG_HOME/blockmig/config.json` (default `~/.config/blockmig/`), mode 0600;
BLOCKMIG_URL and BLOCKMIG_TOKEN override it.

Exit codes (a script can branch on them):
    0  done
    1  unexpected trouble (the server failed, an answer that is not JSON)
    2  usage: a wrong command line
    3  refused: the request broke a rule (invalid field, preflight, wrong state, four eyes,
       rate limit, Idempotency-Key reused); the message says what to fix
    4  not signed in, no permission, or not found
    5  with --wait: the migration failed or was aborted
    6  the server cannot be reached
"""

from __future__ import annotations

import argparse
import csv
import getpass
import json
import os
import re
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TextIO
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode, urljoin
from urllib.request import Request, urlopen

OK, TROUBLE, USAGE, REFUSED, DENIED, MIGRATION_FAILED, UNREACHABLE = 0, 1, 2, 3, 4, 5, 6
DENIED_CODES = {"not_authenticated", "token_invalid", "token_expired", "token_revoked", "authentication_failed",
                "permission_denied", "csrf_failed", "not_found", "method_not_allowed"}  # fmt: skip
TERMINAL = {"completed": OK, "failed": MIGRATION_FAILED, "aborted": MIGRATION_FAILED}
# States in which the copy has nothing more to wait for but a person (or the host's policy).
AWAITING = "ready"
POLL_SECONDS = 1.0
TIMEOUT = 30.0
RETRIES = 3  # a POST with an Idempotency-Key is retried this often when the connection drops
BAR_WIDTH = 28


class CliError(Exception):
    """Something to tell the user, and the exit code that goes with it."""

    def __init__(self, message: str, exit_code: int, code: str = ""):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.code = code


# ---- configuration ----------------------------------------------------------------------


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "blockmig" / "config.json"


def load_config() -> dict[str, str]:
    try:
        config = json.loads(config_path().read_text())
    except (OSError, ValueError):
        config = {}
    if os.environ.get("BLOCKMIG_URL"):
        config["url"] = os.environ["BLOCKMIG_URL"]
    if os.environ.get("BLOCKMIG_TOKEN"):
        config["token"] = os.environ["BLOCKMIG_TOKEN"]
    return config


def save_config(config: dict[str, str]) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Created 0600 from the start: the token is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2)
    os.chmod(path, 0o600)
    return path


# ---- HTTP ---------------------------------------------------------------------------------


@dataclass
class Client:
    url: str
    token: str = ""

    def call(self, method: str, path: str, body: dict | None = None, *, params: dict | None = None,
             idempotency_key: str = "") -> Any:  # fmt: skip
        """The JSON answer, or CliError with the API's message and the exit code for it."""
        address = urljoin(self.url.rstrip("/") + "/", path.lstrip("/"))
        if params:
            address += "?" + urlencode({k: v for k, v in params.items() if v not in (None, "")})
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None or method == "POST":
            data = json.dumps(body or {}).encode()
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        # Only a request that is safe to repeat is repeated: a GET, or a POST with a key.
        attempts = RETRIES if method == "GET" or idempotency_key else 1
        for attempt in range(1, attempts + 1):
            try:
                with urlopen(Request(address, data=data, method=method, headers=headers), timeout=TIMEOUT) as response:
                    return _json(response.read())
            except HTTPError as error:
                if error.code == 429 and attempt < attempts:
                    time.sleep(min(float(error.headers.get("Retry-After") or 1), 60))
                    continue
                if error.code >= 500 and attempt < attempts:
                    time.sleep(attempt)
                    continue
                raise _refusal(error) from None
            except (URLError, TimeoutError, ConnectionError) as error:
                if attempt < attempts:
                    time.sleep(attempt)
                    continue
                reason = getattr(error, "reason", error)
                raise CliError(f"cannot reach {self.url}: {reason}", UNREACHABLE) from None
        raise AssertionError("unreachable")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise CliError("the server's answer is not JSON: is the URL the blockmig console?", TROUBLE) from None


def _refusal(error: HTTPError) -> CliError:
    try:
        detail = json.loads(error.read())["error"]
    except (ValueError, KeyError, TypeError):
        return CliError(f"the server answered {error.code} {error.reason}", TROUBLE if error.code >= 500 else DENIED)
    code, message = detail.get("code", ""), detail.get("message", "")
    fields = [f"  {name}: {' '.join(msgs)}" for name, msgs in (detail.get("fields") or {}).items() if msgs and msgs != [message]]
    text = "\n".join([message, *fields])
    if code in DENIED_CODES or (not code and error.code in (401, 403, 404)):
        if code in ("not_authenticated", "token_invalid", "token_expired", "token_revoked"):
            text += "\n(sign in again with `blockmig login URL`)"
        return CliError(text, DENIED, code)
    return CliError(text, REFUSED if error.code < 500 else TROUBLE, code)


def client_from_config() -> Client:
    config = load_config()
    if not config.get("url") or not config.get("token"):
        raise CliError("not signed in: run `blockmig login URL` first (or set BLOCKMIG_URL and BLOCKMIG_TOKEN)", DENIED)
    return Client(config["url"], config["token"])


# ---- words and pictures ---------------------------------------------------------------------


def format_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA —"
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"ETA {seconds} s"
    if seconds < 3600:
        return f"ETA {seconds // 60} min {seconds % 60:02d} s"
    return f"ETA {seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_line(migration: dict) -> str:
    """`[#######.......]  50.0 %  512.0 MiB of 1.0 GiB  64.0 MiB/s  ETA 8 s  copying`"""
    p = migration["progress"]
    percent = p.get("percent")
    filled = round(BAR_WIDTH * (percent or 0) / 100)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    share = f"{percent:5.1f} %" if percent is not None else "  ? % "
    total = format_bytes(p["bytes_total"]) if p.get("bytes_total") else "?"
    rate = f"{format_bytes(p.get('rate_bps') or 0)}/s"
    eta = "mirror in sync" if migration["state"] == AWAITING else format_eta(p.get("eta_seconds"))
    return f"[{bar}] {share}  {format_bytes(p.get('bytes_done'))} of {total}  {rate}  {eta}  {migration['state']}"


def print_table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n")


# ---- commands ---------------------------------------------------------------------------------


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


def _action(path: str, done: str, body: dict | None = None):
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


# ---- the command line -------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="blockmig",
        description="Drive blockmig from a terminal or a script (talks to the console's REST API).",
        epilog="Exit codes: 0 ok, 1 unexpected trouble, 2 usage, 3 refused, 4 not signed in / no permission / not found, "
        "5 migration failed or aborted (--wait), 6 server unreachable.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    login = sub.add_parser("login", help="sign in and store a token (~/.config/blockmig/config.json, 0600)")
    login.add_argument("url", help="the console's address, e.g. http://127.0.0.1:8000")
    login.add_argument("--token", help="an API token from your profile page (else asked for)")
    login.add_argument("--user", help="create a token with this user name and a password instead")
    login.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    login.add_argument("--name", help="the new token's name (default cli@<this host>)")
    login.add_argument("--expires-days", type=int, default=None, help="the new token expires after this many days")
    login.set_defaults(run=cmd_login)

    sub.add_parser("hosts", help="list the hypervisors").set_defaults(run=cmd_hosts)

    chain = sub.add_parser("chain", help="a disk's backing chain, base ← … ← active")
    chain.add_argument("host")
    chain.add_argument("domain", help="name or UUID")
    chain.add_argument("disk", help="target, e.g. vda")
    chain.add_argument("-v", "--verbose", action="store_true", help="one line per layer, with its size")
    chain.set_defaults(run=cmd_chain)

    migrate = sub.add_parser("migrate", help="request a migration of one disk")
    migrate.add_argument("host")
    migrate.add_argument("domain", help="name or UUID")
    migrate.add_argument("disk", help="target, e.g. vda")
    migrate.add_argument("dest", help="the destination file, inside one of the host's allowed roots")
    mode = migrate.add_mutually_exclusive_group()
    mode.add_argument("--shallow", action="store_true", help="copy the active layer only; the copy shares the chain (default)")
    mode.add_argument("--full", action="store_true", help="flatten the whole chain into the copy")
    migrate.add_argument("--bandwidth", type=int, default=0, metavar="MIB", help="limit in MiB/s (0 = unlimited)")
    migrate.add_argument("--format", choices=["qcow2", "raw"], help="destination format (default qcow2)")
    migrate.add_argument("--reuse", action="store_true", help="the destination file exists already (pre-created)")
    migrate.add_argument("--wait", action="store_true", help="follow it to the end with a progress bar")
    migrate.add_argument("--idempotency-key", help="send this key (default: a new one, reused for retries)")
    migrate.set_defaults(run=cmd_migrate)

    watch_ = sub.add_parser("watch", help="follow a migration to its end with a progress bar")
    watch_.add_argument("id", type=int)
    watch_.set_defaults(run=cmd_watch)

    listing = sub.add_parser("migrations", help="list migrations (active first)")
    listing.add_argument("--state")
    listing.add_argument("--host")
    listing.set_defaults(run=cmd_migrations)

    for name, path, done, helptext in (
        ("approve", "approve", "Migration #{id} approved: {state}.", "approve a migration's pivot (four eyes)"),
        ("abort", "abort", "Migration #{id}: {state}; the guest stays on its source.", "abort a migration before its pivot"),
    ):
        action = sub.add_parser(name, help=helptext)
        action.add_argument("id", type=int)
        action.add_argument("--idempotency-key")
        action.set_defaults(run=_action(path, done))
    bandwidth = sub.add_parser("bandwidth", help="change a running copy's bandwidth limit")
    bandwidth.add_argument("id", type=int)
    bandwidth.add_argument("mib", type=int, help="MiB/s, 0 = unlimited")
    bandwidth.add_argument("--idempotency-key")
    bandwidth.set_defaults(run=_action("bandwidth", "Migration #{id}: bandwidth limit {bandwidth} MiB/s."))

    audit = sub.add_parser("audit", help="the audit trail, as JSON or CSV")
    audit.add_argument("--since", help="an age (1h, 30m, 2d) or an ISO 8601 time")
    audit.add_argument("--format", choices=["json", "csv"], default="json")
    audit.add_argument("--host")
    audit.add_argument("--domain")
    audit.add_argument("--user")
    audit.add_argument("--event-type")
    audit.add_argument("--migration", type=int)
    audit.set_defaults(run=cmd_audit)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args, sys.stdout)
    except CliError as error:
        sys.stderr.write(f"blockmig: {error.message}\n")
        return error.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("\nblockmig: interrupted (a requested migration goes on; `blockmig watch ID` follows it again)\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
