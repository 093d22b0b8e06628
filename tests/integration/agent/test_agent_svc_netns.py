"""Network namespaces for the agent-services integration tests: made by the test, removed even when it fails.

Code runs "inside" a namespace on a thread that joined it with setns(2): sockets created there stay in
that namespace, so a resolver, a stub upstream or a TCP listener can live in a namespace while the
test drives them from its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_counter = itertools.count()

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces")


def unique(prefix: str) -> str:
    """A name unique to this process and call, short enough for an interface (15 chars)."""
    return f"{prefix}{os.getpid() % 100000}{next(_counter)}"[:15]


def sh(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=30, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done


def _enter(name: str) -> None:
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in(name: str, fn: Callable[[], T]) -> T:
    """Call fn on a fresh thread inside namespace `name` and return its result (or raise its error)."""
    result: Future[T] = Future()

    def target() -> None:
        try:
            _enter(name)
            result.set_result(fn())
        except BaseException as err:
            result.set_exception(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)
    return result.result(0)


class LoopInNetns:
    """An asyncio loop running on a thread inside a namespace; submit coroutines from the test thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        started: Future[None] = Future()

        def target() -> None:
            try:
                _enter(name)
            except BaseException as err:
                started.set_exception(err)
                return
            started.set_result(None)
            self.loop.run_forever()

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        started.result(10)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def make_netns() -> Iterator[str]:
    name = unique("msvc")
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


# -- throwaway systemd containers ------------------------------------------------------------------


@contextlib.contextmanager
def overlay_rootfs() -> Iterator[Path]:
    """A writable overlay of the lab's cached Debian rootfs (skips when there is none); yields a work dir
    holding `merged` (the root) and `out` (bind it to /out to get results back)."""
    from meshctl.lab.rootfs import CACHE_DIR, cached_rootfs

    # the current recipe's rootfs, else any complete one (a new recipe may be building right now)
    complete = sorted(CACHE_DIR.glob("rootfs-*/.meshctl-rootfs"), key=lambda p: p.stat().st_mtime)
    lower = cached_rootfs() or (complete[-1].parent if complete else None)
    if lower is None:
        pytest.skip("no cached lab rootfs (built by `meshctl lab up`); nothing to boot")
    if shutil.which("systemd-nspawn") is None:
        pytest.skip("systemd-nspawn is not installed")
    work = Path(tempfile.mkdtemp(prefix="msvc-boot-"))
    for sub in ("upper", "work", "merged", "out"):
        (work / sub).mkdir()
    sh("mount", "-t", "overlay", "overlay", "-o",
       f"lowerdir={lower},upperdir={work / 'upper'},workdir={work / 'work'}", str(work / "merged"))
    try:
        yield work
    finally:
        sh("umount", str(work / "merged"), check=False)
        shutil.rmtree(work, ignore_errors=True)


def enable_unit(root: Path, name: str, text: str | None = None, target: str = "multi-user.target") -> None:
    """Write /etc/systemd/system/NAME (when text is given) and enable it for `target`."""
    units = root / "etc/systemd/system"
    if text is not None:
        (units / name).write_text(text)
    wants = units / f"{target}.wants"
    wants.mkdir(exist_ok=True)
    source = f"/etc/systemd/system/{name}" if text is not None else f"/usr/lib/systemd/system/{name}"
    (wants / name).symlink_to(source)


def boot(work: Path, *extra: str, timeout: float = 120) -> None:
    """Boot the overlay with systemd until something in it powers off; /out is `work/out`. On timeout the
    container is asked to stop (SIGTERM to nspawn powers it off), killed only if it will not."""
    with open(work / "console.log", "wb") as console:
        nspawn = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit",
             f"--directory={work / 'merged'}", f"--machine={unique('msvcboot')}", "--private-network",
             "--capability=CAP_NET_ADMIN,CAP_NET_RAW", "--bind=/dev/net/tun", f"--bind={work / 'out'}:/out",
             "--link-journal=no", "--resolv-conf=off", "--timezone=off", "--console=pipe", *extra],
            stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
        )
        try:
            nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            nspawn.terminate()
            try:
                nspawn.wait(30)
            except subprocess.TimeoutExpired:
                nspawn.kill()
                nspawn.wait(10)
            raise AssertionError(f"the container did not power off within {timeout:.0f} s: "
                                 f"{(work / 'console.log').read_text(errors='replace')[-2000:]}") from None
