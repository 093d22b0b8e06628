"""The `meshctl` command line: one module per command group, each thin (parse, call, render)."""

from __future__ import annotations

from .app import app, main

__all__ = ["app", "main"]
