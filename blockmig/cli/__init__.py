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

from blockmig.cli.parser import main

__all__ = ["main"]  # the `blockmig` entry point (pyproject [project.scripts])
