"""A real relay in the test's event loop, and members that talk to it over HTTP.

Nothing of the relay is mocked: ``start_relay`` runs ``relay.app.make_app`` on
an ephemeral loopback port and tests speak HTTP to it. The only knobs are the
ones the app itself offers: the settings, and an injected clock (``Clock``)
that tests move forward to expire challenges, invites, messages and blobs.

Members are built with the ``keys`` API and join a network the way a real
client does: the admin registers an invite, the invitee submits an
enrollment request with the invite MAC, the admin checks it and signs the
``add-member`` entry, and the new member authenticates with a signed
challenge. ``Network`` keeps its own ``LogVerifier`` copy of the log, as a
client would, to build the next entries and to seal messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from keys import envelope as envelope_mod
from keys.constants import DAY
from keys.encoding import b64d, b64e
from keys.hpke import EncryptionKey, make_key_record
from keys.identity import IdentityKey
from keys.invite import Invite, make_enrollment_request, verify_enrollment_request
from keys.log import (LogVerifier, default_policy, entry_hash, make_entry, make_genesis,
                      member_record)
from keys.stream import encrypt_stream, generate_key
from relay.app import make_app
from relay.auth import AUTH_PURPOSE, auth_statement
from relay.constants import TOKEN_TTL
from relay.handlers.networks import creation_token_hash
from relay.settings import RelaySettings
from relay.context import RELAY

#: encryption keys made by the helpers stay valid this long (tests move the clock by days)
KEY_LIFETIME = 365 * DAY


class Clock:
    """The relay's clock, moved by the test (``relay.app.make_app(clock=...)``)."""

    def __init__(self, start: float | None = None):
        self.now = float(time.time() if start is None else start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def seconds(self) -> int:
        return int(self.now)


@dataclass
class Reply:
    """An HTTP answer, read completely."""

    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str | None:
        """The wire error code of a refusal (None for a success)."""
        if self.status < 400:
            return None
        return self.json()["error"]

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body[:300]!r})"


class RunningRelay:
    """A started relay: its app (for white-box checks), URL, clock and an HTTP session."""

    def __init__(self, app, server: TestServer, session: aiohttp.ClientSession, clock: Clock,
                 data_dir: Path):
        self.app, self.server, self.session = app, server, session
        self.clock, self.data_dir = clock, data_dir

    @property
    def state(self):
        """The app's ``relay.context.Relay``."""
        return self.app[RELAY]

    @property
    def store(self):
        return self.state.store

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def url(self, path: str) -> str:
        return self.base_url + path

    def now(self) -> int:
        return self.clock.seconds()

    async def request(self, method: str, path: str, *, member: "Member | None" = None,
                      json_body: Any = None, data: bytes | None = None,
                      headers: dict | None = None) -> Reply:
        """One request; ``member`` adds its bearer token, ``json_body`` is sent as JSON."""
        all_headers = dict(headers or {})
        if member is not None:
            all_headers.setdefault("Authorization", f"Bearer {member.token}")
        if json_body is not None:
            data = json.dumps(json_body).encode("utf-8")
            all_headers.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.url(path), data=data,
                                        headers=all_headers, allow_redirects=False) as response:
            return Reply(response.status, response.headers, await response.read())

    async def get(self, path: str, **kw) -> Reply:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw) -> Reply:
        return await self.request("POST", path, json_body=body, **kw)

    async def creation_token(self, network: str, *, ttl: int = DAY) -> str:
        """What `comity-relay token --network NAME` does: store the hash, show the token."""
        token = b64e(os.urandom(24))
        await self.store.add_creation_token(network, creation_token_hash(token), self.now() + ttl)
        return token

    def files(self) -> dict[str, bytes]:
        """Every file under the data folder and its content (relative path -> bytes), but -shm."""
        out = {}
        for path in sorted(self.data_dir.rglob("*")):
            # -shm is SQLite's shared-memory index, rewritten by any reader or checkpoint: not data.
            if path.is_file() and not path.name.endswith("-shm"):
                out[str(path.relative_to(self.data_dir))] = path.read_bytes()
        return out

    async def table_counts(self) -> dict[str, int]:
        """Rows of every table (to prove a refused request stored nothing)."""
        def op(db):
            names = [r[0] for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%'")]
            return {n: db.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
        return await self.store.db.read(op)

    async def audit_events(self) -> list[tuple[str, str | None, str | None, dict]]:
        def op(db):
            return [(r[0], r[1], r[2], json.loads(r[3])) for r in db.execute(
                "SELECT event, network, handle, detail FROM audit ORDER BY id")]
        return await self.store.db.read(op)

    async def sweep(self) -> dict:
        from relay.sweeper import sweep_once
        return await sweep_once(self.state)


@contextlib.asynccontextmanager
async def start_relay(data_dir: Path, *, clock: Clock | None = None,
                      **settings: Any) -> AsyncIterator[RunningRelay]:
    """Start the real app on 127.0.0.1, any free port; stop it (and its store) after."""
    clock = clock or Clock()
    settings.setdefault("access_log", False)
    app = make_app(RelaySettings(data_dir=str(data_dir), **settings), clock=clock)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield RunningRelay(app, server, session, clock, Path(data_dir))
    finally:
        await server.close()


@pytest.fixture
async def relay(tmp_path) -> AsyncIterator[RunningRelay]:
    """A started relay with its data in ``tmp_path / "relay"``."""
    async with start_relay(tmp_path / "relay") as running:
        yield running


# -- members ---------------------------------------------------------------------------------

@dataclass(repr=False)
class Member:
    """One person's keys (as their client holds them) and their current bearer token."""

    handle: str
    identity: IdentityKey
    encryption: EncryptionKey
    key_record: dict
    token: str | None = None
    keys_by_version: dict[int, EncryptionKey] = field(default_factory=dict)

    @classmethod
    def generate(cls, handle: str, now: int, *, version: int = 1) -> "Member":
        identity = IdentityKey.generate()
        encryption = EncryptionKey.generate()
        record = make_key_record(identity, encryption.public, version=version, created=now,
                                 not_after=now + KEY_LIFETIME)
        return cls(handle, identity, encryption, record, None, {version: encryption})

    def record(self, role: str = "member", name: str | None = None) -> dict:
        """The member record of a genesis or add-member entry."""
        return member_record(self.identity.public, self.key_record, handle=self.handle,
                             name=name or self.handle.title(), country="FR",
                             organisation="Test Ministry of Justice", role=role)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def __repr__(self) -> str:
        return f"Member({self.handle!r})"


async def until(condition, what: str, timeout: float = 10.0) -> None:
    """Check ``condition()`` every 10 ms, letting the event loop run, until it holds;
    fail after ``timeout`` seconds naming ``what`` was awaited."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.01)


async def authenticate(relay: RunningRelay, network: "Network", member: Member) -> str:
    """Challenge, signature by the identity key, token; stores and returns the token."""
    reply = await relay.post(f"/v1/networks/{network.name}/auth/challenge",
                             {"handle": member.handle})
    assert reply.status == 200, reply
    challenge = reply.json()["challenge"]
    reply = await relay.post(f"/v1/networks/{network.name}/auth/token",
                             sign_challenge(relay, network, member, challenge))
    assert reply.status == 200, reply
    member.token = reply.json()["token"]
    return member.token


def sign_challenge(relay: RunningRelay, network: "Network", member: Member, challenge: str,
                   *, identity: IdentityKey | None = None) -> dict:
    """The body of ``POST .../auth/token`` for ``challenge``."""
    statement = auth_statement(b64d(challenge), member.handle, network.genesis_hash,
                               relay.state.key.public.raw)
    signer = identity or member.identity
    return {"handle": member.handle, "challenge": challenge,
            "signature": signer.sign_b64(AUTH_PURPOSE, statement)}


# -- networks --------------------------------------------------------------------------------

class Network:
    """A network on the relay, seen from its members' side (a client's verified log copy)."""

    def __init__(self, relay: RunningRelay, genesis: dict, admin: Member):
        self.relay = relay
        self.genesis = genesis
        self.genesis_hash = entry_hash(genesis)
        self.verifier = LogVerifier(self.genesis_hash)
        self.verifier.append(genesis)
        self.entries = [genesis]
        self.admin = admin
        self.members: dict[str, Member] = {admin.handle: admin}

    @property
    def name(self) -> str:
        return self.verifier.roster.network

    @property
    def roster(self):
        return self.verifier.roster

    @property
    def path(self) -> str:
        return f"/v1/networks/{self.name}"

    async def advance(self, seconds: float) -> None:
        """Move the relay's clock; the active members' tokens are renewed if they expired."""
        self.relay.clock.advance(seconds)
        if seconds >= TOKEN_TTL:
            for handle, member in self.members.items():
                if member.token is not None and self.roster.member(handle).active:
                    await authenticate(self.relay, self, member)

    # log entries

    def entry(self, kind: str, body: dict, signers: Iterable[IdentityKey], *,
              seq: int | None = None, prev: bytes | None = None, time: int | None = None) -> dict:
        """A signed entry following our copy of the log (overrides make broken ones)."""
        return make_entry(self.verifier.hash_at(self.verifier.seq) if prev is None else prev,
                          self.verifier.seq + 1 if seq is None else seq, kind, body,
                          self.relay.now() if time is None else time, signers)

    async def append(self, entry: dict, *, by: Member | None = None) -> Reply:
        """POST the entry; when the relay accepts it, our copy of the log takes it too."""
        reply = await self.relay.post(self.path + "/log", {"entry": entry}, member=by or self.admin)
        if reply.status == 201:
            self.verifier.append(entry)
            self.entries.append(entry)
        return reply

    async def read_log(self, member: Member | None = None, *, since: int | None = None,
                       limit: int | None = None, headers: dict | None = None) -> Reply:
        query = []
        if since is not None:
            query.append(f"since={since}")
        if limit is not None:
            query.append(f"limit={limit}")
        path = self.path + "/log" + ("?" + "&".join(query) if query else "")
        return await self.relay.get(path, member=member, headers=headers)

    # enrollment

    async def invite(self, handle: str, role: str = "member", *, by: Member | None = None,
                     expires: int | None = None) -> Invite:
        """The admin makes an invite code and registers its id at the relay."""
        invite = Invite.create(relay_url=self.relay.base_url,
                               relay_fingerprint=self.relay.state.key.public.fingerprint(),
                               network=self.name, network_hash=self.genesis_hash,
                               handle=handle, role=role)
        body = {"invite_id": b64e(invite.invite_id), "handle": handle, "role": role}
        if expires is not None:
            body["expires"] = expires
        reply = await self.relay.post(self.path + "/invites", body, member=by or self.admin)
        assert reply.status == 201, reply
        return invite

    async def enroll(self, invite: Invite) -> tuple[Member, Reply]:
        """The invitee (who holds only the code) generates keys and submits them."""
        code = Invite.from_code(invite.to_code())
        newcomer = Member.generate(code.handle, self.relay.now())
        request = make_enrollment_request(code, newcomer.identity, newcomer.key_record)
        reply = await self.relay.post(self.path + "/enrollments", {"request": request})
        return newcomer, reply

    async def approve(self, invite: Invite, newcomer: Member, *, by: Member | None = None) -> Reply:
        """The admin finds the request, checks its MAC and signs add-member."""
        admin = by or self.admin
        reply = await self.relay.get(self.path + "/enrollments", member=admin)
        assert reply.status == 200, reply
        pending = [e for e in reply.json()["enrollments"]
                   if e["invite_id"] == b64e(invite.invite_id)]
        assert len(pending) == 1, reply
        identity, _ = verify_enrollment_request(pending[0]["request"], invite)
        assert identity == newcomer.identity.public
        entry = self.entry("add-member", {"member": newcomer.record(invite.role)}, [admin.identity])
        return await self.append(entry, by=admin)

    async def add_member(self, handle: str, role: str = "member") -> Member:
        """Invite, enroll, approve, authenticate: a member ready to talk to the relay."""
        invite = await self.invite(handle, role)
        newcomer, reply = await self.enroll(invite)
        assert reply.status == 202, reply
        reply = await self.approve(invite, newcomer)
        assert reply.status == 201, reply
        self.members[handle] = newcomer
        await authenticate(self.relay, self, newcomer)
        return newcomer

    async def remove(self, handle: str, *, by: Member | None = None) -> Reply:
        admin = by or self.admin
        reply = await self.append(self.entry("remove-member", {"handle": handle},
                                             [admin.identity]), by=admin)
        assert reply.status == 201, reply
        return reply

    # messages

    def seal(self, sender: Member, recipients: Iterable[str], body: str = "hello",
             *, subject: str = "test message", manifest: Iterable[dict] = ()) -> tuple[dict, dict]:
        return envelope_mod.seal(sender.identity, sender.handle, self.roster, list(recipients),
                                 {"type": "information", "subject": subject}, body,
                                 list(manifest), created=self.relay.now())

    async def submit(self, sender: Member, envelope: dict) -> Reply:
        return await self.relay.post(self.path + "/messages", {"envelope": envelope},
                                     member=sender)

    async def send(self, sender: Member, recipients: Iterable[str], body: str = "hello",
                   **kw) -> tuple[dict, dict]:
        """Seal and submit; returns the envelope and the signed submission receipt."""
        envelope, _ = self.seal(sender, recipients, body, **kw)
        reply = await self.submit(sender, envelope)
        assert reply.status == 201, reply
        return envelope, reply.json()["receipt"]

    def open(self, member: Member, envelope: dict):
        return envelope_mod.open(envelope, recipient_handle=member.handle,
                                 decryption_keys=member.keys_by_version,
                                 roster_at=self.verifier.roster_at, latest=self.roster)

    # attachments

    async def upload(self, owner: Member, data: bytes, *, piece: int = 64 * 1024) -> str:
        """Create a blob of ``len(data)`` bytes and upload it in pieces; returns its id."""
        reply = await self.relay.post(self.path + "/blobs", {"size": len(data)}, member=owner)
        assert reply.status == 201, reply
        blob = reply.json()["blob"]
        for offset in range(0, len(data), piece) or [0]:
            reply = await self.patch_blob(owner, blob, offset, data[offset:offset + piece])
            assert reply.status == 204, reply
        return blob

    async def patch_blob(self, owner: Member, blob: str, offset: int, data: bytes) -> Reply:
        return await self.relay.request(
            "PATCH", f"{self.path}/blobs/{blob}", member=owner, data=data,
            headers={"Upload-Offset": str(offset),
                     "Content-Type": "application/offset+octet-stream"})

    async def attach(self, owner: Member, plaintext: bytes, name: str = "evidence.pdf") -> dict:
        """Encrypt ``plaintext`` as an attachment stream, upload it; the manifest entry."""
        key = generate_key()
        out = io.BytesIO()
        result = encrypt_stream(key, io.BytesIO(plaintext), out)
        blob = await self.upload(owner, out.getvalue())
        return {"name": name, "media_type": "application/pdf", "size": result.plaintext_size,
                "ciphertext_size": result.ciphertext_size, "blob": blob, "key": b64e(key),
                "hash": b64e(result.ciphertext_sha256)}


async def create_network(relay: RunningRelay, name: str = "refco", *, admin: str = "ana",
                         policy: dict | None = None) -> Network:
    """Mint a creation token, post the genesis entry, authenticate the first admin."""
    first = Member.generate(admin, relay.now())
    genesis = make_genesis(first.identity, name, first.record("admin"),
                           policy or default_policy(), relay.now(), relay_key=relay.state.key.public)
    token = await relay.creation_token(name)
    reply = await relay.post("/v1/networks", {"token": token, "genesis": genesis})
    assert reply.status == 201, reply
    network = Network(relay, genesis, first)
    await authenticate(relay, network, first)
    return network


@pytest.fixture
async def trio(relay) -> "Network":
    """A network with ana (admin), bob and carol."""
    network = await create_network(relay)
    await network.add_member("bob")
    await network.add_member("carol")
    return network


def members(network: "Network") -> tuple["Member", "Member", "Member"]:
    """ana, bob and carol of ``trio``."""
    return network.admin, network.members["bob"], network.members["carol"]
