"""Prometheus metrics of one control server (a registry per app, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ControlMetrics"]


class ControlMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.nodes = Gauge("meshctl_control_nodes", "Registered nodes", registry=self.registry)
        self.online_streams = Gauge("meshctl_control_online_streams", "Open map streams", registry=self.registry)
        self.frames = Counter("meshctl_control_map_frames_sent_total", "Map frames sent", ["kind"],
                              registry=self.registry)
        self.build = Histogram("meshctl_control_map_build_seconds", "Time to build and seal one map frame", ["kind"],
                               registry=self.registry,
                               buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0))
        self.stream_pushes = Counter("meshctl_control_change_stream_pushes_total",
                                     "Stream queues touched by node changes", registry=self.registry)
        self.rejected = Counter("meshctl_control_rejected_requests_total", "Refused node or API requests",
                                ["code"], registry=self.registry)
