"""meshctl: build a Tailscale-style WireGuard mesh VPN on hosts you own, and keep it healthy."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
