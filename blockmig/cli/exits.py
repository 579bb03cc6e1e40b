"""The exit codes (see the package's docstring), which API error codes mean "denied", and
the error a command raises to say something and exit with a code."""

from __future__ import annotations

OK, TROUBLE, USAGE, REFUSED, DENIED, MIGRATION_FAILED, UNREACHABLE = 0, 1, 2, 3, 4, 5, 6
DENIED_CODES = {"not_authenticated", "token_invalid", "token_expired", "token_revoked", "authentication_failed",
                "permission_denied", "csrf_failed", "not_found", "method_not_allowed"}  # fmt: skip
TERMINAL = {"completed": OK, "failed": MIGRATION_FAILED, "aborted": MIGRATION_FAILED}
# States in which the copy has nothing more to wait for but a person (or the host's policy).
AWAITING = "ready"


class CliError(Exception):
    """Something to tell the user, and the exit code that goes with it."""

    def __init__(self, message: str, exit_code: int, code: str = ""):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.code = code
