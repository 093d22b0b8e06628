"""Relay counters and their Prometheus rendering.

The hot path bumps plain integers on `RelayStats` (a prometheus Counter per packet would cost a lock);
`render_metrics` turns a snapshot into the Prometheus text format at scrape time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["DROP_REASONS", "RelayStats", "render_metrics"]

#: derper's drop reasons, plus meshctl's own for refused connections and frames
DROP_REASONS = ("unknown_dest", "unknown_dest_on_fwd", "gone_disconnected", "queue_head", "queue_tail",
                "write_error", "dup_client")


@dataclass(slots=True)
class RelayStats:
    packets_forwarded: int = 0
    bytes_forwarded: int = 0
    packets_mesh_forwarded: int = 0
    accepts: int = 0
    clients_current: int = 0
    clients_mesh: int = 0
    clients_preferred: int = 0
    pending_current: int = 0
    pings: int = 0
    note_preferred: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # connections closed before/at admission, by reason
    stun_answered: int = 0
    stun_dropped: Counter[str] = field(default_factory=Counter)


class _StatsCollector(Collector):
    def __init__(self, stats: RelayStats) -> None:
        self._s = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self._s
        yield GaugeMetricFamily("derp_clients", "DERP clients connected now (admitted)", value=s.clients_current)
        yield GaugeMetricFamily("derp_clients_mesh", "Mesh peers connected now", value=s.clients_mesh)
        yield GaugeMetricFamily("derp_clients_preferred", "Clients that say this is their home DERP",
                                value=s.clients_preferred)
        yield GaugeMetricFamily("derp_connections_pending", "Connections not yet through the handshake",
                                value=s.pending_current)
        yield CounterMetricFamily("derp_accepts", "TCP connections accepted", value=s.accepts)
        yield CounterMetricFamily("derp_packets_forwarded", "Packets relayed to a client or mesh peer",
                                  value=s.packets_forwarded)
        yield CounterMetricFamily("derp_bytes_forwarded", "Payload bytes relayed", value=s.bytes_forwarded)
        yield CounterMetricFamily("derp_packets_mesh_forwarded", "Packets sent on through a mesh peer",
                                  value=s.packets_mesh_forwarded)
        yield CounterMetricFamily("derp_pings", "Ping frames answered", value=s.pings)
        yield CounterMetricFamily("derp_note_preferred", "NotePreferred frames received", value=s.note_preferred)
        drops = CounterMetricFamily("derp_packets_dropped", "Packets dropped, by reason", labels=["reason"])
        for reason in sorted(set(DROP_REASONS) | set(s.drops)):
            drops.add_metric([reason], s.drops.get(reason, 0))
        yield drops
        refused = CounterMetricFamily("derp_connections_refused", "Connections closed for cause", labels=["reason"])
        for reason in sorted(s.refused):
            refused.add_metric([reason], s.refused[reason])
        yield refused
        yield CounterMetricFamily("stun_answered", "STUN binding requests answered", value=s.stun_answered)
        sd = CounterMetricFamily("stun_dropped", "STUN datagrams dropped, by reason", labels=["reason"])
        for reason in sorted(s.stun_dropped):
            sd.add_metric([reason], s.stun_dropped[reason])
        yield sd


def render_metrics(stats: RelayStats) -> bytes:
    """Prometheus text exposition of the relay's counters."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(stats))
    return bytes(generate_latest(registry))
