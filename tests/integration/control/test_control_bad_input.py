"""Every bad input gets a clear error, changes nothing in the store, and the server keeps serving others."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from meshctl.control.client import RegistrationError
from meshctl.control.messages import RegisterRequest
from meshctl.control.records import NodeRecord
from meshctl.control.sealing import MACHINE_HEADER, seal_request
from meshctl.control.store import AuthKeyConsumedError, Store, StoreConflictError
from meshctl.keys import ControlPrivateKey, MachinePrivateKey, NodePrivateKey

from .conftest import RunningControl, admin_key, api, hostinfo, run

pytestmark = pytest.mark.integration


def snapshot(control: RunningControl) -> Any:
    s = control.store()
    try:
        return (
            [(n.id, n.node_key, n.machine_key, n.name, n.ipv4, n.authorized, n.key_expiry) for n in s.list_nodes()],
            [(k.id, k.used, k.revoked) for k in s.list_auth_keys()],
            [(k.id, k.revoked) for k in s.list_api_keys()],
            [u.name for u in s.list_users()],
        )
    finally:
        s.close()


class Env:
    def __init__(self, control: RunningControl) -> None:
        self.control = control
        self.api_key = admin_key(control)
        r = api(control, self.api_key, "POST", "/api/v1/authkeys", json={"reusable": True})
        self.reusable = r.json()["key"]
        # a bystander node that must keep working after every bad request
        self.machine = MachinePrivateKey.generate()
        self.node_key = NodePrivateKey.generate()
        res = run(control.client(self.machine).register(self.node_key, auth_key=self.reusable,
                                                        hostinfo=hostinfo("bystander")))
        assert res.node is not None
        self.node_id = res.node.id

    def still_serving(self) -> None:
        """The bystander re-registers and streams a full map; a newcomer registers."""
        async def go() -> None:
            c = self.control.client(self.machine)
            res = await c.register(self.node_key, hostinfo=hostinfo("bystander"))
            assert res.machine_authorized and res.node is not None and res.node.id == self.node_id
            from meshctl.wire import MapRequest
            async for frame in c.map_stream(MapRequest(node_key=self.node_key.public_key())):
                assert frame.is_full and frame.node is not None and frame.node.id == self.node_id
                break
        run(go())
        r = httpx.get(self.control.url + "/healthz", timeout=5)
        assert r.status_code == 200

    def one_off(self, **body: Any) -> str:
        r = api(self.control, self.api_key, "POST", "/api/v1/authkeys", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["key"])

    def post_sealed(self, payload: dict[str, Any], *, machine: MachinePrivateKey | None = None,
                    now: float | None = None, path: str = "/machine/register") -> httpx.Response:
        machine = machine or MachinePrivateKey.generate()
        headers, body = seal_request(machine, self.control.control_pub, payload,
                                     self.control.clock() if now is None else now)
        return httpx.post(self.control.url + path, headers=headers, content=body, timeout=10)


@pytest.fixture
def env(control: RunningControl) -> Iterator[Env]:
    yield Env(control)


def register_payload(node_key: NodePrivateKey | None = None, **kw: Any) -> dict[str, Any]:
    return RegisterRequest(node_key=(node_key or NodePrivateKey.generate()).public_key(), hostinfo=hostinfo("bad"),
                           **kw).to_json()


def assert_refused(r: httpx.Response, status: int, code: str, text: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code and text in body["error"], body


def test_missing_machine_header(env: Env) -> None:
    before = snapshot(env.control)
    _, body = seal_request(MachinePrivateKey.generate(), env.control.control_pub, register_payload(), time.time())
    r = httpx.post(env.control.url + "/machine/register", content=body, timeout=5)
    assert_refused(r, 400, "missing_machine_header", "missing Meshctl-Machine header")
    assert snapshot(env.control) == before
    env.still_serving()


@pytest.mark.parametrize("header", ["garbage", "nodekey:" + "00" * 32, "mkey:abcd"])
def test_malformed_machine_header(env: Env, header: str) -> None:
    before = snapshot(env.control)
    _, body = seal_request(MachinePrivateKey.generate(), env.control.control_pub, register_payload(), time.time())
    r = httpx.post(env.control.url + "/machine/register", content=body, headers={MACHINE_HEADER: header}, timeout=5)
    assert_refused(r, 400, "bad_machine_header", "bad Meshctl-Machine header")
    assert snapshot(env.control) == before
    env.still_serving()


def test_header_names_another_machine_than_the_sealer(env: Env) -> None:
    before = snapshot(env.control)
    _, body = seal_request(MachinePrivateKey.generate(), env.control.control_pub, register_payload(), time.time())
    other = MachinePrivateKey.generate().public_key().to_text()
    r = httpx.post(env.control.url + "/machine/register", content=body, headers={MACHINE_HEADER: other}, timeout=5)
    assert_refused(r, 401, "bad_box", "does not open")
    assert snapshot(env.control) == before
    env.still_serving()


def test_box_sealed_to_another_control_key(env: Env) -> None:
    before = snapshot(env.control)
    machine = MachinePrivateKey.generate()
    headers, body = seal_request(machine, ControlPrivateKey.generate().public_key(),
                                 register_payload(auth_key=env.reusable), time.time())
    r = httpx.post(env.control.url + "/machine/register", content=body, headers=headers, timeout=5)
    assert_refused(r, 401, "bad_box", "not sealed by this machine key to this control key")
    assert snapshot(env.control) == before
    env.still_serving()


def test_replayed_register_request(env: Env) -> None:
    machine = MachinePrivateKey.generate()
    headers, body = seal_request(machine, env.control.control_pub, register_payload(auth_key=env.one_off()),
                                 env.control.clock())
    first = httpx.post(env.control.url + "/machine/register", content=body, headers=headers, timeout=5)
    assert first.status_code == 200
    before = snapshot(env.control)
    again = httpx.post(env.control.url + "/machine/register", content=body, headers=headers, timeout=5)
    assert_refused(again, 409, "replayed", "already used (replayed request)")
    assert snapshot(env.control) == before
    env.still_serving()


@pytest.mark.parametrize("skew", [-300.0, 300.0])
def test_stale_timestamp(env: Env, skew: float) -> None:
    before = snapshot(env.control)
    r = env.post_sealed(register_payload(auth_key=env.reusable), now=env.control.clock() + skew)
    assert_refused(r, 401, "stale_time", "off the server clock (window ±120 s)")
    assert snapshot(env.control) == before
    env.still_serving()


def test_garbage_json_in_a_valid_box(env: Env) -> None:
    before = snapshot(env.control)
    machine = MachinePrivateKey.generate()
    body = machine.box(env.control.control_pub).seal(b"{not json at all")
    r = httpx.post(env.control.url + "/machine/register", content=body,
                   headers={MACHINE_HEADER: machine.public_key().to_text()}, timeout=5)
    assert_refused(r, 400, "bad_json", "not valid JSON")
    assert snapshot(env.control) == before
    env.still_serving()


def test_valid_json_missing_fields(env: Env) -> None:
    before = snapshot(env.control)
    r = env.post_sealed({"hostinfo": {"hostname": "x"}})
    assert_refused(r, 400, "bad_request", "missing field 'nodeKey'")
    r = env.post_sealed({"nodeKey": "nodekey:zz"}, path="/machine/map")
    assert_refused(r, 400, "bad_request", "nodeKey")
    assert snapshot(env.control) == before
    env.still_serving()


def test_unknown_auth_key(env: Env) -> None:
    before = snapshot(env.control)
    for key in ("mskey-auth-000000000000-" + "0" * 64, "not-a-key", env.one_off()[:-1] + "x"):
        r = env.post_sealed(register_payload(auth_key=key))
        assert_refused(r, 401, "invalid_auth_key", "auth key is unknown or malformed")
    assert [n[0] for n in snapshot(env.control)[0]] == [n[0] for n in before[0]]
    env.still_serving()


def test_expired_auth_key(env: Env) -> None:
    key = env.one_off(expiry="1h")
    key_id = key.split("-")[2]
    r = api(env.control, env.api_key, "POST", f"/api/v1/authkeys/{key_id}/expire")
    assert r.status_code == 200 and r.json()["revoked"] is True
    before = snapshot(env.control)
    r = env.post_sealed(register_payload(auth_key=key))
    assert_refused(r, 401, "auth_key_expired", "has expired")
    assert snapshot(env.control) == before
    # and one that simply ran out of time
    key2 = env.one_off(expiry="1h")
    env.control.clock.offset = 7200.0
    r = env.post_sealed(register_payload(auth_key=key2))
    assert_refused(r, 401, "auth_key_expired", "has expired")
    env.control.clock.offset = 0.0
    env.still_serving()


def test_already_used_one_off_key(env: Env) -> None:
    key = env.one_off()
    ok = env.post_sealed(register_payload(auth_key=key))
    assert ok.status_code == 200
    before = snapshot(env.control)
    r = env.post_sealed(register_payload(auth_key=key))
    assert_refused(r, 401, "auth_key_used", "already used")
    assert snapshot(env.control) == before
    env.still_serving()


def test_one_off_key_used_concurrently_registers_exactly_one_node(env: Env) -> None:
    key = env.one_off()
    before = len(snapshot(env.control)[0])

    async def attempt() -> bool:
        c = env.control.client()
        try:
            await c.register(NodePrivateKey.generate(), auth_key=key, hostinfo=hostinfo("race"))
            return True
        except RegistrationError as err:
            assert err.code == "auth_key_used"
            return False

    async def race() -> list[bool]:
        return list(await asyncio.gather(*(attempt() for _ in range(12))))

    results = run(race())
    assert results.count(True) == 1
    assert len(snapshot(env.control)[0]) == before + 1
    env.still_serving()


def test_one_off_key_consumed_atomically_by_concurrent_store_writers(env: Env) -> None:
    """Two server processes (threads with their own connections) racing on the same key: one node."""
    key = env.one_off()
    key_id = key.split("-")[2]
    wins: list[int] = []
    errors: list[Exception] = []
    barrier = threading.Barrier(6)

    def writer(i: int) -> None:
        s = Store.open(env.control.db_url, migrate_schema=False)
        try:
            rec = NodeRecord(id=0, machine_key=MachinePrivateKey.generate().public_key(),
                             node_key=NodePrivateKey.generate().public_key(), name=f"racer-{i}",
                             ipv4=f"100.127.0.{i + 1}", ipv6=f"fd7a:115c:a1e0::ff:{i + 1}", created_at=time.time())
            barrier.wait()
            wins.append(s.insert_node(rec, consume_auth_key=key_id).id)
        except (AuthKeyConsumedError, StoreConflictError) as err:
            errors.append(err)
        finally:
            s.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(wins) == 1, (wins, errors)
    assert all(isinstance(e, AuthKeyConsumedError) for e in errors)


def test_node_key_owned_by_another_machine(env: Env) -> None:
    before = snapshot(env.control)
    r = env.post_sealed(register_payload(env.node_key, auth_key=env.reusable))  # a new machine, bystander's key
    assert_refused(r, 409, "node_key_in_use", "already belongs to another machine")
    assert snapshot(env.control) == before
    env.still_serving()


@pytest.mark.parametrize("auth", [None, "Bearer", "Bearer mskey-api-000000000000-" + "0" * 64, "Basic abc",
                                  "Bearer not-a-token"])
def test_admin_api_without_or_with_wrong_key(env: Env, auth: str | None) -> None:
    before = snapshot(env.control)
    headers = {} if auth is None else {"Authorization": auth}
    for method, path, body in (("GET", "/api/v1/nodes", None), ("POST", "/api/v1/authkeys", {"reusable": True}),
                               ("DELETE", f"/api/v1/nodes/{env.node_id}", None),
                               ("POST", "/api/v1/apikeys", {})):
        r = httpx.request(method, env.control.url + path, headers=headers, json=body, timeout=5)
        assert_refused(r, 401, "unauthorized", "API key")
    assert snapshot(env.control) == before
    env.still_serving()


def test_expired_api_key_is_refused(env: Env) -> None:
    r = api(env.control, env.api_key, "POST", "/api/v1/apikeys", json={"expiry": "1h"})
    new = r.json()
    r = api(env.control, env.api_key, "POST", f"/api/v1/apikeys/{new['id']}/expire")
    assert r.status_code == 200
    before = snapshot(env.control)
    r = api(env.control, new["key"], "GET", "/api/v1/nodes")
    assert_refused(r, 401, "unauthorized", "unknown, expired or malformed")
    assert snapshot(env.control) == before
    env.still_serving()


def test_oversized_bodies(env: Env) -> None:
    before = snapshot(env.control)
    machine = MachinePrivateKey.generate()
    big = machine.box(env.control.control_pub).seal(b"x" * 200_000)
    r = httpx.post(env.control.url + "/machine/register", content=big,
                   headers={MACHINE_HEADER: machine.public_key().to_text()}, timeout=10)
    assert_refused(r, 413, "body_too_large", "exceeds")

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        for _ in range(40):
            yield b"y" * 4096

    r = httpx.post(env.control.url + "/machine/map", content=chunks(),
                   headers={MACHINE_HEADER: machine.public_key().to_text()}, timeout=10)
    assert_refused(r, 413, "body_too_large", "exceeds")
    r = httpx.post(env.control.url + "/api/v1/users", content=json.dumps({"name": "a" * 100_000}),
                   headers={"Content-Type": "application/json", "Authorization": f"Bearer {env.api_key}"}, timeout=10)
    assert_refused(r, 413, "body_too_large", "exceeds")
    assert snapshot(env.control) == before
    env.still_serving()


def test_box_too_short(env: Env) -> None:
    before = snapshot(env.control)
    r = httpx.post(env.control.url + "/machine/register", content=b"short",
                   headers={MACHINE_HEADER: MachinePrivateKey.generate().public_key().to_text()}, timeout=5)
    assert_refused(r, 401, "bad_box", "does not open")
    assert snapshot(env.control) == before
    env.still_serving()


def test_map_request_from_unregistered_machine(env: Env) -> None:
    before = snapshot(env.control)
    r = env.post_sealed({"nodeKey": NodePrivateKey.generate().public_key().to_text(), "stream": True},
                        path="/machine/map")
    assert_refused(r, 403, "unknown_machine", "not registered")
    assert snapshot(env.control) == before
    env.still_serving()

