"""The controller's view of the verifier: node EARs, the JWKS and the change feed, over HTTP.

Authenticated with a bearer token of the ``scheduler`` role (read-only). Every answer the
controller acts on is a signed EAR it verifies itself with the verifier's JWKS, so a tampered
connection or cache cannot make a node look trusted. ``VerifierUnavailable`` is any failure to
get an answer (connection, timeout, 5xx, 401); a 404 ``node_unknown`` is an answer: absent.
"""

from __future__ import annotations

import time
from typing import Any

import requests
from joserfc.jwk import KeySet

from verifier.ear.token import load_jwks

JWKS_TTL = 300.0


class VerifierUnavailable(Exception):
    pass


class VerifierApi:
    def __init__(self, url: str, token: str, *, ca_file: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.http.verify = ca_file or True
        self._jwks: tuple[float, KeySet] | None = None

    def _get(self, path: str, timeout: float, **params: Any) -> requests.Response:
        try:
            resp = self.http.get(f"{self.url}{path}", params=params, timeout=timeout)
        except requests.RequestException as exc:
            raise VerifierUnavailable(f"{path}: {type(exc).__name__}") from None
        if resp.status_code == 404 and path.endswith("/ear"):
            return resp
        if resp.status_code != 200:
            raise VerifierUnavailable(f"{path}: HTTP {resp.status_code}")
        return resp

    def ear(self, node: str) -> str | None:
        """The node's EAR, or None when the verifier does not know the node."""
        resp = self._get(f"/v1/nodes/{node}/ear", 10)
        return None if resp.status_code == 404 else resp.text

    def jwks(self, *, refresh: bool = False, cached_only: bool = False) -> KeySet:
        """The verifier's keys, fetched at most every ``JWKS_TTL`` s; ``cached_only``: never
        fetch (VerifierUnavailable if none were fetched yet)."""
        cached = self._jwks
        if cached_only:
            if cached is None:
                raise VerifierUnavailable("no JWKS fetched yet")
            return cached[1]
        if cached is None or refresh or time.monotonic() - cached[0] > JWKS_TTL:
            data = self._get("/v1/keys", 10).json()
            cached = self._jwks = (time.monotonic(), load_jwks(data))
        return cached[1]

    def events(self, after: int, wait: int) -> tuple[list[dict[str, Any]], int]:
        """(events after ``after``, the feed's last seq), waiting up to ``wait`` s for one."""
        data = self._get("/v1/events", wait + 10, after=after, wait=wait, limit=1000).json()
        return list(data["events"]), int(data["last_seq"])
