"""The malicious relay: a real ``comity-relay serve`` behind a proxy the test controls.

The proxy listens on 127.0.0.1 (port 0), forwards every request to the real relay
and hands each answer to the test's rules before the client sees it. It holds the
relay's signing key (read from the relay's data folder), so a rule can also sign
receipts and heads *as the relay*: that is the strongest relay docs/threat-model.md
considers, one whose operator is hostile.

    mal = MaliciousRelay(root)                  # mal.url is what clients are given
    mal.rewrite("GET", r"/mailbox", fn)         # fn(status, body, req) -> (status, body) | None
    mal.on_request("GET", r"/blobs/", fn)       # fn(req) -> None (forward) | (status, body[, headers])
    mal.push({"type": "revoked"})               # a frame to every open /events WebSocket
    mal.clear(); mal.close()

Rules run on the proxy's thread, in the order added; the first ``on_request`` rule
that answers wins, then every matching ``rewrite`` rule sees the answer in turn.
``req`` is a ``ProxiedRequest`` (method, path with query, headers, body bytes).
``mal.seen`` lists ``(method, path, status)`` of every request answered.

``build_network`` makes a network through the real ``comity`` commands, every
member pointed at the proxy. The ``world`` fixture does it once per test module
(members: the module's ``PEOPLE`` list, default alice and bob; the administrator
is ``secretariat``; the network ``refco``) and drops every rule after each test.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from keys.identity import IdentityKey
from relay.relaykey import load_relay_key

from ..e2e_support import Member, RelayProcess, make_network

#: headers that describe one hop, not the message (RFC 9110 §7.6.1), plus the ones aiohttp sets
_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
                "te", "trailer", "content-length", "host"}
#: the proxy gives up on the relay after this long (a test never waits that long on purpose)
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=120)
START_TIMEOUT = 30.0


@dataclass
class ProxiedRequest:
    method: str
    path: str                    # path and query, as the client sent them
    headers: CIMultiDictProxy
    body: bytes

    def json(self):
        return json.loads(self.body)


Rewrite = Callable[[int, bytes, ProxiedRequest], "tuple[int, bytes] | None"]
Intercept = Callable[[ProxiedRequest], "tuple | None"]


class MaliciousRelay:
    def __init__(self, root: Path, *, relay_args: tuple[str, ...] = ()):
        self.relay = RelayProcess(root / "relay", root / "logs", args=relay_args)
        self.key: IdentityKey = load_relay_key(root / "relay")
        self.seen: list[tuple[str, str, int]] = []
        self._rules_lock = threading.Lock()
        self._rewrites: list[tuple[str, re.Pattern, Rewrite]] = []
        self._intercepts: list[tuple[str, re.Pattern, Intercept]] = []
        self._sockets: set[web.WebSocketResponse] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="malicious-relay")
        self._thread.start()
        try:
            port = self._call(self._start(), START_TIMEOUT)
        except BaseException:
            self.relay.stop()
            raise
        self.url = f"http://127.0.0.1:{port}"

    def __repr__(self) -> str:
        return f"MaliciousRelay({self.url!r} -> {self.relay.url!r})"

    # -- what tests call ---------------------------------------------------------------------

    def rewrite(self, method: str, path_regex: str, fn: Rewrite) -> None:
        with self._rules_lock:
            self._rewrites = self._rewrites + [(method.upper(), re.compile(path_regex), fn)]

    def on_request(self, method: str, path_regex: str, fn: Intercept) -> None:
        with self._rules_lock:
            self._intercepts = self._intercepts + [(method.upper(), re.compile(path_regex), fn)]

    def clear(self) -> None:
        with self._rules_lock:
            self._rewrites, self._intercepts = [], []

    def push(self, event: dict) -> int:
        """Send ``event`` as a text frame on every open event stream; returns how many."""
        return self._call(self._push(json.dumps(event)), START_TIMEOUT)

    def open_event_streams(self) -> int:
        return len(self._sockets)

    def close(self) -> None:
        try:
            self._call(self._stop(), START_TIMEOUT)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=START_TIMEOUT)
            self.relay.stop()

    # -- the proxy (runs on its own thread) --------------------------------------------------

    def _call(self, coroutine, timeout: float):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _start(self) -> int:
        # No automatic decompression: the client must see exactly the bytes a rule chose.
        self._session = aiohttp.ClientSession(auto_decompress=False, timeout=UPSTREAM_TIMEOUT)
        app = web.Application(client_max_size=1024 ** 3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return self._runner.addresses[0][1]

    async def _stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        await self._runner.cleanup()
        await self._session.close()

    async def _push(self, text: str) -> int:
        sent = 0
        for ws in list(self._sockets):
            if not ws.closed:
                await ws.send_str(text)
                sent += 1
        return sent

    def _matching(self, rules, req: ProxiedRequest):
        return [fn for method, pattern, fn in rules
                if method in ("*", req.method) and pattern.search(req.path)]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        req = ProxiedRequest(request.method, request.path_qs, request.headers, await request.read())
        with self._rules_lock:
            intercepts, rewrites = list(self._intercepts), list(self._rewrites)
        answer = None
        for fn in self._matching(intercepts, req):
            answer = fn(req)
            if answer is not None:
                break
        if answer is not None:
            status, body, *rest = answer
            headers = CIMultiDict(rest[0] if rest else {"Content-Type": "application/json"})
        else:
            status, body, headers = await self._forward(req)
        for fn in self._matching(rewrites, req):
            changed = fn(status, body, req)
            if changed is not None:
                status, body = changed
        self.seen.append((req.method, req.path, status))
        return web.Response(status=status, body=body, headers=headers)

    async def _forward(self, req: ProxiedRequest) -> tuple[int, bytes, CIMultiDict]:
        headers = {k: v for k, v in req.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._session.request(req.method, self.relay.url + req.path, headers=headers,
                                         data=req.body if req.body else None) as response:
            body = await response.read()
            kept = CIMultiDict((k, v) for k, v in response.headers.items()
                               if k.lower() not in _HOP_HEADERS)
            return response.status, body, kept

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("authorization",)}
        try:
            upstream = await self._session.ws_connect(
                self.relay.url.replace("http", "ws", 1) + request.path_qs, headers=headers)
        except aiohttp.WSServerHandshakeError as exc:
            return web.json_response({"error": "refused", "message": "upstream refused"},
                                     status=exc.status)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)

        async def down() -> None:
            async for frame in upstream:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    await ws.send_str(frame.data)
                elif frame.type == aiohttp.WSMsgType.BINARY:
                    await ws.send_bytes(frame.data)
                else:
                    break

        relay_to_client = asyncio.ensure_future(down())
        try:
            async for frame in ws:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    await upstream.send_str(frame.data)
                elif frame.type != aiohttp.WSMsgType.BINARY:
                    break
        finally:
            relay_to_client.cancel()
            self._sockets.discard(ws)
            await upstream.close()
            await ws.close()
        return ws


def build_network(mal: MaliciousRelay, root: Path, admin_handle: str, handles: list[str],
                  network: str = "refco") -> dict[str, Member]:
    """A network on the malicious relay, every member pointed at the proxy (e2e_support.make_network)."""
    return make_network(mal.url, mal.relay, root, handles, admin_handle=admin_handle, network=network)


@dataclass
class World:
    mal: MaliciousRelay
    people: dict[str, Member]
    root: Path


@pytest.fixture(scope="module")
def _module_world(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    mal = MaliciousRelay(root / "relay-side")
    try:
        handles = list(getattr(request.module, "PEOPLE", ["alice", "bob"]))
        yield World(mal, build_network(mal, root, "secretariat", handles), root)
    finally:
        mal.close()


@pytest.fixture
def world(_module_world):
    """One network on a malicious relay per test module; the relay is honest again after each test."""
    yield _module_world
    _module_world.mal.clear()


@pytest.fixture
def malicious_relay(tmp_path):
    mal = MaliciousRelay(tmp_path / "relay-side")
    try:
        yield mal
    finally:
        mal.close()
