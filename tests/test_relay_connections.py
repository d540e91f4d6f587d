"""Hostile and slow connections (issue 10, items 1, 2 and 6), against the real ``comity-relay``.

Idle keep-alive connections, half-sent headers and stalled bodies are closed after their
timeouts; a reset or stalled upload releases its blob at once so the documented resume works;
1,100 silent connections under ``ulimit -n 1024`` do not keep a client out nor flood the log;
one member cannot hold unbounded push sockets; nothing of it writes a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import struct
import time
import urllib.request

import aiohttp
import pytest

from relay.constants import MAX_PUSH_SOCKETS_PER_MEMBER

from .relay_process_support import Network, RelayProcess, mint_token, relay_key_of

#: the short timeouts of the "fast" relay, seconds (the settings take whole seconds)
KEEPALIVE, HEADERS, BODY = 3, 1, 1
#: a socket read in these tests gives up after this long: a relay that never closes fails
READ_TIMEOUT = 10.0
#: silent connections held against a relay limited to FILE_LIMIT handles
SILENT, FILE_LIMIT = 1100, 1024
#: how fast a legitimate request must be answered while they are held
PROMPT = 2.0
PIECE = 200_000


class Relay:
    """A started relay process, a network on it and its admin's bearer token."""

    def __init__(self, tmp, name: str, *args: str, preexec_fn=None):
        data = tmp / name
        self.process = RelayProcess(data, *args, preexec_fn=preexec_fn).wait_ready()
        self.url, self.port = self.process.url, self.process.port
        self.network = Network("conn-net", "ana", relay_key=relay_key_of(data))
        token = mint_token(data, self.network.name)

        async def create() -> None:
            async with aiohttp.ClientSession() as session:
                await self.network.create(session, self.url, token)
        asyncio.run(create())
        self.token = self.network.admin.token
        self.path = f"/v1/networks/{self.network.name}"

    @property
    def stderr(self) -> str:
        return self.process.stderr.text


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    relay = Relay(tmp_path_factory.mktemp("fast"), "relay", "--keepalive-timeout", str(KEEPALIVE),
                  "--header-timeout", str(HEADERS), "--body-timeout", str(BODY))
    yield relay
    relay.process.close()


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    """Default timeouts: whatever happens fast here is not a timeout's doing."""
    relay = Relay(tmp_path_factory.mktemp("patient"), "relay")
    yield relay
    relay.process.close()


def connect(relay: Relay) -> socket.socket:
    return socket.create_connection(("127.0.0.1", relay.port), timeout=READ_TIMEOUT)


def until_closed(conn: socket.socket) -> bytes:
    """Everything the relay sends until it closes the connection (fails after READ_TIMEOUT)."""
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def read_response(conn: socket.socket) -> tuple[int, bytes]:
    """One HTTP response with a Content-Length: its status and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += conn.recv(65536)
    return int(head.split()[1]), body


def shed(relay: Relay, reason: str) -> int:
    """The relay's count of connections shed for ``reason`` (from /metrics)."""
    with urllib.request.urlopen(f"{relay.url}/metrics", timeout=READ_TIMEOUT) as r:
        text = r.read().decode()
    prefix = f'comity_connections_shed_total{{reason="{reason}"}} '
    return int(next((line[len(prefix):] for line in text.splitlines()
                     if line.startswith(prefix)), "0"))


def reset(conn: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST, not a FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def patch_head(relay: Relay, blob: str, offset: int, length: int) -> bytes:
    return (f"PATCH {relay.path}/blobs/{blob} HTTP/1.1\r\nHost: relay\r\n"
            f"Authorization: Bearer {relay.token}\r\n"
            "Content-Type: application/offset+octet-stream\r\n"
            f"Upload-Offset: {offset}\r\nContent-Length: {length}\r\n\r\n").encode()


async def new_blob(session, relay: Relay, size: int) -> str:
    async with session.post(f"{relay.url}{relay.path}/blobs", json={"size": size},
                            headers=relay.network.admin.auth) as r:
        assert r.status == 201, await r.text()
        return (await r.json())["blob"]


async def bytes_received(session, relay: Relay) -> int:
    async with session.get(f"{relay.url}/metrics") as r:
        text = await r.text()
    return int(next(line.split()[1] for line in text.splitlines()
                    if line.startswith("comity_bytes_received_total ")))


async def resume(session, relay: Relay, blob: str, data: bytes, within: float) -> int:
    """HEAD then PATCH the rest, as the client does after a cut; 409 (busy) allowed only
    for ``within`` seconds. The offset the upload resumed at."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    url, auth = f"{relay.url}{relay.path}/blobs/{blob}", relay.network.admin.auth
    while True:
        async with session.head(url, headers=auth) as r:
            assert r.status == 200
            offset = int(r.headers["Upload-Offset"])
        async with session.patch(url, data=data[offset:], headers={
                **auth, "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream"}) as r:
            if r.status == 204:
                return offset
            assert r.status == 409 and loop.time() < deadline, (r.status, await r.text())
        await asyncio.sleep(0.02)


async def cut_upload(session, relay: Relay, blob: str, data: bytes, sent: int) -> socket.socket:
    """A raw PATCH of all of ``data`` that sends only ``sent`` bytes of it, once the relay
    has read them (its byte counter says so: no fixed sleep)."""
    before = await bytes_received(session, relay)
    conn = connect(relay)
    conn.sendall(patch_head(relay, blob, 0, len(data)) + data[:sent])
    deadline = time.monotonic() + READ_TIMEOUT
    while await bytes_received(session, relay) - before < sent:
        assert time.monotonic() < deadline, "the relay never read the piece"
        await asyncio.sleep(0.01)
    return conn


# -- timeouts ----------------------------------------------------------------------------------

def test_an_idle_kept_alive_connection_is_closed_after_keepalive_timeout(fast):
    with connect(fast) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        assert read_response(conn)[0] == 200
        answered = time.monotonic()
        assert until_closed(conn) == b""
        waited = time.monotonic() - answered
    # Closed by the keep-alive timeout, not by the (shorter) header timeout.
    assert KEEPALIVE - 0.5 <= waited < READ_TIMEOUT - 1, waited


@pytest.mark.parametrize("sent", [b"", b"GET /healthz HTTP/1.1\r\nHost: rel"],
                         ids=["silent", "half-the-headers"])
def test_a_connection_without_complete_headers_is_closed_after_header_timeout(fast, sent):
    before = shed(fast, "header-timeout")
    with connect(fast) as conn:
        started = time.monotonic()
        conn.sendall(sent)
        assert until_closed(conn) == b""
        waited = time.monotonic() - started
    assert HEADERS - 0.2 <= waited < KEEPALIVE - 0.5, waited
    assert shed(fast, "header-timeout") == before + 1
    assert fast.process.stderr.wait_for("sent no complete request headers within 1 s "
                                        r"\(header_timeout\)", READ_TIMEOUT)


def test_every_worker_closes_connections_without_headers(tmp_path):
    relay = Relay(tmp_path, "workers", "--workers", "2", "--header-timeout", str(HEADERS))
    try:
        # SO_REUSEPORT spreads them over both workers; each must close its own.
        conns = [connect(relay) for _ in range(8)]
        started = time.monotonic()
        for conn in conns:
            assert until_closed(conn) == b""
            conn.close()
        assert time.monotonic() - started < HEADERS + 2
        assert shed(relay, "header-timeout") == 8            # summed over the workers
    finally:
        relay.process.close()


async def test_a_json_body_that_stops_half_way_is_refused_after_body_timeout(fast):
    with connect(fast) as conn:
        conn.sendall(b"POST /v1/networks HTTP/1.1\r\nHost: relay\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"tok")
        started = time.monotonic()
        status, body = read_response(conn)
        assert (status, json.loads(body)["error"]) == (408, "request-timeout")
        assert until_closed(conn) == b""
        assert time.monotonic() - started < KEEPALIVE


async def test_a_stalled_upload_is_refused_after_body_timeout_and_resumes(fast):
    data = os.urandom(2 * PIECE)
    async with aiohttp.ClientSession() as session:
        blob = await new_blob(session, fast, len(data))
        with await cut_upload(session, fast, blob, data, PIECE) as conn:
            status, body = read_response(conn)            # the body stopped: refused
            assert (status, json.loads(body)["error"]) == (408, "request-timeout")
            assert until_closed(conn) == b""
        assert shed(fast, "body-timeout") >= 1
        # The lock is released with the refusal: the resume goes through at once.
        assert await resume(session, fast, blob, data, within=0.5) == PIECE


async def test_a_reset_connection_mid_upload_releases_the_blob_at_once(patient):
    data = os.urandom(2 * PIECE)
    async with aiohttp.ClientSession() as session:
        blob = await new_blob(session, patient, len(data))
        reset(await cut_upload(session, patient, blob, data, PIECE))
        # Well before the body timeout (30 s here): the relay noticed the reset itself.
        assert await resume(session, patient, blob, data, within=3.0) == PIECE


async def test_a_dropped_upload_writes_one_short_line_and_no_traceback(patient):
    data = os.urandom(2 * PIECE)
    blobs = []
    async with aiohttp.ClientSession() as session:
        for cut in (reset, socket.socket.close):
            blob = await new_blob(session, patient, len(data))
            cut(await cut_upload(session, patient, blob, data, PIECE))
            await resume(session, patient, blob, data, within=3.0)
            blobs.append(blob)
    stderr = patient.stderr
    assert "Traceback" not in stderr
    assert stderr.count("a client dropped its connection from 127.0.0.1") >= 2
    # No secret or id in any line: not the token, not the blob ids.
    assert patient.token not in stderr and "Bearer" not in stderr
    assert not [blob for blob in blobs if blob in stderr]


def test_an_unparsable_request_gets_a_json_error(fast):
    with connect(fast) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nBad Header\r\n\r\n")
        status, body = read_response(conn)
    assert status == 400
    assert json.loads(body) == {"error": "bad-request", "message": "the request is not valid HTTP"}


# -- too many connections ----------------------------------------------------------------------

async def test_one_member_holds_a_bounded_number_of_push_sockets(fast):
    url = f"{fast.url}{fast.path}/events"
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(url, headers=fast.network.admin.auth)
                   for _ in range(MAX_PUSH_SOCKETS_PER_MEMBER)]
        try:
            async with session.get(url, headers={**fast.network.admin.auth, "Upgrade": "websocket",
                                                 "Connection": "Upgrade",
                                                 "Sec-WebSocket-Version": "13",
                                                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
                                   ) as r:
                assert r.status == 429
                assert (await r.json())["error"] == "too-many-sockets"
                assert r.headers["Retry-After"]
        finally:
            for ws in sockets:
                await ws.close()
        # A closed socket frees its place.
        ws = await session.ws_connect(url, headers=fast.network.admin.auth)
        await ws.close()


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))


@pytest.fixture
def more_files():
    """This test process needs more than 1,100 handles itself."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < SILENT + 200:
        pytest.skip(f"the file-handle limit ({hard}) is too low to hold {SILENT} connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, SILENT + 200), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_client_is_served_while_1100_silent_connections_are_held(tmp_path, more_files):
    # Header and keep-alive timeouts far away: the cap, not a timeout, is what helps here.
    relay = await asyncio.to_thread(Relay, tmp_path, "limited", "--header-timeout", "60",
                                    "--keepalive-timeout", "60", preexec_fn=_limit_files)
    silent = []
    try:
        for _ in range(SILENT):
            silent.append(connect(relay))
        timings = {}
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            async with session.get(f"{relay.url}/healthz") as r:
                assert r.status == 200
            timings["healthz"] = time.monotonic() - started
            started = time.monotonic()
            async with session.get(f"{relay.url}{relay.path}/log",
                                   headers=relay.network.admin.auth) as r:
                assert r.status == 200
            timings["authenticated"] = time.monotonic() - started
        print(f"with {SILENT} silent connections held: {timings}, "
              f"stderr {len(relay.stderr.encode())} bytes")
        assert all(seconds < PROMPT for seconds in timings.values()), timings
        assert len(relay.stderr.encode()) < 4096, relay.stderr[-2000:]
        assert "Traceback" not in relay.stderr
    finally:
        for conn in silent:
            conn.close()
        relay.process.close()


async def test_out_of_file_handles_is_one_line_per_interval_not_a_traceback_each(tmp_path,
                                                                                  more_files):
    # A cap set above what ulimit -n allows: accept() itself runs out of handles.
    # The header timeout long enough for the flood to reach the limit before it frees handles.
    relay = await asyncio.to_thread(Relay, tmp_path, "overcommitted", "--max-connections", "5000",
                                    "--header-timeout", "5", preexec_fn=_limit_files)
    silent = []
    try:
        for _ in range(SILENT):
            silent.append(connect(relay))
        line = r"^could not accept \d+ connection\(s\): out of file handles"
        assert await asyncio.to_thread(relay.process.stderr.wait_for, line, READ_TIMEOUT)
        # Once the header timeout closed the silent ones, the relay serves again.
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{relay.url}/healthz",
                                   timeout=aiohttp.ClientTimeout(total=READ_TIMEOUT)) as r:
                assert r.status == 200
        stderr = relay.stderr
        assert "Traceback" not in stderr
        assert len(stderr.encode()) < 4096, stderr[-2000:]
    finally:
        for conn in silent:
            conn.close()
        relay.process.close()


async def test_at_the_cap_with_every_connection_busy_a_new_one_is_refused_at_once(tmp_path):
    relay = await asyncio.to_thread(Relay, tmp_path, "capped", "--max-connections", "16")
    busy = []
    try:
        for _ in range(16):                            # requests waiting for their body: busy
            conn = connect(relay)
            busy.append(conn)
            conn.sendall(b"POST /v1/networks HTTP/1.1\r\nHost: relay\r\nExpect: 100-continue\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n")
            # "100 Continue" says the relay is handling the request: the connection is busy.
            assert conn.recv(64).startswith(b"HTTP/1.1 100")
        started = time.monotonic()
        with connect(relay) as conn:
            status, body = read_response(conn)
            assert until_closed(conn) == b""
        assert time.monotonic() - started < PROMPT
        assert (status, json.loads(body)["error"]) == (503, "unavailable")
        assert relay.process.stderr.wait_for(r"^refused 1 connection\(s\): 16 are open and busy",
                                             READ_TIMEOUT)
    finally:
        for conn in busy:
            conn.close()
        relay.process.close()
