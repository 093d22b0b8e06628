"""Rendering role templates with jinja2 (StrictUndefined), outside pyinfra so that templates are unit-testable.

Roles upload the rendered text with `files.put(StringIO(text))`, whose SHA1 comparison keeps a re-run a no-op.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jinja2

__all__ = ["render", "toml_value"]


def toml_value(value: Any) -> str:
    """A Python value as a TOML literal (strings, bools, ints, lists of those)."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()  # StrictUndefined: name the missing variable
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value")


@functools.cache
def _environment(directory: str) -> jinja2.Environment:
    env = jinja2.Environment(  # noqa: S701 - renders config files, not HTML
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["toml"] = toml_value
    return env


def render(directory: Path | str, name: str, **context: Any) -> str:
    """Render `directory/name`; a missing variable raises `jinja2.UndefinedError` instead of rendering blank."""
    return _environment(str(directory)).get_template(name).render(**context)
