"""The WireGuard peer configuration the agent wants, and the `wg set` changes that get there (pure).

The desired state is computed from the netmap (peer node keys and allowed IPs) plus the endpoint the
path selector chose for each peer (its direct address, or the agent's local relay socket). Changes
are applied as diffs: a peer change never recreates the interface, and an unchanged peer produces
no command at all, so live WireGuard sessions are left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..keys import NodePublicKey

__all__ = [
    "KEEPALIVE_SECONDS",
    "PeerChange",
    "RemovePeer",
    "SetPeer",
    "WgPeer",
    "apply_changes",
    "diff_peers",
    "reconcile_view",
    "set_args",
]

#: relayed and NATed peers need traffic more often than a NAT forgets a UDP mapping (~30 s)
KEEPALIVE_SECONDS = 25


@dataclass(frozen=True)
class WgPeer:
    """One `[Peer]`: public key, allowed IPs (CIDR text, sorted), endpoint (`ip:port` or None), keepalive."""

    public_key: NodePublicKey
    allowed_ips: tuple[str, ...]
    endpoint: str | None = None
    keepalive: int = KEEPALIVE_SECONDS

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_ips", tuple(sorted(set(self.allowed_ips))))


@dataclass(frozen=True)
class RemovePeer:
    public_key: NodePublicKey


@dataclass(frozen=True)
class SetPeer:
    """Set only the named fields of one peer (None: leave as is). A new peer gets every field."""

    public_key: NodePublicKey
    allowed_ips: tuple[str, ...] | None = None
    endpoint: str | None = None
    keepalive: int | None = None


PeerChange = RemovePeer | SetPeer


def diff_peers(current: Mapping[NodePublicKey, WgPeer], desired: Iterable[WgPeer]) -> list[PeerChange]:
    """The changes that turn `current` into `desired`: removals first (so a re-keyed peer's allowed IPs
    are free before its new key claims them), then additions and field updates, in key order."""
    want = {p.public_key: p for p in desired}
    changes: list[PeerChange] = [RemovePeer(k) for k in sorted(current, key=_order) if k not in want]
    for key in sorted(want, key=_order):
        new, old = want[key], current.get(key)
        if old is None:
            changes.append(SetPeer(key, new.allowed_ips, new.endpoint, new.keepalive))
            continue
        change = SetPeer(
            key,
            new.allowed_ips if new.allowed_ips != old.allowed_ips else None,
            new.endpoint if new.endpoint != old.endpoint and new.endpoint is not None else None,
            new.keepalive if new.keepalive != old.keepalive else None,
        )
        if (change.allowed_ips, change.endpoint, change.keepalive) != (None, None, None):
            changes.append(change)
    return changes


def apply_changes(
    current: Mapping[NodePublicKey, WgPeer], changes: Iterable[PeerChange]
) -> dict[NodePublicKey, WgPeer]:
    """What WireGuard holds after `changes` (the shell keeps this as its view of the interface)."""
    out = dict(current)
    for ch in changes:
        if isinstance(ch, RemovePeer):
            out.pop(ch.public_key, None)
            continue
        old = out.get(ch.public_key)
        out[ch.public_key] = WgPeer(
            ch.public_key,
            ch.allowed_ips if ch.allowed_ips is not None else (old.allowed_ips if old else ()),
            ch.endpoint if ch.endpoint is not None else (old.endpoint if old else None),
            ch.keepalive if ch.keepalive is not None else (old.keepalive if old else 0),
        )
    return out


def reconcile_view(
    mine: Mapping[NodePublicKey, WgPeer], actual: Mapping[NodePublicKey, WgPeer], relay_prefix: str = "127.0.0.1:"
) -> dict[NodePublicKey, WgPeer]:
    """Our view of the interface re-read from WireGuard (`actual`), so that the next diff puts right a peer
    or allowed IP changed behind our back.

    Endpoints are special: WireGuard roams to wherever authenticated packets come from, which keeps
    traffic flowing behind a NAT that maps each destination anew, so a roamed endpoint is left alone (the
    view keeps the endpoint we set, and nothing is re-set). Except a roam onto our relay socket while we
    set a direct endpoint: two peers that both roamed so would relay to each other for ever, so the view
    takes WireGuard's endpoint and the diff sets the direct one again.
    """
    out: dict[NodePublicKey, WgPeer] = {}
    for key, now in actual.items():
        ep = mine[key].endpoint if key in mine else now.endpoint
        if ep and now.endpoint and now.endpoint.startswith(relay_prefix) and not ep.startswith(relay_prefix):
            ep = now.endpoint
        out[key] = WgPeer(key, now.allowed_ips, ep, now.keepalive)
    return out


def set_args(changes: Iterable[PeerChange]) -> list[str]:
    """The arguments after `wg set IFACE` for a batch of changes (one `wg set` call applies them all)."""
    args: list[str] = []
    for ch in changes:
        args += ["peer", ch.public_key.to_wireguard_base64()]
        if isinstance(ch, RemovePeer):
            args.append("remove")
            continue
        if ch.endpoint is not None:
            args += ["endpoint", ch.endpoint]
        if ch.keepalive is not None:
            args += ["persistent-keepalive", str(ch.keepalive) if ch.keepalive else "off"]
        if ch.allowed_ips is not None:
            args += ["allowed-ips", ",".join(ch.allowed_ips)]
    return args


def _order(key: NodePublicKey) -> bytes:
    return key.raw
