"""Benchmark: meshctl's DERP relay against a minimal asyncio byte forwarder and socat, on loopback.

Clients exchange 1,400-byte packets through the relay (SendPacket → RecvPacket, 1,437 bytes a frame on the
wire). Baselines measured in the same run carry the very same frames: a minimal asyncio forwarder that pipes a
sender's bytes to its receiver (the Python ceiling) and, where installed, one `socat` process per pair (the
native ceiling). The relay and the asyncio forwarder each run in their own process; the load generator
(this process) shares the machine with them, so absolute numbers depend on the host: read the ratios.

Prints frames/s and Mbit/s (payload bits) for 1 and N pairs, with and without TLS, the ratio to each
baseline, one-way latency (p50/p99) through the relay and the forwarder at half of the relay's 1-pair
maximum, and the relay's RSS before/during/after a receiver stalls for 10 s while its sender keeps sending.

    .venv/bin/python bench/derp_relay.py                    # ~70 s
    .venv/bin/python bench/derp_relay.py --duration 10 --pairs 100 --stall 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import ipaddress
import logging
import os
import shutil
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PAYLOAD = 1400
FRAME = 5 + 32 + PAYLOAD
BATCH = 45  # frames per write (~64 KiB)


# ---------------------------------------------------------------------------------------------- servers


def _quiet(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """Aborting many TLS connections at the end of a point makes asyncio log noise; keep the table readable."""
    if "SSL" in str(context.get("message", "")) or isinstance(context.get("exception"), (ssl.SSLError, OSError)):
        return
    loop.default_exception_handler(context)


def _maybe_uvloop() -> str:
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def _tls_server_ctx(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert or not key:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def _serve_derp(port: int, cert: str | None, key: str | None) -> None:
    from meshctl.derp.server import DerpServer
    from meshctl.keys import DerpPrivateKey

    asyncio.get_running_loop().set_exception_handler(_quiet)
    server = DerpServer(DerpPrivateKey.generate())
    _, bound = await server.listen("127.0.0.1", port, ssl_context=_tls_server_ctx(cert, key))
    print(f"READY {bound}", flush=True)
    await asyncio.Event().wait()


class _Forward(asyncio.Protocol):
    """Minimal forwarder: the first line names the pair and role; then the sender's bytes go to the receiver."""

    pairs: dict[str, _Forward] = {}

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Forward | None = None
        self.head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            assert self.peer.transport is not None
            self.peer.transport.write(data)
            return
        self.head += data
        if b"\n" not in self.head:
            return
        line, rest = self.head.split(b"\n", 1)
        pair, role = line.decode().split()
        other = self.pairs.pop(pair, None)
        if other is None:
            self.pairs[pair] = self
        else:
            self.peer, other.peer = other, self
        if role == "recv":
            assert self.transport is not None
            self.transport.write(b"OK\n")
        if rest and self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(rest)

    # no flow control on purpose: the ceiling, not a safe relay


async def _serve_baseline(port: int, cert: str | None, key: str | None) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet)
    server = await loop.create_server(_Forward, "127.0.0.1", port, ssl=_tls_server_ctx(cert, key))
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


@dataclass
class Proc:
    proc: subprocess.Popen[str]
    port: int

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def spawn(kind: str, tls: tuple[str, str] | None) -> Proc:
    cmd = [sys.executable, __file__, "--_serve", kind]
    if tls:
        cmd += ["--_cert", tls[0], "--_key", tls[1]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"{kind} server did not start: {line!r}")
    return Proc(proc, int(line.split()[1]))


# ---------------------------------------------------------------------------------------------- clients


class Peer(asyncio.Protocol):
    """One load-generator connection: optional DERP handshake, then counting (and optionally timing) frames."""

    def __init__(self, mode: str, key: object, pair: str, role: str, timing: bool = False) -> None:
        from meshctl.derp.frames import FrameReader

        self.mode, self.key, self.pair, self.role, self.timing = mode, key, pair, role, timing
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buf = b""
        self.frames = FrameReader(limit=1 << 20)
        self.received = 0
        self.latencies: list[int] = []
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.progress = asyncio.Event()
        self._stage = 0
        self._partial = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        from meshctl.derp.http import upgrade_request

        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.mode == "derp":
            transport.write(upgrade_request("127.0.0.1"))
        elif self.mode == "baseline":
            transport.write(f"{self.pair} {self.role}\n".encode())
            if self.role == "send":
                self.ready.set_result(None)
        else:  # socat: nothing to say
            self.ready.set_result(None)

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.can_write.set()
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during set-up: {exc}"))

    def data_received(self, data: bytes) -> None:
        if self.ready.done():
            self._count(data)
            return
        self.buf += data
        if self.mode == "baseline":
            if b"OK\n" in self.buf:
                rest = self.buf.split(b"OK\n", 1)[1]
                self.ready.set_result(None)
                if rest:
                    self._count(rest)
            return
        self._derp_handshake()

    def _derp_handshake(self) -> None:
        from meshctl.derp.frames import FrameType
        from meshctl.derp.handshake import ClientInfo, parse_server_key, seal_client_info
        from meshctl.derp.http import parse_response_head

        assert self.transport is not None
        if self._stage == 0:
            parsed = parse_response_head(self.buf)
            if parsed is None:
                return
            self.frames.feed(self.buf[parsed[1]:])
            self.buf = b""
            self._stage = 1
        else:
            self.frames.feed(self.buf)
            self.buf = b""
        for frame in self.frames.frames():
            if frame.type == FrameType.SERVER_KEY:
                server_pub = parse_server_key(frame.payload)
                self.transport.write(seal_client_info(self.key, server_pub, ClientInfo(app_name="bench")))  # type: ignore[arg-type]
            elif frame.type == FrameType.SERVER_INFO:
                self.ready.set_result(None)
            elif self.ready.done():
                self._count_frame(frame.payload)

    def _count(self, data: bytes) -> None:
        self.progress.set()
        if not self.timing:
            self.received += len(data)
            return
        self.frames.feed(data)
        now = time.perf_counter_ns()
        for frame in self.frames.frames():
            self.received += FRAME
            self.latencies.append(now - struct.unpack_from(">Q", frame.payload, 32)[0])

    def _count_frame(self, payload: bytes) -> None:
        self.received += FRAME


def _send_frame(dst: bytes, stamp: int = 0) -> bytes:
    from meshctl.derp.frames import FrameType, frame_header

    return frame_header(FrameType.SEND_PACKET, 32 + PAYLOAD) + dst + struct.pack(">Q", stamp) + bytes(PAYLOAD - 8)


async def connect(mode: str, port: int, pair: str, role: str, ctx: ssl.SSLContext | None,
                  timing: bool = False) -> tuple[Peer, bytes]:
    from meshctl.keys import NodePrivateKey

    key = NodePrivateKey.generate()
    loop = asyncio.get_running_loop()
    for attempt in range(50):
        try:
            _, peer = await loop.create_connection(lambda: Peer(mode, key, pair, role, timing), "127.0.0.1", port,
                                                   ssl=ctx, server_hostname="localhost" if ctx else None)
            break
        except ConnectionRefusedError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.05)
    return peer, key.public_key().raw


async def open_pairs(mode: str, ports: list[int], ctx: ssl.SSLContext | None,
                     timing: bool = False) -> list[tuple[Peer, Peer, bytes]]:
    pairs = []
    for i, port in enumerate(ports):
        recv, recv_key = await connect(mode, port, f"p{i}", "recv", ctx, timing)
        if mode == "baseline":
            send, _ = await connect(mode, port, f"p{i}", "send", ctx)
        else:
            send, _ = await connect(mode, port, f"p{i}", "send", ctx)
        await asyncio.wait_for(asyncio.gather(recv.ready, send.ready), 10)
        pairs.append((send, recv, recv_key))
    return pairs


async def blast(send: Peer, dst: bytes, stop: asyncio.Event, recv: Peer | None = None, window: int = 0) -> None:
    """Send as fast as the socket takes it; with `recv` and `window`, keep at most `window` frames in flight
    (closed loop, like TCP inside WireGuard would), so the relay is measured forwarding, not dropping."""
    chunk = _send_frame(dst) * BATCH
    assert send.transport is not None
    sent = 0
    while not stop.is_set():
        await send.can_write.wait()
        if send.transport.is_closing():
            return
        if recv is not None and window:
            while sent - recv.received // FRAME > window and not stop.is_set():
                recv.progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(recv.progress.wait(), 0.05)  # a dropped frame never arrives
                if sent - recv.received // FRAME > window:
                    sent = recv.received // FRAME + window // 2  # forgive losses after a quiet spell
        send.transport.write(chunk)
        sent += BATCH
        await asyncio.sleep(0)


async def throughput(mode: str, ports: list[int], ctx: ssl.SSLContext | None, duration: float,
                     window: int = 0) -> float:
    """Frames per second delivered to the receivers, measured after a short warm-up."""
    pairs = await open_pairs(mode, ports, ctx)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(blast(s, k, stop, r, window)) for s, r, k in pairs]
    await asyncio.sleep(min(1.0, duration / 4))
    start_bytes = sum(r.received for _, r, _ in pairs)
    t0 = time.perf_counter()
    await asyncio.sleep(duration)
    got = sum(r.received for _, r, _ in pairs) - start_bytes
    elapsed = time.perf_counter() - t0
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for s, r, _ in pairs:
        for p in (s, r):
            if p.transport:
                p.transport.abort()
    await asyncio.sleep(0.2)
    return got / FRAME / elapsed


async def latency(mode: str, port: int, rate: float, duration: float) -> tuple[float, float]:
    """(p50, p99) one-way microseconds at `rate` frames/s for one pair, paced in 1 ms ticks."""
    ((send, recv, dst),) = await open_pairs(mode, [port], None, timing=True)
    assert send.transport is not None
    per_tick = rate / 1000.0
    owed = 0.0
    t_end = time.perf_counter() + duration
    while time.perf_counter() < t_end:
        owed += per_tick
        n = int(owed)
        owed -= n
        if n and send.can_write.is_set():
            send.transport.write(b"".join(_send_frame(dst, time.perf_counter_ns()) for _ in range(n)))
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.3)
    lat = sorted(recv.latencies[len(recv.latencies) // 10:])  # drop the warm-up tenth
    send.transport.abort()
    if recv.transport:
        recv.transport.abort()
    if not lat:
        return float("nan"), float("nan")
    return statistics.median(lat) / 1000, lat[int(len(lat) * 0.99) - 1] / 1000


async def socat_throughput(pairs: int, duration: float, window: int) -> float | None:
    """One socat process per pair between the sender and a sink the load generator listens on."""
    if shutil.which("socat") is None:
        return None
    import socket

    loop = asyncio.get_running_loop()
    procs: list[subprocess.Popen[bytes]] = []
    sinks: list[asyncio.Server] = []
    receivers: list[list[Peer]] = [[] for _ in range(pairs)]
    senders: list[Peer] = []
    try:
        for i in range(pairs):
            def factory(i: int = i) -> Peer:
                peer = Peer("socat", None, "", "recv")
                receivers[i].append(peer)
                return peer
            sink = await loop.create_server(factory, "127.0.0.1", 0)
            sinks.append(sink)
            with contextlib.closing(socket.socket()) as s:
                s.bind(("127.0.0.1", 0))
                front = s.getsockname()[1]
            procs.append(subprocess.Popen(["socat", "-b", "65536", f"TCP-LISTEN:{front},bind=127.0.0.1,reuseaddr",
                                           f"TCP:127.0.0.1:{sink.sockets[0].getsockname()[1]}"]))
            senders.append((await connect("socat", front, "", "send", None))[0])
        for _ in range(200):
            if all(receivers):
                break
            await asyncio.sleep(0.02)
        recv = [r[0] for r in receivers]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(blast(s, bytes(32), stop, r, window)) for s, r in zip(senders, recv, strict=True)]
        await asyncio.sleep(min(1.0, duration / 4))
        b0 = sum(r.received for r in recv)
        t0 = time.perf_counter()
        await asyncio.sleep(duration)
        got = sum(r.received for r in recv) - b0
        elapsed = time.perf_counter() - t0
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        return got / FRAME / elapsed
    finally:
        for peer in senders:
            if peer.transport:
                peer.transport.abort()
        for p in procs:
            p.terminate()
            p.wait()
        for sink in sinks:
            sink.close()


async def stall(port: int, proc: Proc, seconds: float) -> dict[str, object]:
    """A receiver stops reading while its sender keeps sending; a second pair keeps running."""
    (stalled_send, stalled_recv, stalled_key), (ok_send, ok_recv, ok_key) = await open_pairs("derp", [port, port], None)
    assert stalled_recv.transport is not None
    stop = asyncio.Event()
    rss_before = proc.rss_kib()
    tasks = [asyncio.create_task(blast(ok_send, ok_key, stop))]
    await asyncio.sleep(1.0)
    b0, t0 = ok_recv.received, time.perf_counter()
    await asyncio.sleep(1.0)
    ok_rate_before = (ok_recv.received - b0) / FRAME / (time.perf_counter() - t0)
    stalled_recv.transport.pause_reading()
    tasks.append(asyncio.create_task(blast(stalled_send, stalled_key, stop)))
    samples = []
    b0, t0 = ok_recv.received, time.perf_counter()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        await asyncio.sleep(0.5)
        samples.append(proc.rss_kib())
    ok_rate_during = (ok_recv.received - b0) / FRAME / (time.perf_counter() - t0)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    metrics = await _metrics(port)
    for p in (stalled_send, stalled_recv, ok_send, ok_recv):
        if p.transport:
            p.transport.abort()
    return {"rss_before": rss_before, "rss_max": max(samples), "rss_after": samples[-1],
            "ok_before": ok_rate_before, "ok_during": ok_rate_during, "metrics": metrics}


async def _metrics(port: int) -> dict[str, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    data = (await reader.read()).decode()
    writer.close()
    out = {}
    for line in data.splitlines():
        if line.startswith(("derp_packets_dropped_total{", "derp_connections_refused_total{")) or \
                line.startswith("derp_packets_forwarded_total"):
            name, value = line.rsplit(" ", 1)
            if float(value):
                out[name] = float(value)
    return out


# ---------------------------------------------------------------------------------------------- report


def _self_signed(tmp: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    return str(tmp / "cert.pem"), str(tmp / "key.pem")


def _fmt(fps: float | None) -> str:
    if fps is None:
        return "n/a"
    return f"{fps:>9,.0f} f/s {fps * PAYLOAD * 8 / 1e6:>7,.0f} Mbit/s"


def _ratio(a: float, b: float | None) -> str:
    return f"{a / b:.2f}" if b else "n/a"


async def run(args: argparse.Namespace) -> None:
    asyncio.get_running_loop().set_exception_handler(_quiet)
    logging.getLogger("asyncio").setLevel(logging.ERROR)  # "socket.send() raised exception" after aborts
    tmp = Path(tempfile.mkdtemp(prefix="derp-bench-"))
    cert, key = _self_signed(tmp)
    client_ctx = ssl.create_default_context(cafile=cert)
    rows: list[tuple[str, int, float, float | None, float | None]] = []
    started = time.perf_counter()
    for tls in (False, True):
        ctx = client_ctx if tls else None
        for pairs in (1, args.pairs):
            results: dict[str, float | None] = {"derp": 0.0, "baseline": 0.0, "socat": None}
            # alternate the contenders and keep each one's best run: other load on the host hits them alike
            for _ in range(args.repeat):
                for kind in ("derp", "baseline"):
                    proc = spawn(kind, (cert, key) if tls else None)
                    try:
                        fps = await throughput(kind, [proc.port] * pairs, ctx, args.duration, args.window)
                    finally:
                        proc.stop()
                    results[kind] = max(results[kind] or 0.0, fps)
                if not tls:
                    fps_socat = await socat_throughput(pairs, args.duration, args.window)
                    if fps_socat is not None:
                        results["socat"] = max(results["socat"] or 0.0, fps_socat)
            rows.append(("TLS" if tls else "plain", pairs, results["derp"] or 0.0, results["baseline"],
                         results["socat"]))
            print(f"  measured {'TLS' if tls else 'plain'} x{pairs}", file=sys.stderr, flush=True)

    one_pair_max = rows[0][2]
    rate = one_pair_max / 2
    lat: dict[str, tuple[float, float]] = {}
    light: dict[str, tuple[float, float]] = {}
    for kind in ("derp", "baseline"):
        proc = spawn(kind, None)
        try:
            lat[kind] = await latency(kind, proc.port, rate, args.duration)
            light[kind] = await latency(kind, proc.port, 1000, min(args.duration, 2.0))
        finally:
            proc.stop()

    proc = spawn("derp", None)
    try:
        st = await stall(proc.port, proc, args.stall)
    finally:
        proc.stop()

    print(f"\nDERP relay benchmark — {PAYLOAD}-byte packets, loopback, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}, loop: {_maybe_uvloop()}, best of {args.repeat} x {args.duration:g} s per point, "
          f"window {args.window or 'open loop'} frames/pair, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':6} {'pairs':>5}  {'meshctl DERP':>30}  {'asyncio forwarder':>30}  {'socat':>30}  "
          f"{'/fwd':>5} {'/socat':>6}")
    for mode, pairs, derp, base, socat in rows:
        print(f"{mode:6} {pairs:>5}  {_fmt(derp):>30}  {_fmt(base):>30}  {_fmt(socat):>30}  "
              f"{_ratio(derp, base):>5} {_ratio(derp, socat):>6}")
    print(f"\none-way latency at half the 1-pair maximum ({rate:,.0f} frames/s, plain):")
    for kind, (p50, p99) in lat.items():
        print(f"  {kind:9} p50 {p50:8.1f} µs   p99 {p99:8.1f} µs")
    print(f"  added by the relay over the forwarder at p99: {lat['derp'][1] - lat['baseline'][1]:.1f} µs")
    print("one-way latency at 1,000 frames/s (light load, plain):")
    for kind, (p50, p99) in light.items():
        print(f"  {kind:9} p50 {p50:8.1f} µs   p99 {p99:8.1f} µs")
    print(f"  added by the relay over the forwarder at p99: {light['derp'][1] - light['baseline'][1]:.1f} µs")
    print(f"\nstalled receiver for {args.stall:g} s (its sender keeps sending; a second pair keeps running):")
    print(f"  relay RSS before {st['rss_before']} KiB, max during {st['rss_max']} KiB, "
          f"after {st['rss_after']} KiB")
    print(f"  healthy pair: {st['ok_before']:,.0f} f/s before, {st['ok_during']:,.0f} f/s during the stall "
          "(the stalled pair's sender keeps blasting, so the relay's CPU is shared; nothing blocks)")
    for name, value in sorted(st["metrics"].items()):  # type: ignore[attr-defined]
        print(f"  {name} {value:,.0f}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    goal = rows[1][2] / rows[1][3] if rows[1][3] else 0
    print(f"goal: >= 0.70 of the asyncio forwarder ({args.pairs} pairs, plain): {goal:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=1.5, help="seconds measured per run of a point [1.5]")
    ap.add_argument("--repeat", type=int, default=2, help="runs per point, best kept [2]")
    ap.add_argument("--pairs", type=int, default=50, help="the many-pairs point [50]")
    ap.add_argument("--window", type=int, default=512,
                    help="frames in flight per pair (closed loop); 0 = blast open loop [512]")
    ap.add_argument("--stall", type=float, default=10.0, help="seconds the stalled receiver stalls [10]")
    ap.add_argument("--_serve", choices=["derp", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--_cert", help=argparse.SUPPRESS)
    ap.add_argument("--_key", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._serve:
        _maybe_uvloop()
        logging.getLogger("asyncio").setLevel(logging.ERROR)  # teardown of aborted TLS clients is noisy
        serve: Callable[[int, str | None, str | None], object] = _serve_derp if args._serve == "derp" \
            else _serve_baseline
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(0, args._cert, args._key))  # type: ignore[arg-type]
        return
    _maybe_uvloop()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
