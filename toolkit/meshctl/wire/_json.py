"""Small JSON helpers shared by the wire types: typed field readers that raise WireFormatError.

Every `from_json` goes through these so that a malformed message names the field that was wrong
and what was expected, instead of surfacing a KeyError or TypeError from deep inside a parser.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from ..errors import RemoteProtocolError

__all__ = [
    "WireFormatError",
    "format_time",
    "get_bool",
    "get_int",
    "get_key",
    "get_obj",
    "get_opt_int",
    "get_opt_key",
    "get_opt_str",
    "get_opt_time",
    "get_str",
    "get_str_list",
    "parse_time",
    "require_mapping",
]

T = TypeVar("T")


class WireFormatError(RemoteProtocolError):
    """A wire message is not what the protocol says: a field is missing or has the wrong type."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def require_mapping(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise WireFormatError(f"{what}: want a JSON object, got {type(data).__name__}")
    return data


def _missing(d: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in d:
        raise WireFormatError(f"{what}: missing field {name!r}", field=name)
    return d[name]


def get_str(d: Mapping[str, Any], name: str, what: str, default: str | None = None) -> str:
    v = d.get(name, default) if default is not None else _missing(d, name, what)
    if not isinstance(v, str):
        raise WireFormatError(f"{what}: field {name!r} want a string, got {type(v).__name__}", field=name)
    return v


def get_opt_str(d: Mapping[str, Any], name: str, what: str) -> str | None:
    v = d.get(name)
    if v is None:
        return None
    if not isinstance(v, str):
        raise WireFormatError(f"{what}: field {name!r} want a string or null, got {type(v).__name__}", field=name)
    return v


def get_int(d: Mapping[str, Any], name: str, what: str, default: int | None = None) -> int:
    v = d.get(name, default) if default is not None else _missing(d, name, what)
    if isinstance(v, bool) or not isinstance(v, int):
        raise WireFormatError(f"{what}: field {name!r} want an integer, got {type(v).__name__}", field=name)
    return int(v)


def get_opt_int(d: Mapping[str, Any], name: str, what: str) -> int | None:
    v = d.get(name)
    if v is None:
        return None
    return get_int(d, name, what)


def get_bool(d: Mapping[str, Any], name: str, what: str, default: bool | None = None) -> bool:
    v = d.get(name, default) if default is not None else _missing(d, name, what)
    if not isinstance(v, bool):
        raise WireFormatError(f"{what}: field {name!r} want true/false, got {type(v).__name__}", field=name)
    return v


def get_str_list(d: Mapping[str, Any], name: str, what: str) -> tuple[str, ...]:
    v = d.get(name)
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise WireFormatError(f"{what}: field {name!r} want a list of strings", field=name)
    return tuple(v)


def get_key(d: Mapping[str, Any], name: str, what: str, parse: Callable[[str], T]) -> T:
    text = get_str(d, name, what)
    try:
        return parse(text)
    except ValueError as err:
        raise WireFormatError(f"{what}: field {name!r}: {err}", field=name) from None


def get_opt_key(d: Mapping[str, Any], name: str, what: str, parse: Callable[[str], T]) -> T | None:
    if d.get(name) in (None, ""):
        return None
    return get_key(d, name, what, parse)


def get_obj(d: Mapping[str, Any], name: str, what: str, parse: Callable[[Any], T]) -> T | None:
    v = d.get(name)
    if v is None:
        return None
    return parse(v)


def format_time(t: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, second precision (what Go's time.Time marshals for whole seconds)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, what: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise WireFormatError(f"{what}: want an RFC 3339 time, got {text[:40]!r}") from None
    if t.tzinfo is None:
        raise WireFormatError(f"{what}: time {text[:40]!r} has no time zone")
    return t.astimezone(UTC)


def get_opt_time(d: Mapping[str, Any], name: str, what: str) -> datetime | None:
    v = get_opt_str(d, name, what)
    return None if v is None else parse_time(v, f"{what}.{name}")
