"""The HTTP client: JSON over the standard library, retries only what is safe to repeat, and
the API's refusals turned into CliError with the exit code for them."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode, urljoin
from urllib.request import Request, urlopen

from blockmig.cli.config import load_config
from blockmig.cli.exits import DENIED, DENIED_CODES, REFUSED, TROUBLE, UNREACHABLE, CliError

TIMEOUT = 30.0
RETRIES = 3  # a POST with an Idempotency-Key is retried this often when the connection drops


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
