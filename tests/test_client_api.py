"""Fast in-process tests of the client library (``client.api.Comity``).

The real relay app runs on a loopback port in the test's event loop
(``aiohttp.test_utils.TestServer``); each member is a ``Comity`` with its own
home folder, exactly as a case-management system would use the library.
``COMITY_INSECURE_FAST_KDF=1`` keeps argon2id cheap. Nothing is mocked except
where a test simulates a fault: an interrupted upload, or a malicious relay
(a changed byte written straight into the relay's SQLite log).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from client import attachments
from client.api import Comity
from client.errors import (ClientError, NotAMember, NotFound, RelayMismatch, TrustError, UsageError,
                           WrongPassphrase)
from client.relay_client import UPLOAD_PIECE, RelayClient
from keys import _envelope_shape as envelope_shape
from keys.encoding import b64d, b64e
from keys.identity import IdentityKey
from keys.invite import Invite
from relay.app import make_app
from relay.handlers.networks import creation_token_hash
from relay.settings import RelaySettings
from relay.context import RELAY

PASSPHRASE = "correct horse battery staple"
NETWORK = "refco"
#: how long a creation token made by the tests stays valid
TOKEN_TTL = 3600


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch):
    monkeypatch.setenv("COMITY_INSECURE_FAST_KDF", "1")
    monkeypatch.delenv("COMITY_PASSPHRASE", raising=False)


class Relay:
    """The real relay app on 127.0.0.1, any free port."""

    def __init__(self, server: TestServer, data_dir: Path):
        self.server, self.data_dir = server, data_dir

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def token(self, network: str) -> str:
        """What ``comity-relay token --network NAME`` does."""
        value = b64e(os.urandom(24))
        store = self.server.app[RELAY].store
        await store.add_creation_token(network, creation_token_hash(value), int(time.time()) + TOKEN_TTL)
        return value

    def db(self) -> sqlite3.Connection:
        """A second connection to the relay's database, as a malicious operator would open."""
        conn = sqlite3.connect(self.data_dir / "relay.db", isolation_level=None, timeout=10)
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn


@contextlib.asynccontextmanager
async def running_relay(data_dir: Path) -> AsyncIterator[Relay]:
    server = TestServer(make_app(RelaySettings(data_dir=str(data_dir), access_log=False)),
                        host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield Relay(server, data_dir)
    finally:
        await server.close()


@pytest.fixture
async def relay(tmp_path) -> AsyncIterator[Relay]:
    async with running_relay(tmp_path / "relay") as running:
        yield running


class People:
    """Members, each a ``Comity`` in its own home folder; closed at the end."""

    def __init__(self, root: Path, relay: Relay):
        self.root, self.relay = root, relay
        self.clients: dict[str, Comity] = {}

    def home(self, handle: str) -> Path:
        return self.root / "homes" / handle

    def open(self, handle: str) -> Comity:
        client = Comity.at(self.home(handle))
        self.clients.setdefault(handle, client)
        return client

    async def admin(self, handle: str = "admin", network: str = NETWORK) -> Comity:
        client = self.open(handle)
        client.create_identity(handle, PASSPHRASE)
        await client.create_network(network, self.relay.url, await self.relay.token(network),
                                    name_text="REFCO secretariat", country="sv")
        return client

    async def join(self, admin: Comity, handle: str, *, network: str = NETWORK, role: str = "member",
                   country: str = "GT") -> Comity:
        code = await admin.invite(network, handle, role=role, name_text=handle.upper(), country=country)
        client = self.open(handle)
        enrolled = await client.enroll(code, PASSPHRASE)
        await admin.approve(network, handle, fingerprint=enrolled["fingerprint"])
        return client

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


@pytest.fixture
async def people(tmp_path, relay) -> AsyncIterator[People]:
    crowd = People(tmp_path, relay)
    try:
        yield crowd
    finally:
        await crowd.close()


def write_file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- keystore ------------------------------------------------------------------------------


async def test_wrong_passphrase_is_one_clear_error(people):
    home = people.home("ana.perez")
    first = Comity.at(home)
    first.create_identity("ana.perez", PASSPHRASE)
    await first.close()
    again = Comity.at(home)
    with pytest.raises(WrongPassphrase) as caught:
        again.unlock("not the passphrase")
    assert caught.value.message == "wrong passphrase: the keystore could not be unlocked"
    assert "\n" not in caught.value.message
    assert "not the passphrase" not in repr(caught.value) + str(caught.value)
    again.unlock(PASSPHRASE)
    assert again.handle == "ana.perez"
    await again.close()


async def test_keystore_and_home_are_private(people):
    home = people.home("ana.perez")
    client = Comity.at(home)
    client.create_identity("ana.perez", PASSPHRASE)
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / "keystore.json").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home / "comity.db").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home / "blobs").st_mode) == 0o700
    await client.close()


async def test_keystore_permissions_survive_a_loose_umask(people):
    old = os.umask(0o022)
    try:
        home = people.home("loose")
        client = Comity.at(home)
        client.create_identity("loose", PASSPHRASE)
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in home.iterdir()}
        await client.close()
    finally:
        os.umask(old)
    assert modes["keystore.json"] == 0o600
    assert modes["comity.db"] == 0o600
    assert modes["blobs"] == 0o700


@pytest.mark.parametrize("where", ["ciphertext", "nonce", "salt"])
async def test_tampered_keystore_is_refused(people, where):
    home = people.home("ana.perez")
    client = Comity.at(home)
    client.create_identity("ana.perez", PASSPHRASE)
    await client.close()
    path = home / "keystore.json"
    document = json.loads(path.read_text())
    holder = document["kdf"] if where == "salt" else document
    raw = bytearray(b64d(holder[where]))
    raw[len(raw) // 2] ^= 0x01          # one flipped bit
    holder[where] = b64e(bytes(raw))
    path.write_text(json.dumps(document))
    again = Comity.at(home)
    with pytest.raises(ClientError):
        again.unlock(PASSPHRASE)
    assert again.secrets is None


async def test_damaged_keystore_is_a_clear_error(people):
    home = people.home("ana.perez")
    client = Comity.at(home)
    client.create_identity("ana.perez", PASSPHRASE)
    await client.close()
    (home / "keystore.json").write_text("{not json")
    with pytest.raises(ClientError, match="damaged"):
        Comity.at(home).unlock(PASSPHRASE)


async def test_keystore_made_with_the_test_kdf_is_refused_in_production(people, monkeypatch):
    home = people.home("ana.perez")
    client = Comity.at(home)
    client.create_identity("ana.perez", PASSPHRASE)
    await client.close()
    monkeypatch.delenv("COMITY_INSECURE_FAST_KDF")
    with pytest.raises(ClientError, match="weak key derivation"):
        Comity.at(home).unlock(PASSPHRASE)


async def test_no_secret_in_any_repr(people, relay):
    admin = await people.admin()
    secrets = admin.secrets
    hidden = [PASSPHRASE, b64e(secrets.identity.seed()), secrets.identity.seed().hex(),
              b64e(secrets.local_key), secrets.local_key.hex()]
    hidden += [b64e(k.key.private_bytes()) for k in secrets.encryption_keys]
    code = await admin.invite(NETWORK, "bob.smith")
    invite = Invite.from_code(code)
    hidden += [b64e(invite.secret), invite.secret.hex(), code]
    row, client = admin.relay_for(NETWORK)
    await admin.members(NETWORK)   # authenticated: the relay client holds a bearer token
    for cached in client._tokens.values():       # the bearer token, maybe with its expiry
        hidden += [x for x in (cached if isinstance(cached, tuple) else (cached,)) if isinstance(x, str)]
    assert len(hidden) > 9
    shown = " ".join(repr(x) for x in (admin, secrets, secrets.identity, admin.state, client, invite, row,
                                       *secrets.encryption_keys, *(k.key for k in secrets.encryption_keys)))
    for value in hidden:
        assert value not in shown


async def test_a_second_identity_in_the_same_home_is_refused(people):
    client = Comity.at(people.home("ana.perez"))
    client.create_identity("ana.perez", PASSPHRASE)
    with pytest.raises(ClientError, match="already holds an identity"):
        client.create_identity("other", PASSPHRASE)
    with pytest.raises(UsageError, match="belongs to ana.perez"):
        client.ensure_identity("other", PASSPHRASE)
    await client.close()


@pytest.mark.parametrize("handle", ["AB", "ab", "Ana", "ana perez", "ana/perez", "-ana", "a" * 65, "ana_perez"])
async def test_bad_handles_are_usage_errors(people, handle):
    client = Comity.at(people.home("x"))
    with pytest.raises(UsageError, match="invalid handle"):
        client.create_identity(handle, PASSPHRASE)
    assert not client.has_identity()


# -- networks and membership ---------------------------------------------------------------


async def test_create_invite_enroll_pending_approve_members_remove(people, relay):
    admin = await people.admin()
    assert admin.whoami()["networks"][0]["name"] == NETWORK

    code = await admin.invite(NETWORK, "bob.smith", name_text="Bob Smith", country="hn")
    assert code.startswith("comity-invite-")
    with pytest.raises(UsageError, match="already taken"):
        await admin.invite(NETWORK, "admin")

    bob = people.open("bob.smith")
    enrolled = await bob.enroll(code, PASSPHRASE)
    assert enrolled["network"] == NETWORK and enrolled["handle"] == "bob.smith"
    # Not a member until approved: collecting mail says so.
    with pytest.raises(NotAMember, match="waiting for an administrator"):
        await bob.members(NETWORK)

    pending = await admin.pending(NETWORK)
    assert [(p.handle, p.verified, p.problem, p.fingerprint) for p in pending] == [
        ("bob.smith", True, None, enrolled["fingerprint"])]
    approved = await admin.approve(NETWORK, "bob.smith", fingerprint=enrolled["fingerprint"])
    assert approved == {"handle": "bob.smith", "fingerprint": enrolled["fingerprint"], "role": "member"}
    assert await admin.pending(NETWORK) == []

    members = await bob.members(NETWORK)
    assert [m["handle"] for m in members] == ["admin", "bob.smith"]
    for m in members:
        assert set(m) >= {"handle", "name", "country", "role", "fingerprint", "encryption_key_version"}
    by_handle = {m["handle"]: m for m in members}
    assert by_handle["bob.smith"] == {"handle": "bob.smith", "name": "Bob Smith", "country": "HN",
                                      "role": "member", "fingerprint": enrolled["fingerprint"],
                                      "encryption_key_version": 1}
    assert by_handle["admin"]["role"] == "admin" and by_handle["admin"]["country"] == "SV"
    assert bob.whoami()["networks"][0]["status"] == "member"

    # Only administrators administer.
    with pytest.raises(NotAMember, match="only an administrator"):
        await bob.invite(NETWORK, "carol.diaz")
    with pytest.raises(NotAMember, match="only an administrator"):
        await bob.remove(NETWORK, "admin")

    assert await admin.remove(NETWORK, "bob.smith") == {"handle": "bob.smith", "removed": True}
    assert [m["handle"] for m in await admin.members(NETWORK)] == ["admin"]
    # A fresh client for bob (a new command): the relay refuses it.
    await bob.close()
    bob_again = Comity.at(people.home("bob.smith"))
    people.clients["bob.smith"] = bob_again
    bob_again.unlock(PASSPHRASE)
    with pytest.raises(ClientError) as caught:
        await bob_again.inbox()
    assert "member" in caught.value.message


async def test_approve_refuses_an_unknown_enrollment_and_invites_need_a_valid_handle(people):
    admin = await people.admin()
    with pytest.raises(ClientError, match="no invite for nobody"):
        await admin.approve(NETWORK, "nobody", fingerprint="00" * 20)
    await admin.invite(NETWORK, "late.comer")
    with pytest.raises(ClientError, match="has not enrolled yet"):
        await admin.approve(NETWORK, "late.comer", fingerprint="00" * 20)
    with pytest.raises(UsageError, match="invalid handle"):
        await admin.invite(NETWORK, "Bad Handle")
    with pytest.raises(UsageError, match="country"):
        await admin.invite(NETWORK, "ok.handle", country="Salvador")


async def test_bad_invite_code_is_a_clear_error(people):
    client = people.open("bob.smith")
    with pytest.raises(ClientError) as caught:
        await client.enroll("comity-invite-1.garbage", PASSPHRASE)
    assert caught.value.message and "\n" not in caught.value.message


async def test_unknown_network_is_a_clear_error(people):
    admin = await people.admin()
    with pytest.raises(ClientError, match="unknown network 'nope'"):
        await admin.members("nope")


async def test_enroll_refuses_a_relay_whose_key_is_not_the_invites(people, relay):
    admin = await people.admin()
    row = admin.state.network(NETWORK)
    # An invite that names another relay fingerprint, for the real relay's URL: whoever answers
    # at that address is not the relay the administrator meant.
    forged = Invite.create(relay_url=relay.url, relay_fingerprint=IdentityKey.generate().public.fingerprint(),
                           network=NETWORK, network_hash=b64d(row.genesis_hash), handle="bob.smith",
                           role="member")
    bob = people.open("bob.smith")
    with pytest.raises(RelayMismatch, match="the invite names"):
        await bob.enroll(forged.to_code(), PASSPHRASE)
    assert bob.state.network(NETWORK) is None


async def test_a_member_refuses_a_relay_with_another_key(people, tmp_path):
    """The network's relay URL now answers with another relay's key: every command stops."""
    admin = await people.admin()
    async with running_relay(tmp_path / "impostor") as impostor:
        admin.state.db.execute("UPDATE networks SET relay_url = ? WHERE name = ?", [impostor.url, NETWORK])
        fresh = Comity.at(people.home("admin"))
        try:
            fresh.unlock(PASSPHRASE)
            with pytest.raises(RelayMismatch, match="pinned"):
                await fresh.members(NETWORK)
        finally:
            await fresh.close()


def tamper_relay_log(relay: Relay, seq: int, old: str, new: str) -> str:
    """Change text in the relay's stored log entry ``seq``, as a malicious relay would."""
    with contextlib.closing(relay.db()) as conn:
        (entry,) = conn.execute("SELECT entry FROM log_entries WHERE network = ? AND seq = ?",
                                [NETWORK, seq]).fetchone()
        assert old in entry
        conn.execute("UPDATE log_entries SET entry = ? WHERE network = ? AND seq = ?",
                     [entry.replace(old, new, 1), NETWORK, seq])
    return entry


async def test_a_tampered_log_entry_is_refused(people, relay):
    admin = await people.admin()
    await people.join(admin, "bob.smith", country="HN")
    code = await admin.invite(NETWORK, "carol.diaz")
    tamper_relay_log(relay, 1, '"HN"', '"GT"')     # one byte of bob's add-member entry
    carol = people.open("carol.diaz")
    with pytest.raises(TrustError, match="does not verify"):
        await carol.enroll(code, PASSPHRASE)
    assert carol.state.network(NETWORK) is None


async def test_a_swapped_genesis_is_refused(people, relay):
    admin = await people.admin()
    code = await admin.invite(NETWORK, "carol.diaz")
    tamper_relay_log(relay, 0, '"SV"', '"NI"')
    carol = people.open("carol.diaz")
    with pytest.raises(TrustError, match="does not verify"):
        await carol.enroll(code, PASSPHRASE)


async def test_a_member_refuses_a_tampered_new_entry_and_recovers_when_it_is_restored(people, relay):
    admin = await people.admin()
    bob = await people.join(admin, "bob.smith")
    await people.join(admin, "carol.diaz", country="NI")   # bob has not seen this entry yet
    original = tamper_relay_log(relay, 2, '"NI"', '"CR"')
    await bob.close()
    bob = Comity.at(people.home("bob.smith"))
    people.clients["bob.smith"] = bob
    bob.unlock(PASSPHRASE)
    with pytest.raises(TrustError, match="does not verify"):
        await bob.members(NETWORK)
    with contextlib.closing(relay.db()) as conn:
        conn.execute("UPDATE log_entries SET entry = ? WHERE network = ? AND seq = 2", [original, NETWORK])
    await bob.close()
    bob = Comity.at(people.home("bob.smith"))
    people.clients["bob.smith"] = bob
    bob.unlock(PASSPHRASE)
    assert [m["handle"] for m in await bob.members(NETWORK)] == ["admin", "bob.smith", "carol.diaz"]


# -- messages and attachments ----------------------------------------------------------------


async def test_send_inbox_read_with_attachments(people, tmp_path):
    admin = await people.admin()
    bob = await people.join(admin, "bob.smith")
    carol = await people.join(admin, "carol.diaz")
    dave = await people.join(admin, "dave.jones")
    small = write_file(tmp_path / "out" / "letter.pdf", b"%PDF-1.4 request letter\n")
    big = write_file(tmp_path / "out" / "video.bin", os.urandom(UPLOAD_PIECE + 12345))
    headers = {"type": "request", "subject": "MLA 2026/7", "priority": "urgent", "reference": "REF-7"}
    sent = await admin.send(NETWORK, ["carol.diaz", "bob.smith"], headers, "please find attached",
                            [small, big])
    assert set(sent) == {"id", "relay_receipt"}
    assert sent["relay_receipt"]["message_id"] == sent["id"]
    assert sorted(sent["relay_receipt"]["recipients"]) == ["bob.smith", "carol.diaz"]

    for client in (bob, carol):
        new = await client.inbox()
        assert len(new) == 1
        summary = new[0]
        assert summary == {"id": sent["id"], "network": NETWORK, "from": "admin", "type": "request",
                           "subject": "MLA 2026/7", "priority": "urgent",
                           "received_at": summary["received_at"], "verified": True,
                           "attachments": [{"name": "letter.pdf", "size": small.stat().st_size},
                                           {"name": "video.bin", "size": big.stat().st_size}]}
        assert await client.inbox() == []           # collected once
        assert client.messages() == [summary]       # but still listed
        folder = tmp_path / "saved" / client.handle
        message = client.read(sent["id"], folder)
        assert message["body"] == "please find attached"
        assert message["to"] == ["bob.smith", "carol.diaz"] and message["from"] == "admin"
        assert message["headers"]["reference"] == "REF-7" and message["verified"] is True
        assert [Path(a["saved_to"]).read_bytes() for a in message["attachments"]] == [
            small.read_bytes(), big.read_bytes()]
        assert all(Path(a["saved_to"]).parent == folder for a in message["attachments"])
    # Not a recipient: nothing for dave.
    assert await dave.inbox() == []
    with pytest.raises(NotFound):
        dave.read(sent["id"])


async def test_send_refuses_unknown_and_removed_recipients(people, tmp_path):
    admin = await people.admin()
    await people.join(admin, "bob.smith")
    with pytest.raises(ClientError, match="unknown handle 'nobody'"):
        await admin.send(NETWORK, ["nobody"], {"type": "request", "subject": "s"}, "b")
    await admin.remove(NETWORK, "bob.smith")
    with pytest.raises(ClientError, match="bob.smith was removed"):
        await admin.send(NETWORK, ["bob.smith"], {"type": "request", "subject": "s"}, "b")
    with pytest.raises(ClientError, match="file not found"):
        await admin.send(NETWORK, ["admin"], {"type": "request", "subject": "s"}, "b",
                         [tmp_path / "missing.pdf"])


async def test_a_removed_member_cannot_fetch_and_later_mail_is_not_for_it(people, relay):
    admin = await people.admin()
    bob = await people.join(admin, "bob.smith")
    carol = await people.join(admin, "carol.diaz")
    assert await carol.inbox() == []        # she is in, and holds a fresh bearer token
    await admin.remove(NETWORK, "carol.diaz")
    sent = await bob.send(NETWORK, ["admin", "bob.smith"], {"type": "information", "subject": "after"}, "text")
    with contextlib.closing(relay.db()) as conn:
        (envelope,) = conn.execute("SELECT envelope FROM envelopes WHERE message_id = ?", [sent["id"]]).fetchone()
    assert "carol.diaz" not in envelope and "bob.smith" in envelope
    # Her access stops at once: with the token she holds, and in a new command.
    with pytest.raises(ClientError, match="not an active member"):
        await carol.inbox(NETWORK)
    await carol.close()
    carol = people.clients["carol.diaz"] = Comity.at(people.home("carol.diaz"))
    carol.unlock(PASSPHRASE)
    with pytest.raises(ClientError, match="not an active member") as caught:
        await carol.inbox()
    assert "removed" in (caught.value.hint or caught.value.message)


async def test_mail_from_a_member_removed_before_collection_is_kept_aside(people):
    """Signed before the removal, collected after: refused (docs/decisions.md), with a rejection."""
    admin = await people.admin()
    bob = await people.join(admin, "bob.smith")
    carol = await people.join(admin, "carol.diaz")
    sent = await bob.send(NETWORK, ["carol.diaz"], {"type": "request", "subject": "before"}, "text")
    await admin.remove(NETWORK, "bob.smith")
    new = await carol.inbox()
    assert [(m["id"], m["verified"], m["reason"]) for m in new] == [(sent["id"], False, "removed-member")]
    with pytest.raises(ClientError, match="failed verification"):
        carol.read(sent["id"])


def _rename_first_attachment(monkeypatch, name: str) -> None:
    """Make the sender's client put ``name`` in the manifest, as a hostile member's could."""
    real = attachments.upload

    async def upload(*args, **kwargs):
        entry = await real(*args, **kwargs)
        return {**entry, "name": name}
    monkeypatch.setattr(attachments, "upload", upload)
    # keys refuses such a name when sealing; a hostile client would not ask it.
    monkeypatch.setattr(envelope_shape, "check_manifest", lambda manifest, limit=0: manifest)


@pytest.mark.parametrize("hostile", ["../../evil", "a/b", ".."])
async def test_a_message_naming_a_path_is_kept_aside(people, tmp_path, monkeypatch, hostile):
    admin = await people.admin()
    bob = await people.join(admin, "bob.smith")
    source = write_file(tmp_path / "src" / "x.txt", b"payload")
    with monkeypatch.context() as patch:
        _rename_first_attachment(patch, hostile)
        sent = await admin.send(NETWORK, ["bob.smith"], {"type": "request", "subject": "s"}, "b", [source])
    new = await bob.inbox()
    assert [(m["id"], m["verified"], m["reason"]) for m in new] == [(sent["id"], False, "bad-envelope")]
    with pytest.raises(ClientError, match="failed verification"):
        bob.read(sent["id"], tmp_path / "saved")
    assert not (tmp_path / "saved").exists() and not (tmp_path / "evil").exists()


@pytest.mark.parametrize("hostile, expected", [
    ("../../evil", "_.._evil"),
    ("a/b", "a_b"),
    ("..", "attachment"),
    ("", "attachment"),
    ("/etc/passwd", "_etc_passwd"),
    ("C:\\Windows\\x.dll", "C__Windows_x.dll"),
    (".bashrc", "bashrc"),
    ("bad\u202eexe.pdf", "badexe.pdf"),
    ("tab\tand\x1b[2J.txt", "taband[2J.txt"),
])
async def test_saved_attachment_names_cannot_escape_the_folder(people, tmp_path, monkeypatch, hostile, expected):
    """The client's own check, whatever the manifest says (a second line behind keys')."""
    admin = await people.admin()
    bob = await people.join(admin, "bob.smith")
    monkeypatch.chdir(tmp_path)
    source = write_file(tmp_path / "src" / "x.txt", b"payload")
    sent = await admin.send(NETWORK, ["bob.smith"], {"type": "request", "subject": "s"}, "b", [source])
    await bob.inbox()
    [(_, record)] = bob.state.find("message", sent["id"])
    entry = {**record["signed_payload"]["payload"]["manifest"][0], "name": hostile}
    folder = tmp_path / "deep" / "inside" / "saved"
    before = set(tmp_path.rglob("*"))
    saved = attachments.save(bob.state, entry, folder)
    assert saved.parent == folder and saved.name == expected
    assert saved.read_bytes() == b"payload"
    created = set(tmp_path.rglob("*")) - before
    assert created == {saved, folder, folder.parent, folder.parent.parent}


async def test_saving_never_overwrites_an_existing_file(people, tmp_path):
    admin = await people.admin()
    bob = await people.join(admin, "bob.smith")
    source = write_file(tmp_path / "src" / "request.pdf", b"new content")
    sent = await admin.send(NETWORK, ["bob.smith"], {"type": "request", "subject": "s"}, "b", [source])
    await bob.inbox()
    folder = tmp_path / "saved"
    existing = write_file(folder / "request.pdf", b"precious")
    first = Path(bob.read(sent["id"], folder)["attachments"][0]["saved_to"])
    second = Path(bob.read(sent["id"], folder)["attachments"][0]["saved_to"])
    assert existing.read_bytes() == b"precious"
    assert (first.name, second.name) == ("request (1).pdf", "request (2).pdf")
    assert first.read_bytes() == second.read_bytes() == b"new content"
    assert sorted(p.name for p in folder.iterdir()) == ["request (1).pdf", "request (2).pdf", "request.pdf"]


class Interrupted(Exception):
    """raised from a progress callback to cut an upload"""


def _spy_uploads(monkeypatch) -> list[tuple[int, int]]:
    """Record (offset, length) of every piece the client sends."""
    sent: list[tuple[int, int]] = []
    real = RelayClient.upload_piece

    async def upload_piece(self, network, handle, blob_id, offset, data):
        sent.append((offset, len(data)))
        return await real(self, network, handle, blob_id, offset, data)
    monkeypatch.setattr(RelayClient, "upload_piece", upload_piece)
    return sent


async def test_an_interrupted_upload_resumes_where_it_stopped(people, tmp_path, monkeypatch):
    admin = await people.admin()
    bob = await people.join(admin, "bob.smith")
    data = os.urandom(2 * UPLOAD_PIECE + 4321)
    source = write_file(tmp_path / "src" / "annex.bin", data)
    pieces = _spy_uploads(monkeypatch)

    def cut_after_first_piece(label: str, total: int):
        def advance(n: int) -> None:
            raise Interrupted()
        return advance
    with pytest.raises(Interrupted):
        await admin.send(NETWORK, ["bob.smith"], {"type": "request", "subject": "s"}, "b", [source],
                         progress=cut_after_first_piece)
    assert pieces == [(0, UPLOAD_PIECE)]
    pieces.clear()

    # The same call again (a restarted command): it asks the relay and sends only the rest.
    heads: list[int] = []
    real_offset = RelayClient.blob_offset

    async def blob_offset(self, *args):
        heads.append(await real_offset(self, *args))
        return heads[-1]
    monkeypatch.setattr(RelayClient, "blob_offset", blob_offset)
    shown: list[int] = []

    def count(label: str, total: int):
        return shown.append
    sent = await admin.send(NETWORK, ["bob.smith"], {"type": "request", "subject": "s"}, "b", [source],
                            progress=count)
    assert heads == [UPLOAD_PIECE] and pieces[0][0] == UPLOAD_PIECE
    total = attachments.ciphertext_size(len(data))
    assert sum(n for _, n in pieces) == total - UPLOAD_PIECE
    assert sum(shown) == total
    await bob.inbox()
    saved = bob.read(sent["id"], tmp_path / "saved")["attachments"][0]["saved_to"]
    assert Path(saved).read_bytes() == data


async def test_a_dropped_connection_mid_upload_resumes_within_one_command(people, tmp_path, monkeypatch):
    from client.errors import RelayUnreachable
    admin = await people.admin()
    bob = await people.join(admin, "bob.smith")
    data = os.urandom(2 * UPLOAD_PIECE + 99)
    source = write_file(tmp_path / "src" / "annex.bin", data)
    offsets: list[int] = []
    real = RelayClient.upload_piece
    dropped = []

    async def flaky(self, network, handle, blob_id, offset, piece):
        offsets.append(offset)
        if offset == UPLOAD_PIECE and not dropped:
            # Half the piece reaches the relay, then the connection drops.
            dropped.append(True)
            await real(self, network, handle, blob_id, offset, piece[: len(piece) // 2])
            raise RelayUnreachable("the connection dropped")
        return await real(self, network, handle, blob_id, offset, piece)
    monkeypatch.setattr(RelayClient, "upload_piece", flaky)
    sent = await admin.send(NETWORK, ["bob.smith"], {"type": "request", "subject": "s"}, "b", [source])
    assert offsets[:3] == [0, UPLOAD_PIECE, UPLOAD_PIECE + UPLOAD_PIECE // 2]
    await bob.inbox()
    saved = bob.read(sent["id"], tmp_path / "saved")["attachments"][0]["saved_to"]
    assert Path(saved).read_bytes() == data


async def test_a_damaged_attachment_waits_for_a_retry_and_is_never_signed_rejected(people, relay, tmp_path):
    """A transient fault (a damaged blob at the relay) is retried, not turned into a signed
    rejection; once the blob is whole again, ``retry`` collects, verifies and acknowledges."""
    admin = await people.admin()
    bob = await people.join(admin, "bob.smith")
    source = write_file(tmp_path / "src" / "annex.bin", os.urandom(5000))
    sent = await admin.send(NETWORK, ["bob.smith"], {"type": "request", "subject": "s"}, "b", [source])
    blobs = [p for p in (relay.data_dir / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 1
    good = blobs[0].read_bytes()
    raw = bytearray(good)
    raw[100] ^= 0x01
    blobs[0].write_bytes(bytes(raw))
    assert await bob.inbox() == []
    assert any("attachment-unavailable" in n and "retried automatically" in n for n in bob.notices)
    assert bob.state.find("message", sent["id"]) == []            # nothing stored, nothing signed
    assert not list(bob.state.rows("outbox"))
    [(_, waiting)] = bob.state.find("retry", sent["id"])
    assert waiting["attempts"] == 1 and waiting["next_at"] > bob.now()
    assert await bob.inbox() == []                                # backing off: not even fetched
    assert bob.state.find("retry", sent["id"])[0][1]["attempts"] == 1
    blobs[0].write_bytes(good)                                    # the relay repaired its disk
    assert (await bob.retry(sent["id"]))["status"] == "collected"
    assert bob.read(sent["id"])["verified"] is True
    status = await admin.status(sent["id"])
    assert status["recipients"]["bob.smith"]["acknowledged"] is not None
    assert status["recipients"]["bob.smith"]["rejected"] is None


# -- nothing in clear at rest -------------------------------------------------------------------


def _every_file(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_nothing_under_comity_home_reveals_a_message(people, tmp_path):
    admin = await people.admin()
    bob = await people.join(admin, "bob.smith")
    subject = "SUBJECT-" + os.urandom(8).hex()
    body = "BODY-" + os.urandom(8).hex()
    content = ("ATTACHMENT-" + os.urandom(8).hex()).encode() * 1000
    name = "NAME-" + os.urandom(4).hex() + ".txt"
    source = write_file(tmp_path / "outside" / name, content)
    sent = await admin.send(NETWORK, ["bob.smith"], {"type": "request", "subject": subject}, body, [source])
    await bob.inbox()
    message = bob.read(sent["id"], tmp_path / "outside" / "saved")
    assert message["subject"] == subject
    assert bob.messages()[0]["subject"] == subject
    needles = [subject.encode(), body.encode(), content[:64], name.encode()]
    checked = []
    for phase in ("open", "closed"):
        for handle in ("admin", "bob.smith"):
            files = _every_file(people.home(handle))
            if phase == "open":
                assert any(p.name.endswith("-wal") for p in files), "expected a WAL file to scan"
            for path, data in files.items():
                checked.append(path)
                for needle in needles:
                    assert needle not in data, f"{needle[:20]!r} found in {path}"
        if phase == "open":
            await people.close()
            people.clients.clear()
    assert checked
