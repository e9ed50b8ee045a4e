"""JSON requests to an OpenAI-compatible endpoint (the AlpacaFarm judge, the vLLM backend): plain urllib, the API key
as a Bearer token when there is one, every failure one sentence in the caller's error class."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


def post_json(url: str, body: dict, timeout_s: float, api_key: str | None, error: type[Exception], hint: str) -> dict:
    """The endpoint's JSON reply to `body`. An HTTP error status raises `error` with the status and the start of the
    reply; an unreachable endpoint, a timeout or a reply that is not JSON raises `error` ending in `hint`."""
    return _request(url, json.dumps(body).encode(), timeout_s, api_key, error, hint)


def get_json(url: str, timeout_s: float, api_key: str | None, error: type[Exception], hint: str) -> dict:
    """The endpoint's JSON reply to a GET (e.g. /v1/models), failing as post_json does."""
    return _request(url, None, timeout_s, api_key, error, hint)


def _request(url, data, timeout_s, api_key, error, hint) -> dict:
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")[:300]
        raise error(f"{url} answered {err.code}: {detail}; {hint}") from None
    except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as err:
        raise error(f"{url} failed ({err}); {hint}") from None
