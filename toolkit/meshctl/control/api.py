"""Admin REST API under /api/v1 (Bearer API key, stored hashed): users, nodes, auth keys, API keys.

Every error is `{"error": "<one line>", "code": "<machine code>"}` with a 4xx status; a missing or
wrong API key is 401. Secrets (new auth/API keys) appear once, in the create response's `key`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from ..errors import ConfigError
from ..workspace import parse_duration
from .records import ApiKeyRecord, AuthKeyRecord
from .service import ControlService, ServiceError

__all__ = ["auth_key_view", "router"]


def _service(request: Request) -> ControlService:
    service: ControlService = request.app.state.service
    return service


def require_api_key(request: Request) -> ControlService:
    """Dependency: the request must carry `Authorization: Bearer <valid API key>`."""
    service = _service(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ServiceError(401, "unauthorized", "missing API key (want Authorization: Bearer mskey-api-…)")
    if service.store.check_api_key(token.strip(), service.clock()) is None:
        raise ServiceError(401, "unauthorized", "API key is unknown, expired or malformed")
    return service


Svc = Annotated[ControlService, Depends(require_api_key)]
router = APIRouter(prefix="/api/v1", tags=["admin"])


def _t(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(value: str | int | None, what: str) -> float | None:
    if value is None:
        return None
    try:
        return float(parse_duration(value, what))
    except ConfigError as err:
        raise ServiceError(400, "bad_expiry", str(err)) from None


def auth_key_view(rec: AuthKeyRecord, users: dict[int, str]) -> dict[str, Any]:
    return {"id": rec.id, "user": users.get(rec.user_id, ""), "reusable": rec.reusable, "ephemeral": rec.ephemeral,
            "tags": list(rec.tags), "expiresAt": _t(rec.expires_at), "used": rec.used, "revoked": rec.revoked,
            "createdAt": _t(rec.created_at)}


def api_key_view(rec: ApiKeyRecord) -> dict[str, Any]:
    return {"id": rec.id, "expiresAt": _t(rec.expires_at), "revoked": rec.revoked, "createdAt": _t(rec.created_at)}


class UserCreate(BaseModel):
    name: str


class NodeRename(BaseModel):
    name: str


class NodeTags(BaseModel):
    tags: list[str]


class NodeApprove(BaseModel):
    user: str | None = None


class NodeKeyExpiry(BaseModel):
    disabled: bool


class AuthKeyCreate(BaseModel):
    user: str | None = None
    reusable: bool = False
    ephemeral: bool = False
    tags: list[str] = Field(default_factory=list)
    expiry: str | int = "1h"


class ApiKeyCreate(BaseModel):
    expiry: str | int | None = "90d"


# --- users ---------------------------------------------------------------------------------------
@router.get("/users")
async def list_users(svc: Svc) -> list[dict[str, Any]]:
    return [{"id": u.id, "name": u.name, "createdAt": _t(u.created_at)} for u in svc.store.list_users()]


@router.post("/users", status_code=201)
async def create_user(body: UserCreate, svc: Svc) -> dict[str, Any]:
    u = svc.create_user(body.name)
    return {"id": u.id, "name": u.name, "createdAt": _t(u.created_at)}


@router.delete("/users/{name}")
async def delete_user(name: str, svc: Svc) -> dict[str, Any]:
    svc.delete_user(name)
    return {"deleted": name}


# --- nodes ---------------------------------------------------------------------------------------
@router.get("/nodes")
async def list_nodes(svc: Svc) -> list[dict[str, Any]]:
    return [svc.node_view(n) for n in sorted(svc.registry.nodes.values(), key=lambda n: n.id)]


@router.get("/nodes/{node_id}")
async def show_node(node_id: int, svc: Svc) -> dict[str, Any]:
    return svc.node_view(svc.node(node_id))


@router.post("/nodes/{node_id}/rename")
async def rename_node(node_id: int, body: NodeRename, svc: Svc) -> dict[str, Any]:
    return svc.node_view(svc.rename_node(node_id, body.name))


@router.post("/nodes/{node_id}/tags")
async def tag_node(node_id: int, body: NodeTags, svc: Svc) -> dict[str, Any]:
    return svc.node_view(svc.tag_node(node_id, body.tags))


@router.post("/nodes/{node_id}/expire")
async def expire_node(node_id: int, svc: Svc) -> dict[str, Any]:
    return svc.node_view(svc.expire_node(node_id))


@router.post("/nodes/{node_id}/key-expiry")
async def node_key_expiry(node_id: int, body: NodeKeyExpiry, svc: Svc) -> dict[str, Any]:
    return svc.node_view(svc.set_key_expiry(node_id, body.disabled))


@router.post("/nodes/{node_id}/approve")
async def approve_node(node_id: int, body: NodeApprove, svc: Svc) -> dict[str, Any]:
    return svc.node_view(svc.approve_node(node_id, body.user))


@router.delete("/nodes/{node_id}")
async def delete_node(node_id: int, svc: Svc) -> dict[str, Any]:
    svc.delete_node(node_id)
    return {"deleted": node_id}


# --- auth keys -----------------------------------------------------------------------------------
@router.get("/authkeys")
async def list_auth_keys(svc: Svc) -> list[dict[str, Any]]:
    users = {u.id: u.name for u in svc.store.list_users()}
    return [auth_key_view(k, users) for k in svc.store.list_auth_keys()]


@router.post("/authkeys", status_code=201)
async def create_auth_key(body: AuthKeyCreate, svc: Svc) -> dict[str, Any]:
    expiry = _seconds(body.expiry, "expiry") or 0.0
    rec, text = svc.create_auth_key(user=body.user, reusable=body.reusable, ephemeral=body.ephemeral, tags=body.tags,
                                    expiry=expiry)
    users = {u.id: u.name for u in svc.store.list_users()}
    return {"key": text, **auth_key_view(rec, users)}


@router.post("/authkeys/{key_id}/expire")
async def expire_auth_key(key_id: str, svc: Svc) -> dict[str, Any]:
    if not svc.store.expire_auth_key(key_id, svc.clock()):
        raise ServiceError(404, "not_found", f"no auth key with id {key_id}")
    rec = svc.store.auth_key(key_id)
    assert rec is not None
    return auth_key_view(rec, {u.id: u.name for u in svc.store.list_users()})


# --- API keys ------------------------------------------------------------------------------------
@router.get("/apikeys")
async def list_api_keys(svc: Svc) -> list[dict[str, Any]]:
    return [api_key_view(k) for k in svc.store.list_api_keys()]


@router.post("/apikeys", status_code=201)
async def create_api_key(body: ApiKeyCreate, svc: Svc) -> dict[str, Any]:
    rec, text = svc.create_api_key(_seconds(body.expiry, "expiry"))
    return {"key": text, **api_key_view(rec)}


@router.post("/apikeys/{key_id}/expire")
async def expire_api_key(key_id: str, svc: Svc) -> dict[str, Any]:
    if not svc.store.expire_api_key(key_id, svc.clock()):
        raise ServiceError(404, "not_found", f"no API key with id {key_id}")
    return {"id": key_id, "revoked": True}
