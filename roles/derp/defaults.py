"""Defaults of the `derp` role (inventory data overrides them)."""

from __future__ import annotations

DEFAULTS = {
    "derp_port": 8443,          # DERP over HTTP(S); plain HTTP unless derp_tls_cert is set
    "stun_port": 3478,          # STUN on UDP
    "derp_tls_cert": "",        # paths on the DERP host (certificates are managed outside meshctl)
    "derp_tls_key": "",
    "derp_verify_fail_open": False,   # admit clients when the control server cannot be asked
}
