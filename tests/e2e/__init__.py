"""End-to-end tier: lab hosts over SSH with real systemd, sshd and WireGuard."""
