"""The node agent (DESIGN §5): keys, registration, WireGuard, direct-or-relayed paths, DNS, filter, local API.

Pure cores: `disco` (message codec), `path` (per-peer path state machine), `wgconfig` (netmap →
WireGuard peers and `wg set` diffs). Shells: `wgbackend` (kernel or wireguard-go), `magicsock`
(disco socket, relay sockets, DERP), `session` (control link), `daemon` (wires it all together).
"""

from __future__ import annotations
