"""STUN (RFC 5389 binding) for meshctl: pure codec (`message`), UDP server and client shells.

Public API:
    build_request, parse_request, build_response, parse_response, is_stun, response_allowed,
    BindingRequest, BindingResponse                        (meshctl.stun.message, pure)
    StunServer, start_stun_server                          (meshctl.stun.server, asyncio UDP)
    probe, probe_blocking                                  (meshctl.stun.client)
    StunError, StunParseError, NotStunError, MalformedAttrsError, WrongFingerprintError, StunTimeoutError
"""

from __future__ import annotations

from .client import probe, probe_blocking
from .errors import (
    MalformedAttrsError,
    NotStunError,
    StunError,
    StunParseError,
    StunTimeoutError,
    WrongFingerprintError,
)
from .message import (
    BindingRequest,
    BindingResponse,
    build_request,
    build_response,
    is_stun,
    parse_request,
    parse_response,
    response_allowed,
)
from .server import StunServer, start_stun_server

__all__ = [
    "BindingRequest",
    "BindingResponse",
    "MalformedAttrsError",
    "NotStunError",
    "StunError",
    "StunParseError",
    "StunServer",
    "StunTimeoutError",
    "WrongFingerprintError",
    "build_request",
    "build_response",
    "is_stun",
    "parse_request",
    "parse_response",
    "probe",
    "probe_blocking",
    "response_allowed",
    "start_stun_server",
]
