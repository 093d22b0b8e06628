"""Defaults of the `ssh` role (inventory data overrides them; the workspace's [rotation] wins when passed)."""

from __future__ import annotations

DEFAULTS: dict[str, object] = {
    "rotate_on_calendar": "hourly",       # how often meshctl-rotate.timer checks what is due (cheap when nothing is)
    "rotate_randomized_delay": "5min",    # spread the fleet's runs
    "rotate_first_run": "1min",           # first check this long after the timer starts (a fresh node's host cert)
}
