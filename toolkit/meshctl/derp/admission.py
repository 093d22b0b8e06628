"""Admission control: ask the control server whether a node key may use this relay.

`POST <verify_url>` with `{"NodePublic": "nodekey:…", "Source": "<client ip>"}` and
`Authorization: Bearer <DERP token>`; the answer is `{"Allow": bool}` (derper's --verify-client-url
shape; meshctl's control server serves it at `POST /derp/verify`). Allows are cached for
`cache_ttl` seconds; denials are not cached, so a newly registered node gets in at once.
Errors (timeout, non-200, malformed body) deny unless `fail_open` is set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import httpx

from ..keys import NodePublicKey

__all__ = ["AdmissionVerifier", "Decision"]

log = logging.getLogger("meshctl.derp")

MAX_BODY = 4096
DEFAULT_TTL = 30.0


class Decision:
    """Why a key was allowed or not; `allow` is what matters."""

    __slots__ = ("allow", "reason")

    def __init__(self, allow: bool, reason: str) -> None:
        self.allow = allow
        self.reason = reason

    def __repr__(self) -> str:
        return f"Decision(allow={self.allow}, reason={self.reason!r})"


class AdmissionVerifier:
    def __init__(self, url: str, token: str, *, fail_open: bool = False, cache_ttl: float = DEFAULT_TTL,
                 timeout: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url
        self._headers = {"Authorization": f"Bearer {token}"}
        self.fail_open = fail_open
        self.cache_ttl = cache_ttl
        self._clock = clock
        self._cache: dict[NodePublicKey, float] = {}
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=False)

    def __repr__(self) -> str:
        return f"AdmissionVerifier(url={self.url!r}, fail_open={self.fail_open})"

    async def check(self, key: NodePublicKey, source_ip: str) -> Decision:
        now = self._clock()
        expires = self._cache.get(key)
        if expires is not None and expires > now:
            return Decision(True, "cached allow")
        decision = await self._ask(key, source_ip)
        if decision.allow and not decision.reason.startswith("fail-open"):
            if len(self._cache) > 100_000:
                self._cache = {k: t for k, t in self._cache.items() if t > now}
            self._cache[key] = now + self.cache_ttl
        else:
            self._cache.pop(key, None)
        return decision

    async def _ask(self, key: NodePublicKey, source_ip: str) -> Decision:
        body = {"NodePublic": key.to_text(), "Source": source_ip}
        try:
            resp = await self._http.post(self.url, json=body, headers=self._headers)
            content = resp.content[:MAX_BODY + 1]
        except httpx.HTTPError as e:
            return self._failure(f"admission request failed: {type(e).__name__}: {e}")
        if resp.status_code != 200:
            return self._failure(f"admission server answered HTTP {resp.status_code}")
        if len(content) > MAX_BODY:
            return self._failure(f"admission answer over {MAX_BODY} bytes")
        try:
            obj = httpx.Response(200, content=content).json()
        except ValueError:
            return self._failure("admission answer is not JSON")
        allow = obj.get("Allow") if isinstance(obj, dict) else None
        if not isinstance(allow, bool):
            return self._failure('admission answer lacks a boolean "Allow"')
        return Decision(allow, "allowed by control server" if allow else "denied by control server")

    def _failure(self, reason: str) -> Decision:
        log.warning("%s (%s)", reason, "fail-open: admitting" if self.fail_open else "fail-closed: refusing")
        return Decision(self.fail_open, ("fail-open: " if self.fail_open else "") + reason)

    async def aclose(self) -> None:
        await self._http.aclose()
