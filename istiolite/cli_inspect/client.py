"""Fetch a JSON debug page from a running istiolite (stdlib HTTP only)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_ADDRESS = "http://127.0.0.1:8080"
ENV_ADDRESS = "ISTIOLITE_ADDR"
TIMEOUT_SECONDS = 30.0


class CommandError(Exception):
    """A failure to report on stderr with exit code 1 (unreachable, unknown proxy, bad reply)."""


def default_address() -> str:
    return os.environ.get(ENV_ADDRESS) or DEFAULT_ADDRESS


def base_url(address: str) -> str:
    """`host:port` or a URL; no trailing slash."""
    address = address.strip()
    if "://" not in address:
        address = "http://" + address
    return address.rstrip("/")


def get_json(address: str, path: str, query: dict[str, str] | None = None) -> Any:
    url = base_url(address) + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as resp:
            body = resp.read()
    except urllib.error.HTTPError as err:
        raise CommandError(_error_message(err, url)) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise CommandError(
            f"cannot reach istiolite at {base_url(address)} ({reason}); "
            f"give its debug address with --istiolite or {ENV_ADDRESS}"
        ) from None
    try:
        return json.loads(body)
    except ValueError:
        raise CommandError(f"{url} did not answer JSON: is this istiolite?") from None


def _error_message(err: urllib.error.HTTPError, url: str) -> str:
    body = err.read()
    try:
        message = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        message = body.decode(errors="replace").strip() or str(err.reason)
    return f"{message} (HTTP {err.code} from {url})"
