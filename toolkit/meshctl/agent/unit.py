"""The systemd unit of the node agent (`meshctl-agent.service`), as installed by the node role.

One source of truth for the unit text: the pyinfra node role writes `agent_unit_text()` to
`/etc/systemd/system/meshctl-agent.service`, and the docs quote it.
"""

from __future__ import annotations

__all__ = ["AGENT_UNIT_NAME", "agent_unit_text"]

AGENT_UNIT_NAME = "meshctl-agent.service"

_CAPS = "CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE"

_TEMPLATE = """\
[Unit]
Description=meshctl node agent (WireGuard mesh, MagicDNS, packet filter)
Documentation=https://github.com/meshctl/meshctl
Wants=network-online.target
After=network-online.target nss-lookup.target

[Service]
Type=simple
ExecStart={exec_path} agent run --config {config}
# After any stop, clean or not: put back a resolv.conf a crashed agent left pointing at MagicDNS.
ExecStopPost=-{python} -m meshctl.agent.resolvconf restore --config {config}
Restart=on-failure
RestartSec=2s
# Runs as root, with every capability except these three dropped: wireguard-go needs root to
# create /dev/net/tun devices and its control socket under /run/wireguard, nft has no
# capability-only mode for loading rulesets from a file, and MagicDNS binds port 53.
User=root
CapabilityBoundingSet={caps}
AmbientCapabilities={caps}
DeviceAllow=/dev/net/tun rw
DevicePolicy=closed
# /run/meshctl holds the local API socket; /run/wireguard wireguard-go's control sockets. Preserved on
# stop: /run/wireguard may be shared with wg-quick, and the agent removes its own socket itself.
RuntimeDirectory=meshctl wireguard
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes
StateDirectory=meshctl/agent
StateDirectoryMode=0700
ConfigurationDirectory=meshctl
ProtectSystem=strict
# Writable exceptions: the managed-resolv.conf mode rewrites this one file in place (hosts with
# systemd-resolved need no write); the one-off auth key in /etc/meshctl is deleted after registration.
ReadWritePaths=-/etc/resolv.conf -/etc/meshctl
ProtectHome=true
PrivateTmp=true
NoNewPrivileges=true
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectKernelLogs=true
ProtectControlGroups=true
ProtectClock=true
ProtectHostname=true
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
RestrictNamespaces=true
RestrictRealtime=true
RestrictSUIDSGID=true
LockPersonality=true
SystemCallArchitectures=native
UMask=0077
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


def agent_unit_text(exec_path: str = "/opt/meshctl/bin/meshctl", config: str = "/etc/meshctl/agent.toml") -> str:
    """The unit file text; `exec_path` is the meshctl CLI of the installed venv."""
    for value, what in ((exec_path, "exec_path"), (config, "config")):
        if not value.startswith("/") or any(c.isspace() for c in value):
            raise ValueError(f"{what} must be an absolute path without spaces, got {value!r}")
    python = exec_path.rsplit("/", 1)[0] + "/python"  # the venv's interpreter, beside its meshctl script
    return _TEMPLATE.format(exec_path=exec_path, config=config, caps=_CAPS, python=python)
