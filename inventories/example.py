"""An example fleet for `meshctl deploy -i inventories/example.py` (a pyinfra Python inventory).

Groups meshctl reads:
    control   exactly one host: the coordination server (HTTP 8080)
    derp      DERP relays + STUN (optional; without them, pairs that cannot reach each other directly fail)
    nodes     hosts that join the mesh (run the node agent)
Other module-level lists are plain pyinfra groups (handy for group data); names starting with "_" are ignored.
A host may be in several groups (e.g. the control host can also be a node).

Host/group data meshctl reads (anything else is refused before connecting, with the nearest known key):
    ssh_hostname, ssh_port, ssh_user ... the pyinfra SSH connector's keys. Default user root; default key the
                     workspace deploy key (<workspace>/secrets/deploy_ed25519), rotated by `meshctl rotate`.
    public_address   the address other hosts reach this host at (DERP map, control URL when derived)
    derp_region      DERP region id 900-999 of a DERP host; the region's code/name come from mesh.toml
    derp_port, stun_port, derp_tls_cert, derp_tls_key, derp_verify_fail_open   (role derp)
    tags             ACL tags of a node, baked into its one-off auth key, e.g. ["tag:web"]
    wg_interface, wg_port, wg_backend   (role node: mesh0, 41641, auto|kernel|userspace)
    control_url      on the control host: overrides [control] url of mesh.toml
    control_listen, control_db          (role control)
    _sudo            True when ssh_user is not root
Mesh-wide settings (domain, prefixes, DERP regions, control URL) live in the workspace's mesh.toml, and secrets
never go in an inventory.
"""

from __future__ import annotations

control = [
    ("ctl-1", {"ssh_hostname": "203.0.113.10", "public_address": "203.0.113.10"}),
]

derp = (
    [
        ("derp-fra-1", {"ssh_hostname": "203.0.113.21", "public_address": "203.0.113.21"}),
        # a second server in the same region: the two mesh with the region's key from the workspace secrets
        ("derp-fra-2", {"ssh_hostname": "203.0.113.22", "public_address": "203.0.113.22"}),
        ("derp-nyc-1", {"ssh_hostname": "198.51.100.21", "public_address": "198.51.100.21", "derp_region": 901}),
    ],
    {"derp_region": 900},  # group data: the default region; host data above overrides it
)

nodes = [
    ("web-1", {"ssh_hostname": "192.0.2.31", "tags": ["tag:web"]}),
    ("web-2", {"ssh_hostname": "192.0.2.32", "tags": ["tag:web"]}),
    ("db-1", {"ssh_hostname": "192.0.2.41", "tags": ["tag:db"], "ssh_user": "admin", "_sudo": True}),
    ("laptop-ops", {"ssh_hostname": "198.18.0.7", "ssh_port": 2222}),  # behind a home NAT: fine, DERP covers it
]

# a plain pyinfra group, used only for its data
office = (["laptop-ops"], {"wg_backend": "userspace"})
