"""Node-side client of the meshctl control protocol v1 (DESIGN §3): the agent uses only this module
plus `meshctl.wire`. An asyncio shell (httpx) around the sans-IO core in `sealing` and `netmap`.

Exact API::

    class ControlClient:
        def __init__(self, url: str, control_key: ControlPublicKey, machine_key: MachinePrivateKey, *,
                     transport: httpx.AsyncBaseTransport | None = None, timeout: float = 10.0,
                     stream_read_timeout: float = 150.0, clock: Callable[[], float] = time.time) -> None
        async def fetch_control_key(self) -> ControlPublicKey
            # GET /key; raises ControlKeyMismatchError if the served key is not the pinned one
        async def register(self, node_key: NodePrivateKey, *, auth_key: str | None = None,
                           old_node_key: NodePrivateKey | None = None, hostinfo: HostInfo) -> RegisterResult
            # first registration: auth_key (or none → pending until an admin approves; poll again later)
            # rotation: node_key = the NEW key, old_node_key = the current one (its private half signs a proof)
            # re-registration of a known machine with the same node key: returns current status
            # refusals raise RegistrationError(reason, code, status); RegisterResult.error is then never set
        def map_stream(self, request: MapRequest) -> AsyncIterator[MapResponse]
            # POST /machine/map with request.stream=True; yields every decoded frame, keep-alives included
            # (frame.keep_alive). Feed frames to NetMapState.apply(). Raises ControlHTTPError when refused
            # (403 with .code "not_authorized" (pending approval) / "node_key_expired" (rotate) /
            # "unknown_node_key" / "unknown_machine" (register first)), ControlUnreachableError on
            # connection loss or when the server ends the stream (e.g. after a last frame whose self node
            # has expired=True, or when a newer stream of the same node replaced it), FrameError/SealError on
            # a corrupt stream. The first frame is always full.
            # packetFilter absent = no policy (allow all), [] = deny all.
        def map_stream_raw(self, request: MapRequest) -> AsyncIterator[bytes]
            # as map_stream, but yields each frame's opened JSON text undecoded (benchmarks, tools)
        async def update(self, request: MapRequest) -> None
            # non-streaming map request: reports endpoints / homeDerp / hostinfo / discoKey (request.stream ignored)
        async def aclose(self) -> None          # also usable as `async with ControlClient(...) as c:`

    @dataclass(frozen=True) class RegisterResult:
        machine_authorized: bool; node_key_expired: bool; node: wire.Node | None; error: str | None

    class NetMapState:  (meshctl.control.netmap) pure; apply(MapResponse) -> NetMap; reset()
    class NetMap: seq, self_node, peers: dict[int, Node], derp_map, dns, packet_filter, ssh

Errors (meshctl.control.errors): ControlError > ControlKeyMismatchError, ControlUnreachableError,
ControlHTTPError(status, code) > RegistrationError(reason), SealError(code), FrameError, MapSequenceError.

Every response is sealed by the control private key to this machine key, so a response that opens
with the pinned control key came from the real server; one that does not raises SealError.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from ..keys import BoxOpenError, ControlPublicKey, MachinePrivateKey, NodePrivateKey
from ..wire import HostInfo, MapRequest, MapResponse, Node, WireFormatError
from .errors import (
    ControlError,
    ControlHTTPError,
    ControlKeyMismatchError,
    ControlUnreachableError,
    FrameError,
    RegistrationError,
    SealError,
)
from .messages import KeyInfo, RegisterRequest, RegisterResponse, make_rotation_proof
from .netmap import NetMap, NetMapState
from .sealing import FrameDecoder, open_json, seal_request

__all__ = [
    "ControlClient",
    "ControlError",
    "ControlHTTPError",
    "ControlKeyMismatchError",
    "ControlUnreachableError",
    "NetMap",
    "NetMapState",
    "RegisterResult",
    "RegistrationError",
]


@dataclass(frozen=True, slots=True)
class RegisterResult:
    machine_authorized: bool
    node_key_expired: bool
    node: Node | None
    error: str | None = None


def _error_of(resp: httpx.Response) -> tuple[str, str]:
    try:
        body = resp.json()
        return str(body.get("code", "error")), str(body.get("error", resp.reason_phrase))
    except (ValueError, AttributeError):
        return "error", resp.text[:200] or resp.reason_phrase


class ControlClient:
    """One machine's connection to one control server (see the module docstring for the contract)."""

    def __init__(self, url: str, control_key: ControlPublicKey, machine_key: MachinePrivateKey, *,
                 transport: httpx.AsyncBaseTransport | None = None, timeout: float = 10.0,
                 stream_read_timeout: float = 150.0, clock: Callable[[], float] = time.time) -> None:
        self.url = url.rstrip("/")
        self.control_key = control_key
        self._machine = machine_key
        self._box = machine_key.box(control_key)
        self._clock = clock
        self._timeout = timeout
        self._stream_timeout = httpx.Timeout(timeout, read=stream_read_timeout)
        self._http = httpx.AsyncClient(base_url=self.url, transport=transport, timeout=timeout)

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kw)
        except httpx.TransportError as err:
            raise ControlUnreachableError(self.url, str(err) or type(err).__name__) from None

    async def fetch_control_key(self) -> ControlPublicKey:
        resp = await self._request("GET", "/key")
        if resp.status_code != 200:
            raise ControlHTTPError(resp.status_code, *_error_of(resp))
        try:
            served = KeyInfo.from_json(resp.json()).control_key
        except (ValueError, WireFormatError) as err:
            raise ControlError(f"control server sent a malformed /key response: {err}") from None
        if served != self.control_key:
            raise ControlKeyMismatchError(self.control_key.to_text(), served.to_text())
        return served

    def _sealed(self, payload: dict[str, Any]) -> tuple[dict[str, str], bytes]:
        return seal_request(self._machine, self.control_key, payload, self._clock(), box=self._box)

    async def register(self, node_key: NodePrivateKey, *, auth_key: str | None = None,
                       old_node_key: NodePrivateKey | None = None, hostinfo: HostInfo) -> RegisterResult:
        new_pub = node_key.public_key()
        proof = None
        if old_node_key is not None:
            proof = make_rotation_proof(old_node_key, new_pub, self.control_key, self._clock())
        req = RegisterRequest(
            node_key=new_pub, hostinfo=hostinfo, auth_key=auth_key,
            old_node_key=None if old_node_key is None else old_node_key.public_key(), old_node_key_proof=proof,
        )
        headers, body = self._sealed(req.to_json())
        resp = await self._request("POST", "/machine/register", headers=headers, content=body)
        if resp.status_code != 200:
            code, message = _error_of(resp)
            raise RegistrationError(message, code, resp.status_code)
        try:
            reply = RegisterResponse.from_json(open_json(self._box, resp.content, "register response"))
        except WireFormatError as err:
            raise SealError(f"malformed register response: {err}", "bad_json") from None
        if reply.error:
            raise RegistrationError(reply.error)
        return RegisterResult(reply.machine_authorized, reply.node_key_expired, reply.node, None)

    async def update(self, request: MapRequest) -> None:
        payload = request.to_json()
        payload["stream"] = False
        headers, body = self._sealed(payload)
        resp = await self._request("POST", "/machine/map", headers=headers, content=body)
        if resp.status_code not in (200, 204):
            raise ControlHTTPError(resp.status_code, *_error_of(resp))

    async def map_stream(self, request: MapRequest) -> AsyncIterator[MapResponse]:
        async for plain in self.map_stream_raw(request):
            try:
                yield MapResponse.from_json(json.loads(plain))
            except (ValueError, WireFormatError) as err:
                raise FrameError(f"malformed map frame: {err}") from None

    async def map_stream_raw(self, request: MapRequest) -> AsyncIterator[bytes]:
        """Like map_stream, but yields each frame's opened JSON text undecoded (for benchmarks and tools)."""
        payload = request.to_json()
        payload["stream"] = True
        headers, body = self._sealed(payload)
        decoder = FrameDecoder()
        try:
            async with self._http.stream("POST", "/machine/map", headers=headers, content=body,
                                         timeout=self._stream_timeout) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    raise ControlHTTPError(resp.status_code, *_error_of(resp))
                async for chunk in resp.aiter_raw():
                    for sealed in decoder.feed(chunk):
                        try:
                            yield self._box.open(sealed)
                        except BoxOpenError:
                            raise SealError("map frame does not open with the pinned control key", "bad_box") from None
        except httpx.TransportError as err:
            raise ControlUnreachableError(self.url, str(err) or type(err).__name__) from None
        raise ControlUnreachableError(self.url, "map stream closed by the server")
