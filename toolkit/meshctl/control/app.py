"""The control server's ASGI app: node protocol (/key, /machine/register, /machine/map), DERP admission,
/healthz, /metrics, and the admin API under /api/v1.

`create_app(config, store, control_key)` returns a FastAPI app. Extra routers are included when
their module exists and exposes `router` (see OPTIONAL_ROUTERS), so other parts (the SSH CA) plug
in without editing this file; such a router reaches the service as `request.app.state.service`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..keys import ControlPrivateKey
from .api import router as api_router
from .bodylimit import BodyLimitMiddleware
from .config import ControlConfig
from .errors import SealError
from .messages import KeyInfo
from .metrics import ControlMetrics
from .registry import MapSession
from .sealing import MACHINE_HEADER, MAX_REQUEST_BODY, OpenedRequest, RequestOpener, encode_frame, seal_json
from .service import ControlService, ServiceError
from .store import Store

__all__ = ["OPTIONAL_ROUTERS", "create_app"]

log = logging.getLogger("meshctl.control")

#: modules whose `router` is included when importable (owned by other parts of meshctl)
OPTIONAL_ROUTERS = ("meshctl.control.ssh_api",)

_SEAL_STATUS = {"missing_machine_header": 400, "bad_machine_header": 400, "body_too_large": 413, "bad_box": 401,
                "bad_json": 400, "bad_time": 400, "stale_time": 401, "replayed": 409}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status)


def _include_optional_routers(app: FastAPI) -> None:
    for name in OPTIONAL_ROUTERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        app.include_router(module.router)


def create_app(config: ControlConfig, store: Store, control_key: ControlPrivateKey, *,
               clock: Callable[[], float] = time.time) -> FastAPI:
    service = ControlService(config, store, control_key, clock=clock)
    opener = RequestOpener(control_key)
    metrics = ControlMetrics()
    service.on_change = metrics.stream_pushes.inc
    metrics.nodes.set_function(lambda: len(service.registry.nodes))
    metrics.online_streams.set_function(service.registry.stream_count)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async def housekeeping() -> None:
            while True:
                await asyncio.sleep(config.housekeeping_interval)
                try:
                    service.housekeeping()
                except Exception:  # keep the loop alive; the next round retries
                    log.exception("housekeeping failed")

        task = asyncio.create_task(housekeeping())
        try:
            yield
        finally:
            task.cancel()
            for sessions in list(service.registry.sessions.values()):
                for s in sessions:
                    s.close()

    app = FastAPI(title="meshctl control", version="1", lifespan=lifespan)
    app.state.service = service
    app.state.metrics = metrics
    app.add_middleware(BodyLimitMiddleware, limit=MAX_REQUEST_BODY)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        metrics.rejected.labels("bad_request").inc()
        return _error(400, "bad_request", f"invalid request: {where or 'body'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(ServiceError)
    async def _service_error(_request: Request, err: ServiceError) -> JSONResponse:
        metrics.rejected.labels(err.code).inc()
        return _error(err.status, err.code, str(err))

    async def open_request(request: Request) -> OpenedRequest:
        body = await request.body()
        try:
            return opener.open(request.headers.get(MACHINE_HEADER), body, clock())
        except SealError as err:
            raise ServiceError(_SEAL_STATUS.get(err.code, 400), err.code, str(err)) from None

    @app.get("/key")
    async def key() -> dict[str, Any]:
        return KeyInfo(service.control_public).to_json()

    @app.post("/machine/register")
    async def register(request: Request) -> Response:
        opened = await open_request(request)
        reply = service.register(opened)
        return Response(seal_json(opened.box, reply.to_json()), media_type="application/octet-stream")

    @app.post("/machine/map")
    async def machine_map(request: Request) -> Response:
        opened = await open_request(request)
        node, req = service.map_node(opened)
        if not req.stream:
            return Response(status_code=204)
        session = MapSession(node.id, opened.box)
        return StreamingResponse(_frames(session), media_type="application/octet-stream")

    def _encode(session: MapSession, frame: bytes, kind: str, started: float) -> bytes:
        data = encode_frame(seal_json(session.box, frame))
        metrics.frames.labels(kind).inc()
        metrics.build.labels(kind).observe(time.perf_counter() - started)
        return data

    async def _frames(session: MapSession) -> AsyncIterator[bytes]:
        last_delta = 0.0
        try:
            t = time.perf_counter()
            node = service.registry.nodes.get(session.node_id)
            if node is None:
                return
            yield _encode(session, service.open_stream(node, session), "full", t)
            while not session.closing or session.pending or session.self_changed:
                try:
                    async with asyncio.timeout(config.keepalive_interval):  # no extra task per wake-up
                        await session.wake.wait()
                except TimeoutError:
                    t = time.perf_counter()
                    yield _encode(session, service.mapper.keepalive_frame(session, clock()), "keepalive", t)
                    continue
                # At most one delta frame per stream per batch interval, and one per presence interval when
                # only online/last-seen changed: a burst (a reconnect storm's presence patches) coalesces into
                # few frames, while a lone change still goes out at once.
                while not session.closing:
                    spacing = config.map_batch_interval if session.urgent else config.presence_batch_interval
                    gap = last_delta + spacing - time.monotonic()
                    if gap <= 0:
                        break
                    session.wake.clear()
                    try:
                        async with asyncio.timeout(gap):  # an urgent change may end the wait early
                            await session.wake.wait()
                    except TimeoutError:
                        break
                session.wake.clear()
                if session.node_id not in service.registry.nodes:
                    return  # the node was deleted: end its stream (its next map request is refused)
                t = time.perf_counter()
                frame = service.mapper.delta_frame(session, clock())
                if frame is not None:
                    last_delta = time.monotonic()
                    yield _encode(session, frame, "delta", t)
        finally:
            service.close_stream(session)

    @app.post("/derp/verify")
    async def derp_verify(request: Request) -> JSONResponse:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not store.check_derp_token(token.strip()):
            metrics.rejected.labels("bad_derp_token").inc()
            return _error(401, "unauthorized", "missing or wrong DERP admission token")
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return _error(400, "bad_request", "body must be JSON {\"NodePublic\": \"nodekey:…\", \"Source\": \"ip\"}")
        node_key = body.get("NodePublic") if isinstance(body, dict) else None
        return JSONResponse({"Allow": service.derp_allows(node_key)})

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "nodes": len(service.registry.nodes), "streams": service.registry.stream_count()}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(api_router)
    _include_optional_routers(app)
    return app
