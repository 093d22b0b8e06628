"""Unit tests of meshctl.lab's pure parts (plan, mirror, state, rootfs key, router rules)."""
