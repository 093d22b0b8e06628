"""The coordination server (control plane) and its node-side protocol client.

Node side (agents, benchmarks): `meshctl.control.client` (ControlClient, RegisterResult),
`meshctl.control.netmap` (NetMapState, NetMap), `meshctl.control.errors`.
Server side: `meshctl.control.app.create_app`, `meshctl.control.server.serve`, the store in
`meshctl.control.store`. This package import is kept light: import the submodule you need.
"""

from __future__ import annotations
