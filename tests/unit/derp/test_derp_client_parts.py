"""Pure parts of the client library and the relay's counters: URL parsing, certificate pins, metrics text."""

from __future__ import annotations

import pytest

from meshctl.derp.client import _parse_cert_pin, parse_derp_url
from meshctl.derp.errors import DerpConnectError
from meshctl.derp.metrics import RelayStats, render_metrics


@pytest.mark.parametrize(("url", "want"), [
    ("https://derp1.example.com/derp", (True, "derp1.example.com", 443, "/derp")),
    ("http://10.0.0.2:8443/derp", (False, "10.0.0.2", 8443, "/derp")),
    ("https://derp2.example.com", (True, "derp2.example.com", 443, "/derp")),
    ("http://[fd7a::1]:8080/derp", (False, "fd7a::1", 8080, "/derp")),
])
def test_parse_derp_url(url: str, want: tuple[bool, str, int, str]) -> None:
    assert parse_derp_url(url) == want


@pytest.mark.parametrize("url", ["ftp://x/derp", "derp1.example.com", "http://:80/derp", "http://h:99999/derp"])
def test_bad_derp_urls(url: str) -> None:
    with pytest.raises(DerpConnectError) as exc:
        parse_derp_url(url)
    assert str(exc.value).startswith(f"cannot connect to DERP server {url}: ")


def test_cert_pin() -> None:
    assert _parse_cert_pin("u", "") is None
    assert _parse_cert_pin("u", "derp1.example.com") is None
    assert _parse_cert_pin("u", "sha256-raw:" + "AB" * 32) == "ab" * 32
    with pytest.raises(DerpConnectError, match="want sha256-raw: followed by 64 hex characters"):
        _parse_cert_pin("u", "sha256-raw:abc")


def test_metrics_text() -> None:
    stats = RelayStats(packets_forwarded=7, bytes_forwarded=9800, clients_current=2)
    stats.drops["queue_head"] = 3
    stats.refused["handshake_timeout"] = 1
    stats.stun_dropped["WrongFingerprintError"] = 4
    text = render_metrics(stats).decode()
    for line in ("derp_clients 2.0", "derp_packets_forwarded_total 7.0", "derp_bytes_forwarded_total 9800.0",
                 'derp_packets_dropped_total{reason="queue_head"} 3.0',
                 'derp_packets_dropped_total{reason="unknown_dest"} 0.0',
                 'derp_connections_refused_total{reason="handshake_timeout"} 1.0',
                 'stun_dropped_total{reason="WrongFingerprintError"} 4.0'):
        assert line in text.splitlines()
