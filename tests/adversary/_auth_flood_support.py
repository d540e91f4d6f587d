"""Helpers for tests/adversary/test_auth_flood.py; not tests themselves.

``RecordingProxy``: a loopback HTTP proxy in front of the real relay that passes every request
and answer through unchanged and keeps a copy of each ``POST .../auth/token`` body, as an
eavesdropper on the member's path (a logging TLS terminator, say) would. ``Flooder``: an
anonymous client with no key and no token that asks for challenges naming the victim's handle
and sends token requests with wrong signatures, over one keep-alive connection, at full speed.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import threading
from collections import Counter
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

#: the proxy's event loop starts, or stops, within this many seconds
PROXY_TIMEOUT = 30.0
#: headers that belong to one connection, not to the request or answer passed on
_HOP_BY_HOP = frozenset({"host", "connection", "keep-alive", "content-length", "transfer-encoding",
                         "upgrade"})


class RecordingProxy:
    """``url`` forwards to ``upstream``; ``token_requests`` holds the token bodies seen."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.token_requests: list[bytes] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(PROXY_TIMEOUT) or not self.url:
            raise AssertionError("the recording proxy did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        finally:
            self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        # Bytes as they are: the relay's answers are passed on without decompressing them.
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.method == "POST" and request.path.endswith("/auth/token"):
            self.token_requests.append(body)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(request.method, self.upstream + request.path_qs,
                                         data=body, headers=headers) as answer:
            data = await answer.read()
            passed = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=answer.status, body=data, headers=passed)

    def close(self) -> None:
        async def stop() -> None:
            await self._runner.cleanup()
            await self._session.close()
        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(PROXY_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(PROXY_TIMEOUT)
        self._loop.close()


class Flooder:
    """An anonymous client of ``relay_url`` flooding ``network``'s authentication for ``handle``.

    ``run`` first spends the client address's budget for anonymous requests (wrong-signature
    token requests until the relay answers 429), then sends up to ``limit`` challenge requests
    for the victim's handle with a wrong-signature token request after every ``token_every``, so
    the budget stays spent. ``statuses`` counts answers per (route, status); ``challenges_sent``
    counts the challenge requests of the second phase; ``stop`` ends it early.
    """

    def __init__(self, relay_url: str, network: str, handle: str, *, limit: int,
                 token_every: int = 4, drain_limit: int = 1000):
        address = urlsplit(relay_url)
        self._connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        self._base = f"/v1/networks/{network}/auth"
        self.handle, self.limit = handle, limit
        self.token_every, self.drain_limit = token_every, drain_limit
        self.statuses: Counter = Counter()
        self.challenges_sent = 0
        self.drained = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._guarded, daemon=True)

    def start(self) -> "Flooder":
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the flood did not end"
        self._connection.close()
        if self.error is not None:
            raise self.error

    def _post(self, route: str, body: dict) -> tuple[int, dict]:
        self._connection.request("POST", f"{self._base}/{route}", body=json.dumps(body),
                                 headers={"Content-Type": "application/json"})
        answer = self._connection.getresponse()
        data = answer.read()
        self.statuses[(route, answer.status)] += 1
        return answer.status, json.loads(data) if data else {}

    def _bad_token(self, challenge: str) -> int:
        # 64 random bytes: the shape of an Ed25519 signature, by nobody's key.
        signature = base64.urlsafe_b64encode(os.urandom(64)).rstrip(b"=").decode("ascii")
        return self._post("token", {"handle": self.handle, "challenge": challenge,
                                    "signature": signature})[0]

    def _guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:        # reported by join(), in the test's thread
            self.error = exc
        finally:
            self.drained.set()

    def _run(self) -> None:
        status, body = self._post("challenge", {"handle": self.handle})
        challenge = body.get("challenge", "A" * 43)
        for _ in range(self.drain_limit):
            if self._bad_token(challenge) == 429:
                break
        self.drained.set()
        for n in range(self.limit):
            if self.stop.is_set():
                return
            status, body = self._post("challenge", {"handle": self.handle})
            self.challenges_sent += 1
            if status == 200:
                challenge = body["challenge"]
            if n % self.token_every == 0:
                self._bad_token(challenge)
