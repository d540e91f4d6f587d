"""No secret reaches the relay's log, whatever a client sends (issue 10, item 2).

One hostile run against the real ``comity-relay serve`` (access log on, its stderr in a
file): a network made with the real ``comity`` commands, then requests that carry every kind
of secret the relay handles (a valid bearer token, an auth challenge, a pending invite id, the
id of a stored blob) in every place a client can put them: headers good and malformed, paths,
query strings, bodies, cut uploads. Afterwards the whole log is searched for each secret and
for tracebacks.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct

import aiohttp
import pytest

from keys.encoding import b64e
from keys.identity import parse_fingerprint
from keys.invite import Invite
from relay.auth import Authenticator
from relay.relaykey import load_token_secret

from .e2e_support import RelayProcess, make_network, invite, random_file

NETWORK = "refco"


@pytest.fixture
def hostile_world(tmp_path):
    relay = RelayProcess(tmp_path / "relay", tmp_path / "logs")
    try:
        people = make_network(relay.url, relay, tmp_path, ["alice", "bob"], network=NETWORK)
        yield relay, people, tmp_path
    finally:
        relay.stop()


def _secrets(relay: RelayProcess, people, tmp_path) -> dict[str, str]:
    """Every kind of secret the relay handles, real ones the relay would honour."""
    alice = people["alice"]
    attachment = random_file(tmp_path / "exhibit.bin", 200_000)
    alice.run("send", "--network", NETWORK, "--to", "bob", "--subject", "exhibit",
              "--body", "see attached", "--attach", str(attachment))
    with relay.db() as db:
        blob_id = db.execute("SELECT blob_id FROM blobs").fetchone()[0]
    code = invite(people["secretariat"], NETWORK, "carol")
    invite_id = b64e(Invite.from_code(code).invite_id)
    fingerprint = parse_fingerprint(alice.json("whoami")["fingerprint"])
    token, _ = Authenticator(load_token_secret(relay.data_dir)).issue_token(
        NETWORK, "alice", fingerprint)
    return {"token": token, "blob": blob_id, "invite": invite_id, "invite code": code}


def _raw(port: int, data: bytes, *, reset: bool = False) -> None:
    """Send raw bytes; read what comes back (or reset the connection after sending)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        if reset:   # SO_LINGER 0: close() sends RST, as a cut network or killed client does
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.sendall(data)
        if not reset:
            try:
                conn.recv(65536)
            except OSError:
                pass


async def _hostile_requests(url: str, port: int, secret: dict[str, str], challenge_of) -> None:
    token, blob, invite_id = secret["token"], secret["blob"], secret["invite"]
    net = f"/v1/networks/{NETWORK}"
    bearer = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        async def send(method, path, **kw):
            async with session.request(method, url + path, **kw) as reply:
                await reply.read()
                assert reply.status < 500, (method, path, reply.status)

        challenge = await challenge_of(session)
        secret["challenge"] = challenge
        for method, path in [("GET", f"{net}/inbox"), ("GET", f"{net}/log"),
                             ("HEAD", f"{net}/blobs/{blob}"), ("GET", f"{net}/blobs/{blob}"),
                             ("GET", f"{net}/messages/{token}"), ("GET", f"/v1/networks/{token}/log"),
                             ("GET", f"{net}/blobs/{blob}x"), ("DELETE", f"{net}/blobs/{blob}"),
                             ("GET", f"{net}/inbox?since={token}"), ("GET", f"{net}/log?limit={blob}"),
                             ("GET", f"/nowhere/{token}/{blob}/{invite_id}")]:
            await send(method, path, headers=bearer)
            await send(method, path, headers={"Authorization": f"Bearer {token}x"})
        await send("GET", f"{net}/log", headers={"Comity-Invite": invite_id})
        await send("GET", f"{net}/log", headers={"Comity-Invite": invite_id + "'--"})
        await send("POST", f"{net}/auth/token", json={"handle": "alice", "challenge": challenge,
                                                      "signature": "A" * 86})
        await send("POST", f"{net}/auth/token", json={"handle": "mallory", "challenge": challenge,
                                                      "signature": token})
        await send("POST", f"{net}/enroll", json={"invite_id": invite_id, "bogus": token})
        await send("POST", f"{net}/blobs", headers=bearer, data=b"{" + token.encode())
        await send("PATCH", f"{net}/blobs/{blob}", headers={**bearer, "Upload-Offset": token})
        await send("POST", "/v1/networks", json={"token": token, "genesis": {"kind": blob}})
        await send("GET", f"{net}/events", headers=bearer)
        async with session.post(f"{url}{net}/blobs", headers=bearer, json={"size": 1 << 20}) as reply:
            assert reply.status == 201
            secret["new blob"] = fresh = (await reply.json())["blob"]
    secret_bytes = token.encode()
    request_line = f"GET {net}/inbox HTTP/1.1\r\nHost: x\r\n".encode()
    for raw in [
        request_line + b"Authorization: Bearer " + secret_bytes + b"\x00\r\n\r\n",
        request_line + b"Authorization: Bearer " + secret_bytes + b"\r\nno colon " + secret_bytes + b"\r\n\r\n",
        request_line + b"Comity-Invite: " + invite_id.encode() + b"\x01\r\n\r\n",
        f"GET {net}/blobs/{blob}\x00 HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        b"GET /" + b"a" * 9000 + secret_bytes + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        request_line + b"X-Long: " + b"b" * 9000 + b"\r\nAuthorization: Bearer " + secret_bytes + b"\r\n\r\n",
        f"POST {net}/auth/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        f"zz\r\n{secret['challenge']}\r\n".encode(),
        f"{token} {blob} HTTP/1.1\r\n\r\n".encode(),
    ]:
        await asyncio.to_thread(_raw, port, raw)
    # Uploads cut mid-body, by a reset and by a plain close: the documented resumable path.
    piece = b"\0" * 65536
    head = (f"PATCH {net}/blobs/{fresh} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {10 * len(piece)}\r\n\r\n").encode()
    await asyncio.to_thread(_raw, port, head + piece, reset=True)
    await asyncio.to_thread(_raw, port, head.replace(b"Offset: 0", b"Offset: 65536") + piece,
                            reset=True)


def test_no_secret_and_no_traceback_in_the_whole_log_after_a_hostile_run(hostile_world):
    relay, people, tmp_path = hostile_world
    secret = _secrets(relay, people, tmp_path)

    async def challenge_of(session):
        async with session.post(f"{relay.url}/v1/networks/{NETWORK}/auth/challenge",
                                json={"handle": "alice"}) as reply:
            return (await reply.json())["challenge"]

    asyncio.run(_hostile_requests(relay.url, relay.port, secret, challenge_of))
    # The relay is still well: a real member's command works after all that.
    people["bob"].run("inbox", "--network", NETWORK)
    relay.stop()
    log = relay.log_path.read_text(errors="replace")
    assert "\"route\"" in log, "the access log was on: it must have lines"
    for kind, value in secret.items():
        for fragment in {value, value[:16], value[-16:]}:
            assert fragment not in log, f"the {kind} (or part of it) is in the relay's log"
    assert "Traceback" not in log
    # Every access-log line is JSON naming a route template, never a raw path.
    for line in log.splitlines():
        if line.startswith("{"):
            assert "route" in json.loads(line)
