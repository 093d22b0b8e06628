"""Defaults of the `node` role (inventory data overrides them)."""

from __future__ import annotations

DEFAULTS = {
    "wg_interface": "mesh0",
    "wg_port": 41641,
    "wg_backend": "auto",       # kernel WireGuard where present, else wireguard-go
}
