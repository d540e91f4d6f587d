"""The real ``comity-relay serve`` as a child process, driven over HTTP on 127.0.0.1.

What an operator relies on and only a real process shows: the start-up
announcement, key files and their modes, a fingerprint stable across restarts,
``comity-relay token`` beside a running relay, submissions that survive
SIGKILL exactly once, draining on SIGTERM, one-line errors with the right
exit status, and HTTPS served directly. Helpers in tests/relay_process_support.py.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import re
import signal
import socket
import ssl
import stat
import subprocess

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from relay.constants import SHUTDOWN_GRACE

from .relay_process_support import (START_TIMEOUT, Network, RelayProcess, clean_env, mint_token,
                                    relay_command, relay_key_of)

#: envelopes in the crash test, and how many concurrent tasks submit them
CRASH_MESSAGES = 240
CRASH_SENDERS = 20
#: SIGKILL once this many receipts came back: decided by counting, not by time
CRASH_AFTER_RECEIPTS = 60
#: the crash test sends faster than a member's default rate limit allows
NO_RATE_LIMIT = ("--rate-per-second", "1000000", "--rate-burst", "1000000")


@pytest.fixture
def relays():
    """Start relays; every one is killed at the end of the test, whatever happened."""
    started: list[RelayProcess] = []

    def start(data_dir, *args, ready: bool = True, **kwargs) -> RelayProcess:
        relay = RelayProcess(data_dir, *args, **kwargs)
        started.append(relay)
        return relay.wait_ready() if ready else relay

    yield start
    for relay in started:
        relay.close()


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _assert_one_error_line(stderr: str, expected: str) -> None:
    """An ``error:`` line (with optional ``hint:`` lines), and no traceback."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr
    assert [line for line in lines if line.startswith("error: ")] == [lines[0]], stderr
    assert all(line.startswith("hint: ") for line in lines[1:]), stderr
    assert expected in lines[0], stderr


# -- a. start-up, key files, fingerprint ---------------------------------------------------------

async def test_serve_announces_url_and_fingerprint_and_keeps_its_key(relays, tmp_path):
    data = tmp_path / "data"
    relay = relays(data)
    assert relay.url.startswith("http://127.0.0.1:") and relay.port > 0
    assert relay.stdout.lines[:2] == [f"listening on {relay.url}",
                                      f"relay fingerprint {relay.fingerprint}"]
    assert _mode(data) == 0o700
    for name in ("relay.key", "token.key", "relay.db"):
        assert _mode(data / name) == 0o600, name
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{relay.url}/healthz",
                               headers={"X-Forwarded-For": "203.0.113.7"}) as r:
            assert r.status == 200 and (await r.json()) == {"status": "ok"}
        async with session.get(f"{relay.url}/v1/relay") as r:
            assert (await r.json())["fingerprint"] == relay.fingerprint
        async with session.get(f"{relay.url}/metrics") as r:
            text = await r.text()
            assert re.search(r"^comity_write_queue_depth \d+$", text, re.M), text
            assert 'comity_requests_total{method="GET",route="/healthz",status="200"} 1' in text

    # No trusted proxy configured: a client cannot choose the address it is logged under.
    logged = relay.stderr.wait_for(r'"route": "/healthz"', START_TIMEOUT)
    assert json.loads(logged.string)["peer"] == "127.0.0.1"

    # One relay per data folder: a second one is refused, the first keeps serving.
    second = relays(data, ready=False)
    assert second.wait_exit() == 1
    _assert_one_error_line(second.stderr.text, f"another comity-relay is already using {data}")

    relay.signal(signal.SIGTERM)
    assert relay.wait_exit() == 0
    key = (data / "relay.key").read_bytes()
    again = relays(data)
    assert again.fingerprint == relay.fingerprint
    assert (data / "relay.key").read_bytes() == key


# -- b. comity-relay token beside a running relay -------------------------------------------------

async def test_token_minted_while_running_creates_the_network_once(relays, tmp_path):
    data = tmp_path / "data"
    relay = relays(data)
    token = mint_token(data, "refco")
    other = mint_token(data, "sahel")
    network = Network("refco", "ana", relay_key=relay_key_of(data))
    async with aiohttp.ClientSession() as session:
        # A token names the network it may create.
        wrong = Network("other-net", "bob", relay_key=relay_key_of(data))
        async with session.post(f"{relay.url}/v1/networks",
                                json={"token": other, "genesis": wrong.genesis}) as r:
            assert r.status == 403 and (await r.json())["error"] == "bad-creation-token"
        async with session.post(f"{relay.url}/v1/networks",
                                json={"token": token, "genesis": network.genesis}) as r:
            assert r.status == 201, await r.text()
            assert (await r.json())["genesis_hash"] == network.genesis_b64()
        rival = Network("refco", "eve", relay_key=relay_key_of(data))
        async with session.post(f"{relay.url}/v1/networks",
                                json={"token": token, "genesis": rival.genesis}) as r:
            assert r.status in (403, 409), await r.text()
        await network.login(session, relay.url, "ana")
        async with session.get(f"{relay.url}/v1/networks/refco/log", headers=network.admin.auth) as r:
            log = await r.json()
        assert log["entries"] == [network.genesis]      # the rival genesis changed nothing
    # The access log names routes, never tokens.
    assert token not in relay.stderr.text and network.admin.token not in relay.stderr.text


async def test_behind_a_trusted_proxy_the_client_address_comes_from_x_forwarded_for(relays, tmp_path):
    relay = relays(tmp_path / "data", "--trusted-proxies", "127.0.0.0/8, ::1")
    async with aiohttp.ClientSession() as session:
        # The client wrote the first address itself; the proxy appended the real one.
        async with session.get(f"{relay.url}/healthz",
                               headers={"X-Forwarded-For": "192.0.2.66, 203.0.113.7"}) as r:
            assert r.status == 200
    match = relay.stderr.wait_for(r'"route": "/healthz"', START_TIMEOUT)
    assert json.loads(match.string)["peer"] == "203.0.113.7"


# -- c. SIGKILL in the middle of concurrent submits -----------------------------------------------

async def _submit(session, url, network, envelope):
    async with session.post(f"{url}/v1/networks/{network.name}/messages",
                            json={"envelope": envelope}, headers=network.admin.auth) as r:
        return r.status, await r.json()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_receipted_submissions_survive_sigkill_exactly_once(relays, tmp_path, workers):
    data = tmp_path / "data"
    relay = relays(data, *NO_RATE_LIMIT, "--workers", workers)
    network = Network("crash-net", "ana", "bob", "carol", relay_key=relay_key_of(data))
    envelopes = [network.seal("ana", ["bob", "carol"], f"message {i}")
                 for i in range(CRASH_MESSAGES)]
    receipts: dict[str, dict] = {}       # id -> the receipt the relay answered with
    unanswered: list[str] = []
    killed = asyncio.Event()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CRASH_SENDERS)) as session:
        await network.create(session, relay.url, mint_token(data, network.name))
        queue = list(envelopes)

        async def sender() -> None:
            while queue:
                envelope = queue.pop()
                try:
                    status, body = await _submit(session, relay.url, network, envelope)
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    unanswered.append(envelope["id"])
                    continue
                assert status == 201, body
                receipts[envelope["id"]] = body["receipt"]
                if len(receipts) >= CRASH_AFTER_RECEIPTS and not killed.is_set():
                    killed.set()
                    relay.kill()          # every process; others are in flight right now

        await asyncio.gather(*(sender() for _ in range(CRASH_SENDERS)))
    assert killed.is_set() and unanswered, "the relay was not killed in the middle"
    assert len(receipts) + len(unanswered) == CRASH_MESSAGES

    relay = relays(data, *NO_RATE_LIMIT, "--workers", workers)
    all_ids = {e["id"] for e in envelopes}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CRASH_SENDERS)) as session:
        # The admin's bearer token still works: the token secret survived too.
        for handle in ("bob", "carol"):
            await network.login(session, relay.url, handle)
        survived = {}
        for handle in ("bob", "carol"):
            ids = await network.mailbox(session, relay.url, handle)
            assert len(ids) == len(set(ids)), f"{handle} has a message twice"
            assert set(receipts) <= set(ids), f"{handle} lost receipted messages"
            assert set(ids) <= all_ids
            survived[handle] = set(ids)
        assert survived["bob"] == survived["carol"]   # a submission commits for all or none

        # Retrying every submit: a receipted one gets its receipt again (200), one that had
        # committed without an answer gets 200, one that never committed is created (201).
        results = await asyncio.gather(*(_submit(session, relay.url, network, e) for e in envelopes))
        created = set()
        for envelope, (status, body) in zip(envelopes, results):
            message_id = envelope["id"]
            if message_id in receipts:
                assert status == 200 and body["receipt"] == receipts[message_id], body
            elif message_id in survived["bob"]:
                assert status == 200, body
            else:
                assert status == 201, body
                created.add(message_id)
        assert created == all_ids - survived["bob"]
        for handle in ("bob", "carol"):
            ids = await network.mailbox(session, relay.url, handle)
            assert sorted(ids) == sorted(all_ids), f"{handle}: missing or duplicated messages"
    assert network.admin.token not in relay.stderr.text


# -- d. SIGTERM drains ----------------------------------------------------------------------------

BLOB_SIZE = 4 * 1024 * 1024


async def _upload_offset(session, url, network, blob) -> int:
    async with session.head(f"{url}/v1/networks/{network.name}/blobs/{blob}",
                            headers=network.admin.auth) as r:
        assert r.status == 200
        return int(r.headers["Upload-Offset"])


async def _wait_until(condition, what: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` (a coroutine function) until it holds; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_sigterm_finishes_an_upload_in_flight_then_exits_0(relays, tmp_path, workers):
    data = tmp_path / "data"
    relay = relays(data, "--workers", workers)
    network = Network("drain-net", "ana", relay_key=relay_key_of(data))
    payload = os.urandom(BLOB_SIZE)
    async with aiohttp.ClientSession() as session:
        await network.create(session, relay.url, mint_token(data, network.name))
        async with session.post(f"{relay.url}/v1/networks/{network.name}/blobs",
                                json={"size": BLOB_SIZE}, headers=network.admin.auth) as r:
            assert r.status == 201, await r.text()
            blob = (await r.json())["blob"]
        # A push socket, which never ends on its own, must not hold the shutdown.
        push = await session.ws_connect(
            f"ws{relay.url[4:]}/v1/networks/{network.name}/events", headers=network.admin.auth)
        assert json.loads(await push.receive_str())["type"] == "hello"

        # A slow client: headers and the first half of the piece, then nothing for now.
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write((f"PATCH /v1/networks/{network.name}/blobs/{blob} HTTP/1.1\r\n"
                      f"Host: 127.0.0.1:{relay.port}\r\n"
                      f"Authorization: Bearer {network.admin.token}\r\n"
                      "Content-Type: application/offset+octet-stream\r\n"
                      f"Upload-Offset: 0\r\nContent-Length: {BLOB_SIZE}\r\n\r\n").encode())
        writer.write(payload[:BLOB_SIZE // 2])
        await writer.drain()

        async def handler_is_writing() -> bool:
            return await _upload_offset(session, relay.url, network, blob) > 0
        await _wait_until(handler_is_writing, "the upload handler stored its first bytes")

        relay.signal(signal.SIGTERM)
        assert relay.stderr.wait_for("^draining and shutting down$", START_TIMEOUT)

        async def refused() -> bool:
            try:
                _, probe = await asyncio.open_connection("127.0.0.1", relay.port)
            except (ConnectionRefusedError, ConnectionResetError):
                # Reset: with workers, a connection can land in the backlog of a listening
                # socket just as its worker closes it; the kernel resets it, a refusal too.
                return True
            probe.close()
            return False
        await _wait_until(refused, "new connections are refused")
        assert relay.proc.poll() is None, "the relay exited with an upload in flight"

        writer.write(payload[BLOB_SIZE // 2:])
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), START_TIMEOUT)
        assert status_line.startswith(b"HTTP/1.1 204"), status_line
        writer.close()
        # Then the push socket gets a proper close frame, and the relay exits 0, well
        # before its grace period (SHUTDOWN_GRACE) would have run out.
        closing = await asyncio.wait_for(push.receive(), START_TIMEOUT)
        assert closing.type == aiohttp.WSMsgType.CLOSE, closing
        assert relay.wait_exit(timeout=SHUTDOWN_GRACE / 2) == 0, relay.output()

    # The drained upload is complete and durable.
    relay = relays(data)
    async with aiohttp.ClientSession() as session:
        await network.login(session, relay.url, "ana")
        async with session.head(f"{relay.url}/v1/networks/{network.name}/blobs/{blob}",
                                headers=network.admin.auth) as r:
            assert r.headers["Upload-Complete"] == "1"
            assert int(r.headers["Upload-Offset"]) == BLOB_SIZE


# -- e. errors: one line, right exit status, no traceback ----------------------------------------

def _serve(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*relay_command(), "serve", *args], capture_output=True, text=True,
                          env=clean_env(), cwd=tmp_path, timeout=START_TIMEOUT)


@pytest.mark.parametrize("args, expected", [
    (["--bogus"], "no such option '--bogus'"),
    (["--port", "http"], "invalid value for '--port'"),
    (["--port", "70000"], "port must be at most 65535"),
    (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
    (["--workers", "0"], "workers must be at least 1"),
])
def test_bad_option_is_one_error_line_and_exit_2(tmp_path, args, expected):
    done = _serve(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    _assert_one_error_line(done.stderr, expected)
    assert not (tmp_path / "comity-data").exists()      # nothing created


@pytest.mark.parametrize("text, expected", [
    ('prot = 8787\n', "unknown setting 'prot'"),
    ('port = "8787"\n', "port must be a whole number"),
    ('access_log = "maybe"\n', "access_log must be true or false"),
    ('port = \n', "is not valid TOML"),
])
def test_invalid_settings_file_is_one_error_line_and_exit_2(tmp_path, text, expected):
    (tmp_path / "relay.toml").write_text(text)
    done = _serve(tmp_path, "--config", "relay.toml")
    assert done.returncode == 2, done.stderr
    _assert_one_error_line(done.stderr, expected)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_port_in_use_is_one_error_line_and_exit_1(tmp_path, workers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve(tmp_path, "--port", str(port), "--data-dir", str(tmp_path / "data"),
                      "--workers", workers)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    _assert_one_error_line(done.stderr, f"error: cannot listen on 127.0.0.1:{port}: ")


# -- f. HTTPS served directly ---------------------------------------------------------------------

def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "comity test relay")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_tls_serves_https_with_the_given_certificate(relays, tmp_path, workers):
    cert, key = _self_signed(tmp_path)
    relay = relays(tmp_path / "data", "--tls-cert", str(cert), "--tls-key", str(key),
                   "--workers", workers)
    assert relay.url.startswith("https://127.0.0.1:")
    trust = ssl.create_default_context(cafile=str(cert))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{relay.url}/healthz", ssl=trust) as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        # Without the test CA the certificate is refused: it really is ours being served.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with session.get(f"{relay.url}/healthz", ssl=ssl.create_default_context()):
                pass


@pytest.mark.parametrize("workers", ["1", "2"])
def test_unreadable_tls_certificate_is_one_error_line_and_exit_1(tmp_path, workers):
    done = _serve(tmp_path, "--data-dir", str(tmp_path / "data"), "--port", "0",
                  "--tls-cert", "missing.pem", "--tls-key", "missing.key", "--workers", workers)
    assert done.returncode == 1, done.stderr
    _assert_one_error_line(done.stderr, "cannot load the TLS certificate missing.pem")

