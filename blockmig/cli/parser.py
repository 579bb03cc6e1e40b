"""The command line: arguments of each command, and `main`, which runs one and turns a
CliError into its message and exit code."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from blockmig.cli.commands import (
    action_command,
    cmd_audit,
    cmd_chain,
    cmd_hosts,
    cmd_login,
    cmd_migrate,
    cmd_migrations,
    cmd_watch,
)
from blockmig.cli.exits import USAGE, CliError


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
        action.set_defaults(run=action_command(path, done))
    bandwidth = sub.add_parser("bandwidth", help="change a running copy's bandwidth limit")
    bandwidth.add_argument("id", type=int)
    bandwidth.add_argument("mib", type=int, help="MiB/s, 0 = unlimited")
    bandwidth.add_argument("--idempotency-key")
    bandwidth.set_defaults(run=action_command("bandwidth", "Migration #{id}: bandwidth limit {bandwidth} MiB/s."))

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
