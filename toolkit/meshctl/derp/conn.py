"""One relay connection: an asyncio protocol driving a client from the HTTP request through the DERP handshake
to relaying, with the bounded output path (see `server` for the registry it reports to).

States: HTTP → CLIENT_INFO (ServerKey sent, waiting for ClientInfo) → VERIFYING (admission call in flight,
reading paused) → ACTIVE → CLOSED. The first two are driven by the sans-IO `accept.ServerHandshake`.
`_active_data` is the hot path: SendPackets for local, writable clients are split straight out of the
received bytes and handed over as (header + source, packet view) pieces; every other frame goes through
`_handle_active`. Output is batched per input chunk (`DerpServer.flush`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..keys import NodePublicKey
from .accept import Hello, Request, Send, ServerHandshake
from .admission import AdmissionVerifier
from .errors import DerpProtocolError, FrameTooLargeError, HttpUpgradeError
from .frames import (
    KEY_LEN,
    MAX_PACKET_SIZE,
    Frame,
    FrameReader,
    FrameType,
    Health,
    KeepAlive,
    PeerGone,
    PeerGoneReason,
    PeerPresent,
    PeerPresentFlags,
    Pong,
    encode_frame,
    frame_header,
    is_disco,
)
from .handshake import ClientInfo, mesh_key_matches
from .http import HttpRequest, generate_204_response, plain_response
from .limits import SendQueue, TokenBucket

if TYPE_CHECKING:
    from .server import DerpServer

__all__ = ["STATE_ACTIVE", "Conn"]

log = logging.getLogger("meshctl.derp")

_HIGH_WATER = 256 << 10
_LOW_WATER = 64 << 10
_RECV_HEADER = FrameType.RECV_PACKET
_SEND = int(FrameType.SEND_PACKET)
_RECV = int(FrameType.RECV_PACKET)
_VECTOR_MIN = 8  # runs at least this long are rewritten with strided slice assignments
_KEY_LEN = KEY_LEN
_MAX_SEND = KEY_LEN + MAX_PACKET_SIZE
_HEADER_UNPACK = struct.Struct(">BI").unpack_from
_STATE_HTTP, _STATE_CLIENT_INFO, _STATE_VERIFYING, _STATE_ACTIVE, _STATE_CLOSED = range(5)
STATE_ACTIVE = _STATE_ACTIVE


def _rewrite(buf: bytearray, start: int, stop: int, stride: int, n: int, src: bytes) -> None:
    """Turn `n` SendPacket frames of one shape, `stride` bytes apart in buf[start:stop], into RecvPackets from
    `src`: the type byte and the 32 key bytes of every frame. Long runs use one strided slice assignment per
    byte position (33 C-level copies) instead of a Python step per frame."""
    if n >= _VECTOR_MIN:
        buf[start:stop:stride] = bytes((_RECV,)) * n
        for j in range(_KEY_LEN):
            buf[start + 5 + j:stop:stride] = src[j:j + 1] * n
        return
    for p in range(start, stop, stride):
        buf[p] = _RECV
        buf[p + 5:p + 37] = src


class Conn(asyncio.Protocol):
    """One client connection: HTTP → ServerKey/ClientInfo/ServerInfo → relaying."""

    def __init__(self, server: DerpServer) -> None:
        self.server = server
        self.stats = server.stats
        self.state = _STATE_HTTP
        self.transport: asyncio.Transport | None = None
        self.key: bytes | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.is_mesh = False
        self.preferred = False
        self.info: ClientInfo | None = None
        self.sent_to: set[bytes] = set()
        self._hs = ServerHandshake(server.pub_hex, server.server_key_frame, server.open_client_info)
        self._reader = FrameReader(limit=MAX_PACKET_SIZE + 2 * KEY_LEN)
        self._queue = SendQueue(depth=server.queue_depth)
        self._out: list[bytes | memoryview] = []
        self._dirty = False
        self._paused = False
        self._deferred = b""  # frames that arrived right behind the ClientInfo, held during verification
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._gone_limit = TokenBucket(rate=1.0, burst=3.0)
        self._verify_task: asyncio.Task[None] | None = None
        self._pending = False

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        srv = self.server
        srv.stats.accepts += 1
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (str(peer[0]), int(peer[1]))
        srv.conns.add(self)
        if srv.pending >= srv.max_pending:
            self.stats.refused["pending_cap"] += 1
            self.close("too many connections in the handshake")
            return
        transport.set_write_buffer_limits(high=_HIGH_WATER, low=_LOW_WATER)
        srv.pending += 1
        self._pending = True
        self._timer("handshake", srv.handshake_timeout, self._handshake_timeout)

    def data_received(self, data: bytes) -> None:
        try:
            if self.state == _STATE_ACTIVE:
                self._active_data(data)
            elif self.state in (_STATE_HTTP, _STATE_CLIENT_INFO):
                self._handshake_data(data)
            elif self.state == _STATE_VERIFYING:  # reading is paused; keep anything already in flight
                self._deferred += data
        except (DerpProtocolError, HttpUpgradeError) as e:
            self.stats.refused[type(e).__name__] += 1
            log.info("closing DERP connection from %s: %s", self._who(), e)
            if isinstance(e, HttpUpgradeError) and self.state == _STATE_HTTP and self.transport is not None:
                self.transport.write(plain_response(e.status or 400, f"{e}\n".encode()))
            self.close(str(e))
        finally:
            if self.server.dirty:
                self.server.flush()

    def eof_received(self) -> bool | None:
        self.close("client closed")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def pause_writing(self) -> None:
        self._paused = True
        timeout = self.server.mesh_write_timeout if self.is_mesh else self.server.write_timeout
        self._timer("write", timeout, self._write_timed_out)

    def resume_writing(self) -> None:
        self._paused = False
        self._cancel_timer("write")
        if len(self._queue):
            self._out.extend(self._queue.drain())
            self._mark_dirty()
            self.server.flush()

    # -- HTTP ---------------------------------------------------------------------------------------

    def _handshake_data(self, data: bytes) -> None:
        for ev in self._hs.receive(data):
            if isinstance(ev, Send):
                assert self.transport is not None
                self.transport.write(ev.data)
                if ev.close:
                    self._close_after_write()
                else:
                    self.state = _STATE_CLIENT_INFO
            elif isinstance(ev, Request):
                self._route(ev.request)
            else:
                self._hello(ev)

    def _route(self, req: HttpRequest) -> None:
        """Answer a plain HTTP request (everything but the /derp upgrade) and close."""
        assert self.transport is not None
        head_only = req.method == "HEAD"
        if req.path in ("/derp/probe", "/derp/latency-check"):
            self._respond(200, b"", head_only, extra=[("Access-Control-Allow-Origin", "*")])
        elif req.path == "/generate_204":
            self.transport.write(generate_204_response(req.header("x-tailscale-challenge")))
            self._close_after_write()
        elif req.path == "/metrics":
            self._respond(200, self.server.render_metrics(), head_only,
                          content_type="text/plain; version=0.0.4; charset=utf-8")
        elif req.path == "/robots.txt":
            self._respond(200, b"User-agent: *\nDisallow: /\n", head_only)
        elif req.path == "/":
            self._respond(200, b"meshctl DERP relay\n", head_only)
        else:
            self._respond(404, b"not found\n", head_only)

    def _respond(self, status: int, body: bytes, head_only: bool, *, content_type: str = "text/plain; charset=utf-8",
                 extra: list[tuple[str, str]] | None = None) -> None:
        assert self.transport is not None
        self.transport.write(plain_response(status, body, content_type=content_type, extra=extra, head_only=head_only))
        self._close_after_write()

    def _close_after_write(self) -> None:
        self.state = _STATE_CLOSED
        self._cancel_timer("handshake")
        assert self.transport is not None
        self.transport.close()  # flushes the response first

    # -- frames -------------------------------------------------------------------------------------

    def _hello(self, hello: Hello) -> None:
        key, info = hello.key, hello.info
        self.key, self.info = key.raw, info
        if info.mesh_key is not None and mesh_key_matches(info.mesh_key, self.server.mesh_keys):
            self.is_mesh = True
            self._admit(hello.rest)
            return
        if info.mesh_key is not None and not self.server.mesh_keys:
            pass  # derper ignores a mesh key it does not have; the client is treated as a regular one
        elif info.mesh_key is not None:
            self.stats.refused["bad_mesh_key"] += 1
            self._refuse("mesh key does not match")
            return
        verifier = self.server.verifier
        if verifier is None:
            self._admit(hello.rest)
            return
        self._deferred = hello.rest
        self.state = _STATE_VERIFYING
        assert self.transport is not None
        self.transport.pause_reading()
        self._verify_task = asyncio.get_running_loop().create_task(self._verify(verifier, key))

    async def _verify(self, verifier: AdmissionVerifier, key: NodePublicKey) -> None:
        decision = await verifier.check(key, self.peer[0])
        if self.state != _STATE_VERIFYING:
            return
        if not decision.allow:
            self.stats.refused["not_admitted"] += 1
            log.info("refusing DERP client %s from %s: %s", key.short(), self.peer[0], decision.reason)
            self._refuse("node key not admitted")
            return
        deferred, self._deferred = self._deferred, b""
        assert self.transport is not None
        self.transport.resume_reading()
        try:
            self._admit(deferred)
        except DerpProtocolError as e:
            self.stats.refused[type(e).__name__] += 1
            self.close(str(e))
        finally:
            self.server.flush()

    def _refuse(self, why: str) -> None:
        self.write_control(encode_frame(Health(f"DERP server refused this client: {why}")))
        self.close(why)

    def _leave_pending(self) -> None:
        if self._pending:
            self._pending = False
            self.server.pending -= 1

    def _admit(self, rest: bytes) -> None:
        """ServerInfo out, into the registry, and relay whatever frames came in behind the ClientInfo."""
        assert self.transport is not None and self.key is not None
        self._leave_pending()
        self._cancel_timer("handshake")
        self.transport.write(self.server.server_info_frame(NodePublicKey(self.key)))
        self.state = _STATE_ACTIVE
        self.server.register(self)
        self._schedule_keepalive()
        if rest:
            self._active_data(rest)

    def _active_data(self, data: bytes) -> None:
        """The relay's hot path. The received bytes are copied once into a bytearray. A SendPacket for a local,
        writable client becomes its RecvPacket in place (type 0x04 → 0x05, destination key → our key; the
        length is unchanged), together with every following frame of the same length to the same client;
        such a run is rewritten with a few slice assignments and handed over as one memoryview. Every other
        frame takes `_handle_active`."""
        reader = self._reader
        buf = bytearray(reader.take(data))
        limit = reader.limit
        srv = self.server
        clients = srv.clients
        dirty = srv.dirty
        sent_to = self.sent_to
        src = self.key
        assert src is not None
        unpack = _HEADER_UNPACK
        view = memoryview(buf)  # keeps buf alive until flush() writes the runs out
        pos, end = 0, len(buf)
        forwarded = nbytes = 0
        try:
            while end - pos >= 5:
                ftype, length = unpack(buf, pos)
                if length > limit:
                    raise reader.fail(FrameTooLargeError(ftype, length, limit))
                stop = pos + 5 + length
                if stop > end:
                    break
                if ftype == _SEND and _KEY_LEN <= length <= _MAX_SEND:
                    dst = bytes(buf[pos + 5:pos + 37])
                    target = clients.get(dst)
                    if target is not None and not target._paused and target is not self:
                        if dst not in sent_to:
                            sent_to.add(dst)
                        # the run: this frame and the whole frames right behind it with the same header and key
                        stride = stop - pos
                        prefix = bytes(buf[pos:pos + 37])
                        run_end = stop
                        while run_end + stride <= end and buf.startswith(prefix, run_end):
                            run_end += stride
                        n = (run_end - pos) // stride
                        _rewrite(buf, pos, run_end, stride, n, src)
                        target._out.append(view[pos:run_end])
                        if not target._dirty:
                            target._dirty = True
                            dirty.append(target)
                        forwarded += n
                        nbytes += n * (length - _KEY_LEN)
                        pos = run_end
                        continue
                self._handle_active([Frame(ftype, bytes(buf[pos + 5:stop]))])
                if self.state != _STATE_ACTIVE:
                    return
                pos = stop
        finally:
            stats = self.stats
            stats.packets_forwarded += forwarded
            stats.bytes_forwarded += nbytes
        if pos < end:
            reader.feed(bytes(buf[pos:]))

    def _handle_active(self, frames: list[Any]) -> None:
        srv = self.server
        clients = srv.clients
        stats = self.stats
        src = self.key
        assert src is not None
        for frame in frames:
            ftype = frame.type
            payload = frame.payload
            if ftype == FrameType.SEND_PACKET:
                if len(payload) < KEY_LEN:
                    raise DerpProtocolError(f"SendPacket of {len(payload)} bytes, want at least {KEY_LEN}")
                if len(payload) - KEY_LEN > MAX_PACKET_SIZE:
                    raise DerpProtocolError(f"SendPacket carries {len(payload) - KEY_LEN} bytes, "
                                            f"limit {MAX_PACKET_SIZE}")
                dst = payload[:KEY_LEN]
                if dst == src:
                    raise DerpProtocolError("SendPacket addressed to the sender's own key")
                target = clients.get(dst)
                if target is not None:
                    if dst not in self.sent_to:  # only keys that exist, so a spray of random keys costs nothing
                        self.sent_to.add(dst)
                    target.deliver(src, payload, KEY_LEN)
                    continue
                fwd = srv.forwarders.get(dst)
                if fwd is not None and not self.is_mesh:
                    if fwd.forward_nowait(src, dst, payload[KEY_LEN:]):
                        stats.packets_mesh_forwarded += 1
                    else:
                        stats.drops["write_error"] += 1
                    continue
                stats.drops["unknown_dest"] += 1
                if self._gone_limit.allow(srv.clock()):
                    self.write_control(encode_frame(PeerGone(NodePublicKey(dst), PeerGoneReason.NOT_HERE)))
            elif ftype == FrameType.FORWARD_PACKET:
                if not self.is_mesh:
                    raise DerpProtocolError("ForwardPacket from a client that is not a mesh peer")
                if len(payload) < 2 * KEY_LEN:
                    raise DerpProtocolError(f"ForwardPacket of {len(payload)} bytes, want at least {2 * KEY_LEN}")
                fsrc, dst = payload[:KEY_LEN], payload[KEY_LEN:2 * KEY_LEN]
                target = clients.get(dst)
                if target is not None:
                    target.deliver(fsrc, payload, 2 * KEY_LEN)
                else:
                    stats.drops["unknown_dest_on_fwd"] += 1  # one hop only: never forward again
            elif ftype == FrameType.PING:
                if len(payload) < 8:
                    raise DerpProtocolError(f"Ping of {len(payload)} bytes, want 8")
                stats.pings += 1
                if not self._paused:  # a client that does not read gets no more pongs
                    self.write_control(encode_frame(Pong(payload[:8])))
            elif ftype == FrameType.NOTE_PREFERRED:
                stats.note_preferred += 1
                pref = bool(payload[:1] == b"\x01")
                if pref != self.preferred:
                    stats.clients_preferred += 1 if pref else -1
                    self.preferred = pref
            elif ftype == FrameType.WATCH_CONNS:
                if not self.is_mesh:
                    raise DerpProtocolError("WatchConns from a client that is not a mesh peer")
                srv.add_watcher(self)
            elif ftype == FrameType.CLOSE_PEER:
                if not self.is_mesh:
                    raise DerpProtocolError("ClosePeer from a client that is not a mesh peer")
                victim = clients.get(payload[:KEY_LEN])
                if victim is not None and not victim.is_mesh:
                    victim.close("closed by a mesh peer")
            elif ftype == FrameType.CLIENT_INFO:
                raise DerpProtocolError("second ClientInfo on an established connection")
            # Pong, KeepAlive and unknown types are skipped, like derper does

    # -- output -------------------------------------------------------------------------------------

    def deliver(self, src: bytes, payload: bytes, offset: int) -> None:
        """Queue a RecvPacket(src, payload[offset:]) for this client."""
        n = len(payload) - offset
        frame = b"".join((frame_header(_RECV_HEADER, KEY_LEN + n), src, payload[offset:]))
        stats = self.stats
        if self._paused:
            if self._queue.push(frame, disco=is_disco(payload[offset:offset + 6])):
                stats.drops["queue_head"] += 1
        else:
            self._out.append(frame)
            if not self._dirty:
                self._dirty = True
                self.server.mark_dirty(self)
        stats.packets_forwarded += 1
        stats.bytes_forwarded += n

    def _mark_dirty(self) -> None:
        if not self._dirty:
            self._dirty = True
            self.server.mark_dirty(self)

    def flush(self) -> None:
        self._dirty = False
        if not self._out or self.transport is None or self.state == _STATE_CLOSED:
            self._out.clear()
            return
        out, self._out = self._out, []
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def write_control(self, frame: bytes) -> None:
        """Small server frames (PeerGone, Pong, Health, KeepAlive, PeerPresent) go out right away."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def peer_present_frame(self) -> bytes:
        assert self.key is not None
        flags = PeerPresentFlags.MESH_PEER if self.is_mesh else PeerPresentFlags.REGULAR
        if self.info is not None and self.info.is_prober:
            flags |= PeerPresentFlags.PROBER
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(self.peer[0])
        except ValueError:
            ip = None
        return encode_frame(PeerPresent(NodePublicKey(self.key), ip, self.peer[1], flags))

    # -- timers and closing -------------------------------------------------------------------------

    def _timer(self, name: str, delay: float, fn: Callable[[], None]) -> None:
        self._cancel_timer(name)
        self._timers[name] = asyncio.get_running_loop().call_later(delay, fn)

    def _cancel_timer(self, name: str) -> None:
        t = self._timers.pop(name, None)
        if t is not None:
            t.cancel()

    def _schedule_keepalive(self) -> None:
        delay = self.server.keepalive_interval + self.server.rng.uniform(0, self.server.keepalive_jitter)
        self._timer("keepalive", delay, self._keepalive)

    def _keepalive(self) -> None:
        if self.state == _STATE_ACTIVE:
            self.write_control(encode_frame(KeepAlive()))
            self._schedule_keepalive()

    def _handshake_timeout(self) -> None:
        if self.state < _STATE_ACTIVE:
            self.stats.refused["handshake_timeout"] += 1
            self.close(f"no DERP handshake within {self.server.handshake_timeout:g}s")

    def _write_timed_out(self) -> None:
        self.stats.drops["write_error"] += len(self._queue)
        self.stats.refused["write_timeout"] += 1
        log.info("closing DERP client %s: not reading (write blocked %gs)", self._who(),
                 self.server.mesh_write_timeout if self.is_mesh else self.server.write_timeout)
        self.close("write timeout", abort=True)

    def _who(self) -> str:
        key = NodePublicKey(self.key).short() if self.key else "(no key yet)"
        return f"{key} {self.peer[0]}:{self.peer[1]}"

    def close(self, why: str, *, unregister: bool = True, abort: bool = False) -> None:
        if self.state == _STATE_CLOSED and self.transport is not None and self.transport.is_closing():
            return
        was_active = self.state == _STATE_ACTIVE
        self.state = _STATE_CLOSED
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        if was_active and not unregister:
            self.key = None  # the newer connection owns the key now
        self._finish()

    def _finish(self) -> None:
        self.state = _STATE_CLOSED
        self._leave_pending()
        for name in list(self._timers):
            self._cancel_timer(name)
        if self._verify_task is not None and not self._verify_task.done():
            self._verify_task.cancel()
        if self in self.server.conns:
            self.server.conns.discard(self)
            self.server.unregister(self)
        dropped = len(self._queue)
        if dropped:
            self.stats.drops["gone_disconnected"] += dropped
            self._queue.drain()
        self._out.clear()
