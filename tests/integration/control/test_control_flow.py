"""Register, approve, stream, rotate, expire, delete and ephemeral clean-up against a real server on loopback."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from meshctl.control.client import ControlClient, RegistrationError
from meshctl.control.errors import ControlHTTPError, ControlKeyMismatchError
from meshctl.control.netmap import NetMap, NetMapState
from meshctl.keys import ControlPrivateKey, DiscoPrivateKey, MachinePrivateKey, NodePrivateKey
from meshctl.wire import MapRequest, MapResponse

from .conftest import RunningControl, admin_key, api, hostinfo, run

pytestmark = pytest.mark.integration


class Watcher:
    """Holds one node's map stream in a task and keeps its NetMap current."""

    def __init__(self, client: ControlClient, node_key: NodePrivateKey, **req: Any) -> None:
        self.client = client
        self.request = MapRequest(node_key=node_key.public_key(), **req)
        self.state = NetMapState()
        self.frames: list[MapResponse] = []
        self.changed = asyncio.Event()
        self.ended: BaseException | None = None
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        try:
            async for frame in self.client.map_stream(self.request):
                self.frames.append(frame)
                self.state.apply(frame)
                self.changed.set()
        except Exception as err:
            self.ended = err
            self.changed.set()

    async def start(self) -> Watcher:
        self.task = asyncio.create_task(self._run())
        await self.until(lambda nm: True)
        return self

    @property
    def netmap(self) -> NetMap:
        assert self.state.netmap is not None
        return self.state.netmap

    async def until(self, pred: Any, timeout: float = 10.0) -> NetMap:
        deadline = time.monotonic() + timeout
        while True:
            nm = self.state.netmap
            if nm is not None and pred(nm):
                return nm
            if self.ended is not None:
                raise AssertionError(f"stream ended: {self.ended!r}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; last netmap: {nm}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass


async def join(control: RunningControl, authkey: str, name: str) -> tuple[ControlClient, NodePrivateKey, int]:
    client = control.client()
    nk = NodePrivateKey.generate()
    res = await client.register(nk, auth_key=authkey, hostinfo=hostinfo(name))
    assert res.machine_authorized and res.node is not None
    return client, nk, res.node.id


def make_authkey(control: RunningControl, **body: Any) -> str:
    key = admin_key(control)
    r = api(control, key, "POST", "/api/v1/authkeys", json={"reusable": True, **body})
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def test_key_endpoint_and_pinning(control: RunningControl) -> None:
    async def go() -> None:
        assert await control.client().fetch_control_key() == control.control_pub
        wrong = ControlClient(control.url, ControlPrivateKey.generate().public_key(), MachinePrivateKey.generate())
        try:
            with pytest.raises(ControlKeyMismatchError, match="is pinned"):
                await wrong.fetch_control_key()
        finally:
            await wrong.aclose()
    run(go())


def test_register_stream_and_deltas(control: RunningControl) -> None:
    authkey = make_authkey(control)

    async def go() -> None:
        ca, ka, ida = await join(control, authkey, "alpha")
        cb, kb, idb = await join(control, authkey, "beta")
        wa = await Watcher(ca, ka, endpoints=("192.0.2.1:41641",), home_derp=900,
                           disco_key=DiscoPrivateKey.generate().public_key()).start()
        nm = wa.netmap
        assert nm.self_node.id == ida and nm.self_node.fqdn == "alpha.mesh.test"
        assert set(nm.peers) == {idb} and nm.peers[idb].online is False
        assert nm.derp_map is not None and nm.derp_map.regions[900].nodes[0].plain_http
        assert nm.dns is not None and nm.dns.domain == "mesh.test"
        assert nm.self_node.addresses[0].startswith("100.") and nm.self_node.addresses[1].startswith("fd7a:115c:a1e0:")
        first_seq = nm.seq
        # beta comes online: alpha sees a patch (online), not a full map
        wb = await Watcher(cb, kb, endpoints=("198.51.100.2:41641",)).start()
        await wa.until(lambda m: m.peers[idb].online and m.peers[idb].endpoints == ("198.51.100.2:41641",))
        assert wb.netmap.peers[ida].endpoints == ("192.0.2.1:41641",)
        # beta reports new endpoints over a non-streaming update
        await cb.update(MapRequest(node_key=kb.public_key(), endpoints=("203.0.113.7:1234",), home_derp=900))
        await wa.until(lambda m: m.peers[idb].endpoints == ("203.0.113.7:1234",) and m.peers[idb].home_derp == 900)
        assert all(not f.is_full for f in wa.frames[1:]) and wa.frames[0].is_full
        assert [f.seq for f in wa.frames] == list(range(first_seq, first_seq + len(wa.frames)))
        assert any(f.peers_patch for f in wa.frames[1:])
        # a third node joins: alpha gets it in peersChanged
        _cc, _kc, idc = await join(control, authkey, "alpha")  # name clash → alpha-1
        await wa.until(lambda m: idc in m.peers)
        assert wa.netmap.peers[idc].name == "alpha-1"
        # beta disconnects: alpha sees it go offline with a last-seen time
        await wb.stop()
        await wa.until(lambda m: not m.peers[idb].online and m.peers[idb].last_seen is not None)
        await wa.stop()
    run(go())


def test_keepalive_frames_arrive(control: RunningControl) -> None:
    authkey = make_authkey(control)

    async def go() -> None:
        c, k, _ = await join(control, authkey, "ka")
        w = await Watcher(c, k).start()
        deadline = time.monotonic() + 8
        while not any(f.keep_alive for f in w.frames) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert any(f.keep_alive for f in w.frames), "no keep-alive within 8 s (interval 2 s)"
        await w.stop()
    run(go())


def test_pending_until_approved(control: RunningControl) -> None:
    authkey = make_authkey(control)
    key = admin_key(control)

    async def go() -> None:
        ca, ka, _ida = await join(control, authkey, "seer")
        wa = await Watcher(ca, ka).start()
        cp = control.client()
        kp = NodePrivateKey.generate()
        res = await cp.register(kp, hostinfo=hostinfo("newbie"))
        assert not res.machine_authorized and res.node is not None
        pid = res.node.id
        with pytest.raises(ControlHTTPError) as info:
            async for _ in cp.map_stream(MapRequest(node_key=kp.public_key())):
                pass
        assert info.value.status == 403 and info.value.code == "not_authorized"
        assert pid not in wa.netmap.peers
        r = await asyncio.to_thread(api, control, key, "POST", f"/api/v1/nodes/{pid}/approve", json={"user": "bob"})
        assert r.status_code == 200 and r.json()["machineAuthorized"] is True and r.json()["user"] == "bob"
        res2 = await cp.register(kp, hostinfo=hostinfo("newbie"))
        assert res2.machine_authorized and res2.node is not None and res2.node.id == pid
        await wa.until(lambda m: pid in m.peers)
        await wa.stop()
    run(go())


def test_pending_machines_are_capped(control: RunningControl) -> None:
    authkey = make_authkey(control)
    key = admin_key(control)
    waiting = sum(1 for n in api(control, key, "GET", "/api/v1/nodes").json() if not n["machineAuthorized"])
    control.service.max_pending = waiting + 2

    async def go() -> None:
        for i in range(2):
            res = await control.client().register(NodePrivateKey.generate(), hostinfo=hostinfo(f"wait{i}"))
            assert not res.machine_authorized
        before = len(api(control, key, "GET", "/api/v1/nodes").json())
        with pytest.raises(RegistrationError) as info:
            await control.client().register(NodePrivateKey.generate(), hostinfo=hostinfo("one-too-many"))
        assert info.value.status == 429 and info.value.code == "too_many_pending"
        assert len(api(control, key, "GET", "/api/v1/nodes").json()) == before  # nothing stored
        await join(control, authkey, "with-key")  # a machine with an auth key is not held back
    try:
        run(go())
    finally:
        control.service.max_pending = 64


def test_reregistration_keeps_id_and_addresses(control: RunningControl) -> None:
    authkey = make_authkey(control)

    async def go() -> None:
        machine = MachinePrivateKey.generate()
        c1 = control.client(machine)
        r1 = await c1.register(NodePrivateKey.generate(), auth_key=authkey, hostinfo=hostinfo("stable"))
        c2 = control.client(machine)  # the agent lost its node key but kept its machine key
        r2 = await c2.register(NodePrivateKey.generate(), auth_key=authkey, hostinfo=hostinfo("stable"))
        assert r1.node is not None and r2.node is not None
        assert (r2.node.id, r2.node.addresses, r2.node.name) == (r1.node.id, r1.node.addresses, r1.node.name)
        assert r2.node.node_key != r1.node.node_key
    run(go())


def test_rotation_keeps_id_and_addresses_and_reaches_peers(control: RunningControl) -> None:
    authkey = make_authkey(control)

    async def go() -> None:
        ca, ka, _ida = await join(control, authkey, "watch")
        cb, kb, idb = await join(control, authkey, "rotor")
        wa = await Watcher(ca, ka).start()
        before = wa.netmap.peers[idb]
        new = NodePrivateKey.generate()
        res = await cb.register(new, old_node_key=kb, hostinfo=hostinfo("rotor"))
        assert res.node is not None and res.node.id == idb and res.node.addresses == before.addresses
        assert res.node.node_key == new.public_key()
        await wa.until(lambda m: m.peers[idb].node_key == new.public_key())
        assert wa.netmap.peers[idb].addresses == before.addresses
        # the old key no longer opens a stream; the new one does
        with pytest.raises(ControlHTTPError, match="unknown_node_key"):
            async for _ in cb.map_stream(MapRequest(node_key=kb.public_key())):
                pass
        wb = await Watcher(cb, new).start()
        assert wb.netmap.self_node.node_key == new.public_key()
        await wa.stop()
        await wb.stop()
    run(go())


def test_rotation_without_old_key_proof_is_refused(control: RunningControl) -> None:
    authkey = make_authkey(control)

    async def go() -> None:
        cb, kb, _idb = await join(control, authkey, "victim")
        thief = control.client()  # another machine claims the node key rotation
        with pytest.raises(RegistrationError) as info:
            await thief.register(NodePrivateKey.generate(), old_node_key=kb, hostinfo=hostinfo("x"))
        assert info.value.code == "unknown_old_node_key"
        # same machine, but proof made with a different key than the current one
        with pytest.raises(RegistrationError) as info2:
            await cb.register(NodePrivateKey.generate(), old_node_key=NodePrivateKey.generate(), hostinfo=hostinfo("x"))
        assert info2.value.code == "unknown_old_node_key"
        res = await cb.register(kb, hostinfo=hostinfo("victim"))
        assert res.node is not None and res.node.node_key == kb.public_key()
    run(go())


def test_expiry_removes_node_from_peers_and_rotation_restores_it(control: RunningControl) -> None:
    authkey = make_authkey(control)

    async def go() -> None:
        ca, ka, ida = await join(control, authkey, "stay")
        cb, kb, idb = await join(control, authkey, "old")
        wa = await Watcher(ca, ka).start()
        wb = await Watcher(cb, kb).start()
        assert idb in wa.netmap.peers
        control.clock.offset = 181 * 86400.0  # past the default 180-day node key expiry (server and clients)
        # b's stream gets a last frame saying its own key expired, then the server ends it
        deadline = time.monotonic() + 10
        while not (wb.frames[-1].node is not None and wb.frames[-1].node.expired) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert wb.frames[-1].node is not None and wb.frames[-1].node.expired
        # an expired key cannot renew itself (whoever holds an old key could otherwise keep it alive forever):
        # rotation is refused, and a new auth key brings the machine back with its id; b stays expired
        new_a = NodePrivateKey.generate()
        with pytest.raises(RegistrationError) as refused:
            await ca.register(new_a, old_node_key=ka, hostinfo=hostinfo("stay"))
        assert refused.value.code == "node_key_expired"
        fresh = make_authkey(control)  # made after the clock jump: the first key has expired too
        res = await ca.register(new_a, auth_key=fresh, hostinfo=hostinfo("stay"))
        assert res.node is not None and not res.node_key_expired and res.node.id == ida
        wa2 = await Watcher(ca, new_a).start()
        assert idb not in wa2.netmap.peers
        with pytest.raises(ControlHTTPError, match="node_key_expired"):
            async for _ in cb.map_stream(MapRequest(node_key=kb.public_key())):
                pass
        r = await cb.register(kb, hostinfo=hostinfo("old"))
        assert r.node_key_expired
        new_b = NodePrivateKey.generate()
        await cb.register(new_b, auth_key=fresh, hostinfo=hostinfo("old"))
        await wa2.until(lambda m: idb in m.peers and m.peers[idb].node_key == new_b.public_key())
        await wa.stop()
        await wa2.stop()
        await wb.stop()
    run(go())


def test_admin_expire_and_delete_update_peer_maps(control: RunningControl) -> None:
    authkey = make_authkey(control)
    key = admin_key(control)

    async def go() -> None:
        ca, ka, _ida = await join(control, authkey, "keeper")
        cb, kb, idb = await join(control, authkey, "goner")
        _cc, _kc, idc = await join(control, authkey, "expiring")
        wa = await Watcher(ca, ka).start()
        assert {idb, idc} <= set(wa.netmap.peers)
        r = await asyncio.to_thread(api, control, key, "POST", f"/api/v1/nodes/{idc}/expire")
        assert r.status_code == 200 and r.json()["expired"] is True
        await wa.until(lambda m: idc not in m.peers)
        r = await asyncio.to_thread(api, control, key, "DELETE", f"/api/v1/nodes/{idb}")
        assert r.status_code == 200
        await wa.until(lambda m: idb not in m.peers)
        r = await asyncio.to_thread(api, control, key, "GET", f"/api/v1/nodes/{idb}")
        assert r.status_code == 404
        with pytest.raises(ControlHTTPError, match="unknown_machine"):
            await cb.update(MapRequest(node_key=kb.public_key()))
        await wa.stop()
    run(go())


def test_ephemeral_node_deleted_after_going_offline(control: RunningControl) -> None:
    authkey = make_authkey(control, ephemeral=True)
    key = admin_key(control)

    async def go() -> None:
        ce, ke, ide = await join(control, authkey, "ephem")
        we = await Watcher(ce, ke).start()
        await asyncio.sleep(1.5)  # online: longer than the 1 s timeout, must survive
        r = await asyncio.to_thread(api, control, key, "GET", f"/api/v1/nodes/{ide}")
        assert r.status_code == 200 and r.json()["ephemeral"] is True
        await we.stop()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = await asyncio.to_thread(api, control, key, "GET", f"/api/v1/nodes/{ide}")
            if r.status_code == 404:
                break
            await asyncio.sleep(0.2)
        assert r.status_code == 404
        s = control.store()
        try:
            assert ide not in {n.id for n in s.list_nodes()}
        finally:
            s.close()
    run(go())


def test_derp_verify(control: RunningControl) -> None:
    authkey = make_authkey(control)
    s = control.store()
    try:
        token = s.create_derp_token(time.time())
    finally:
        s.close()

    async def go() -> NodePrivateKey:
        _, k, _ = await join(control, authkey, "derpy")
        return k

    k = run(go())

    def verify(node_key: str, tok: str | None = token) -> httpx.Response:
        headers = {} if tok is None else {"Authorization": f"Bearer {tok}"}
        return httpx.post(control.url + "/derp/verify", json={"NodePublic": node_key, "Source": "127.0.0.1"},
                          headers=headers, timeout=5)

    assert verify(k.public_key().to_text()).json() == {"Allow": True}
    assert verify(NodePrivateKey.generate().public_key().to_text()).json() == {"Allow": False}
    assert verify("garbage").json() == {"Allow": False}
    assert verify(k.public_key().to_text(), None).status_code == 401
    assert verify(k.public_key().to_text(), "mskey-derp-000000000000-" + "0" * 64).status_code == 401
    # an expired node is refused too
    key = admin_key(control)
    node_id = next(n["id"] for n in api(control, key, "GET", "/api/v1/nodes").json()
                   if n["nodeKey"] == k.public_key().to_text())
    assert api(control, key, "POST", f"/api/v1/nodes/{node_id}/expire").status_code == 200
    assert verify(k.public_key().to_text()).json() == {"Allow": False}


def test_healthz_and_metrics(control: RunningControl) -> None:
    r = httpx.get(control.url + "/healthz", timeout=5)
    assert r.status_code == 200 and r.json()["ok"] is True
    m = httpx.get(control.url + "/metrics", timeout=5).text
    for name in ("meshctl_control_nodes", "meshctl_control_online_streams", "meshctl_control_map_frames_sent_total",
                 "meshctl_control_map_build_seconds"):
        assert name in m


def test_admin_node_operations(control: RunningControl) -> None:
    authkey = make_authkey(control)
    key = admin_key(control)

    async def go() -> None:
        ca, ka, _ida = await join(control, authkey, "viewer")
        _cb, _kb, idb = await join(control, authkey, "subject")
        _cc, _kc, _idc = await join(control, authkey, "taken")
        wa = await Watcher(ca, ka).start()

        def call(method: str, path: str, body: Any = None) -> httpx.Response:
            return api(control, key, method, path, json=body)

        r = await asyncio.to_thread(call, "POST", f"/api/v1/nodes/{idb}/rename", {"name": "taken"})
        assert r.status_code == 409 and r.json()["code"] == "name_taken"
        r = await asyncio.to_thread(call, "POST", f"/api/v1/nodes/{idb}/rename", {"name": "Bad Name"})
        assert r.status_code == 400 and r.json()["code"] == "bad_name"
        r = await asyncio.to_thread(call, "POST", f"/api/v1/nodes/{idb}/rename", {"name": "db1"})
        assert r.status_code == 200 and r.json()["fqdn"] == "db1.mesh.test"
        await wa.until(lambda m: m.peers[idb].fqdn == "db1.mesh.test")
        r = await asyncio.to_thread(call, "POST", f"/api/v1/nodes/{idb}/tags", {"tags": ["tag:db", "tag:prod"]})
        assert r.status_code == 200 and r.json()["tags"] == ["tag:db", "tag:prod"]
        await wa.until(lambda m: m.peers[idb].tags == ("tag:db", "tag:prod"))
        r = await asyncio.to_thread(call, "POST", f"/api/v1/nodes/{idb}/tags", {"tags": ["db"]})
        assert r.status_code == 400 and r.json()["code"] == "bad_tags"
        # per-node expiry off: the node survives a clock far past the default expiry
        r = await asyncio.to_thread(call, "POST", f"/api/v1/nodes/{idb}/key-expiry", {"disabled": True})
        assert r.status_code == 200 and r.json()["keyExpiryDisabled"] is True and r.json()["keyExpiry"] is None
        control.clock.offset = 400 * 86400.0
        await asyncio.sleep(0.6)  # housekeeping runs every 0.2 s
        r = await asyncio.to_thread(call, "GET", f"/api/v1/nodes/{idb}")
        assert r.json()["expired"] is False
        r = await asyncio.to_thread(call, "GET", "/api/v1/nodes")
        by_name = {n["name"]: n for n in r.json()}
        assert by_name["taken"]["expired"] is True and by_name["db1"]["expired"] is False
        for path in ("/api/v1/nodes/999", "/api/v1/nodes/999/expire"):
            r = await asyncio.to_thread(call, "GET" if path.endswith("999") else "POST", path)
            assert r.status_code == 404 and r.json()["code"] == "not_found"
        await wa.stop()
    run(go())


def test_tagged_auth_key_disables_expiry_and_users_are_managed(control: RunningControl) -> None:
    key = admin_key(control)
    r = api(control, key, "POST", "/api/v1/authkeys", json={"tags": ["tag:server"], "user": "ops", "expiry": "2h"})
    assert r.status_code == 201 and r.json()["user"] == "ops" and r.json()["reusable"] is False
    tagged = r.json()["key"]

    async def go() -> None:
        c = control.client()
        res = await c.register(NodePrivateKey.generate(), auth_key=tagged, hostinfo=hostinfo("srv"))
        assert res.node is not None and res.node.tags == ("tag:server",) and res.node.key_expiry is None
        assert res.node.user == "ops"
    run(go())
    users = api(control, key, "GET", "/api/v1/users").json()
    assert [u["name"] for u in users] == ["ops"]
    r = api(control, key, "DELETE", "/api/v1/users/ops")
    assert r.status_code == 409 and "still owns nodes" in r.json()["error"]
    assert api(control, key, "POST", "/api/v1/users", json={"name": "eve"}).status_code == 201
    assert api(control, key, "POST", "/api/v1/users", json={"name": "eve"}).status_code == 409
    assert api(control, key, "DELETE", "/api/v1/users/eve").status_code == 200
    r = api(control, key, "POST", "/api/v1/authkeys", json={"expiry": "soon"})
    assert r.status_code == 400 and r.json()["code"] == "bad_expiry"


def _metric(control: RunningControl, name: str) -> float:
    """The sum over all label sets of one metric."""
    values = [float(line.rsplit(" ", 1)[1]) for line in httpx.get(control.url + "/metrics", timeout=5).text.splitlines()
              if line.startswith((name + " ", name + "{"))]
    assert values, f"metric {name} not found"
    return sum(values)


def test_a_change_touches_only_the_streams_that_see_it(control: RunningControl) -> None:
    authkey = make_authkey(control)

    async def go() -> None:
        joined = [await join(control, authkey, f"n{i}") for i in range(6)]
        watchers = [await Watcher(c, k).start() for c, k, _ in joined[:3]]  # n3..n5 registered but offline
        await asyncio.sleep(0.3)  # online patches of the watchers settle
        before = await asyncio.to_thread(_metric, control, "meshctl_control_change_stream_pushes_total")
        frames_before = await asyncio.to_thread(_metric, control, 'meshctl_control_map_frames_sent_total')
        c0, k0, id0 = joined[0]
        await c0.update(MapRequest(node_key=k0.public_key(), endpoints=("203.0.113.9:9",)))
        for w in watchers[1:]:
            await w.until(lambda m: m.peers[id0].endpoints == ("203.0.113.9:9",))
        after = await asyncio.to_thread(_metric, control, "meshctl_control_change_stream_pushes_total")
        # the two other open streams plus the changed node's own stream; not the three offline nodes
        assert after - before == 3
        assert await asyncio.to_thread(_metric, control, 'meshctl_control_map_frames_sent_total') > frames_before
        for w in watchers:
            await w.stop()
    run(go())


def test_deleting_a_node_ends_its_own_stream(control: RunningControl) -> None:
    authkey = make_authkey(control)
    key = admin_key(control)

    async def go() -> None:
        ca, ka, _ida = await join(control, authkey, "witness")
        cb, kb, idb = await join(control, authkey, "deleted")
        wa = await Watcher(ca, ka).start()
        wb = await Watcher(cb, kb).start()
        r = await asyncio.to_thread(api, control, key, "DELETE", f"/api/v1/nodes/{idb}")
        assert r.status_code == 200
        await wa.until(lambda m: idb not in m.peers)
        assert wb.task is not None
        await asyncio.wait_for(wb.task, 10)  # the deleted node's stream ends instead of idling forever
        await wa.stop()
    run(go())
