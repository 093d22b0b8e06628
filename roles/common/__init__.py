"""Role `common` (see deploy.py)."""

from __future__ import annotations
