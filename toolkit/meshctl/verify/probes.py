"""Host-side probes that `meshctl verify` runs over SSH with the host's own meshctl:

    /opt/meshctl/bin/python -m meshctl.verify.probes authkey-reuse      (on the control host)
    /opt/meshctl/bin/python -m meshctl.verify.probes derp-unknown URL   (on a DERP host)
    /opt/meshctl/bin/python -m meshctl.verify.probes stun HOST PORT     (on a node)

Each prints one line saying what it found and exits 0 when the mesh behaved as it must, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tomllib
from pathlib import Path

from ..control.client import ControlClient, RegistrationError
from ..derp.client import DerpClient
from ..derp.errors import AdmissionDeniedError, DerpClosedError, DerpError
from ..keys import ControlPublicKey, MachinePrivateKey, NodePrivateKey
from ..stun.client import probe_blocking
from ..stun.errors import StunError
from ..wire import HostInfo

__all__ = ["authkey_reuse", "derp_unknown", "main", "stun"]

CONTROL_STATE = Path("/var/lib/meshctl/control")
CONTROL_CONF = Path("/etc/meshctl/control.toml")
MESHCTL = str(Path(sys.executable).parent / "meshctl")


def _control_url() -> str:
    listen = str(tomllib.loads(CONTROL_CONF.read_text()).get("listen", "0.0.0.0:8080"))
    return f"http://127.0.0.1:{listen.rsplit(':', 1)[1]}"


async def authkey_reuse(state_dir: Path = CONTROL_STATE, url: str | None = None) -> tuple[bool, str]:
    """Mint an ephemeral one-off key, register one throwaway machine with it, then try a second machine."""
    out = subprocess.run([MESHCTL, "control", "authkey", "--state-dir", str(state_dir), "--ephemeral",
                          "--expiry", "10m", "--json"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return False, f"cannot mint an auth key on this host: {out.stderr.strip()}"
    key = str(json.loads(out.stdout)["key"])
    control_key = ControlPublicKey.from_text((state_dir / "control.pub").read_text().strip())
    url = url or _control_url()
    results = []
    for n in (1, 2):
        client = ControlClient(url, control_key, MachinePrivateKey.generate())
        try:
            res = await client.register(NodePrivateKey.generate(), auth_key=key,
                                        hostinfo=HostInfo(hostname=f"verify-probe-{n}"))
            results.append(("registered" if res.machine_authorized else "pending", ""))
        except RegistrationError as e:
            results.append(("refused", str(e)))
        finally:
            await client.aclose()
    if results[0][0] != "registered":
        return False, f"first use of a fresh one-off key was {results[0][0]}: {results[0][1]}"
    if results[1][0] != "refused":
        return False, f"second use of a one-off key was {results[1][0]}, want refused"
    return True, f"first use registered, second use refused ({results[1][1]})"


async def derp_unknown(url: str) -> tuple[bool, str]:
    """Connect with a key the control server has never seen: the DERP server must refuse it."""
    client = DerpClient(url, NodePrivateKey.generate())
    try:
        await asyncio.wait_for(client.connect(), 10)
        # admitted so far; a refusing server may also close right after the handshake
        try:
            await asyncio.wait_for(client.ping(timeout=3), 5)
        except (AdmissionDeniedError, DerpClosedError) as e:
            return True, f"unregistered key closed after the handshake ({type(e).__name__})"
        return False, "an unregistered node key was admitted and answered pings, want refused"
    except AdmissionDeniedError as e:
        return True, f"handshake done, unregistered key refused ({e})"
    except (DerpError, OSError) as e:  # could not even talk DERP: that is not a refusal
        return False, f"DERP at {url} did not complete a handshake: {e}"
    except TimeoutError:
        return False, f"no answer from {url} within 10s"
    finally:
        await client.close()


def stun(host: str, port: int) -> tuple[bool, str]:
    """A STUN binding request from this host must be answered with our reflexive address."""
    try:
        ip, mapped = probe_blocking(host, port, timeout=3.0)
    except (StunError, OSError) as e:
        return False, f"no STUN answer from {host}:{port}: {e}"
    return True, f"STUN {host}:{port} sees us as {ip}:{mapped}"


def main(argv: list[str]) -> int:
    if argv[:1] == ["authkey-reuse"]:
        ok, msg = asyncio.run(authkey_reuse())
    elif argv[:1] == ["derp-unknown"] and len(argv) == 2:
        ok, msg = asyncio.run(derp_unknown(argv[1]))
    elif argv[:1] == ["stun"] and len(argv) == 3:
        ok, msg = stun(argv[1], int(argv[2]))
    else:
        print("usage: python -m meshctl.verify.probes {authkey-reuse | derp-unknown URL | stun HOST PORT}",
              file=sys.stderr)
        return 2
    print(msg)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
