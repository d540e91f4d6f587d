"""End-to-end: the real ``comity`` and ``comity-relay`` commands, as users run them.

One relay child process (``comity-relay serve --port 0``) serves the module; a
network ``refco`` with an administrator and three focal points (each its own
``COMITY_HOME``) is built once through the CLI: ``network create`` with a token
from ``comity-relay token``, ``invite``, ``enroll``, ``pending --json``,
``approve``. Tests then send, collect, read, remove, tamper and interrupt, and
check what a user or a script would see: stdout data, one ``error:`` line on
stderr, exit statuses, and bytes on disk.

Helpers (relay process, members, waiting with deadlines) are in e2e_support.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from client.relay_client import UPLOAD_PIECE
from keys.stream import ciphertext_size

from .e2e_support import (COMITY, COMMAND_TIMEOUT, Member, RelayProcess, Result, assert_one_error,
                          base_env, create_network, invite, kill, random_file, run_together, same_bytes,
                          wait_for_upload_lock, wait_until)

NETWORK = "refco"
BIG = 50 * 1024 * 1024
#: the fields the issue fixes for each --json output (more are allowed, none may be missing)
SEND_FIELDS = {"id", "relay_receipt"}
INBOX_FIELDS = {"id", "network", "from", "type", "subject", "priority", "received_at", "verified", "attachments"}
READ_FIELDS = {"id", "network", "from", "to", "type", "subject", "body", "headers", "verified", "attachments"}
MEMBER_FIELDS = {"handle", "name", "country", "role", "fingerprint", "encryption_key_version"}
PEOPLE = {"alice": ("Fiscalía General", "GT"), "bob": ("Ministerio Público", "HN"),
          "carol": ("Procuraduría", "NI")}


@dataclass
class World:
    root: Path
    relay: RelayProcess
    admin: Member
    members: dict[str, Member]
    pending: list = field(default_factory=list)
    invites: dict[str, str] = field(default_factory=dict)
    enrolled: dict[str, str] = field(default_factory=dict)

    def member(self, handle: str) -> Member:
        return self.members[handle]

    def fresh(self, handle: str) -> Member:
        """Someone new, with an empty COMITY_HOME."""
        return Member(handle, self.root / "homes" / handle)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("e2e")
    relay = RelayProcess(root / "relay", root / "logs")
    try:
        admin = Member("secretariat", root / "homes" / "secretariat")
        created = create_network(relay, admin, NETWORK, name="REFCO secretariat", country="SV")
        assert created.stdout.startswith(f"created network {NETWORK}\n")
        assert relay.fingerprint in created.stdout
        w = World(root, relay, admin, {h: Member(h, root / "homes" / h) for h in PEOPLE})
        for handle, (name, country) in PEOPLE.items():
            w.invites[handle] = invite(admin, NETWORK, handle, "--name", name, "--country", country)
        # Each on their own machine, so at the same time.
        results = run_together(*((w.member(h), ["enroll", w.invites[h], "--json"]) for h in PEOPLE))
        for handle, result in zip(PEOPLE, results):
            enrolled = result.json()
            assert enrolled["network"] == NETWORK and enrolled["handle"] == handle
            w.enrolled[handle] = enrolled["fingerprint"]
        w.pending = admin.json("pending", "--network", NETWORK)
        for handle in PEOPLE:
            approved = admin.run("approve", "--network", NETWORK, handle,
                                 "--fingerprint", w.enrolled[handle])
            assert approved.stdout.startswith(f"approved {handle} (member)")
        yield w
    finally:
        relay.stop()


@pytest.fixture(scope="module")
def files(world) -> dict[str, Path]:
    folder = world.root / "outgoing"
    folder.mkdir()
    letter = folder / "request letter.pdf"
    letter.write_bytes(b"%PDF-1.4\n" + os.urandom(3000))
    return {"letter": letter, "video": random_file(folder / "hearing-video.bin", BIG)}


def send(member: Member, *args: str, body: str = "body text", ok: bool = True) -> Result:
    return member.run("send", "--network", NETWORK, *args, input=body, ok=ok)


# -- enrollment, members ------------------------------------------------------------------------


def test_enrollment_shows_verified_pending_requests(world):
    assert world.pending["rotations"] == []
    assert sorted(p["handle"] for p in world.pending["enrollments"]) == sorted(PEOPLE)
    for p in world.pending["enrollments"]:
        assert p["verified"] is True and p["problem"] is None
        assert p["fingerprint"] == world.enrolled[p["handle"]]
        assert (p["name"], p["country"]) == PEOPLE[p["handle"]]
        assert p["role"] == "member"
    assert world.admin.json("pending", "--network", NETWORK) == {"enrollments": [], "rotations": []}


def test_invite_prints_the_code_alone(world):
    # the world fixture already checked one line; it is a code that enroll accepts
    assert all(code.startswith("comity-invite-") and " " not in code for code in world.invites.values())


def test_members_json_has_the_contract_fields(world):
    listed = world.member("alice").json("members", "--network", NETWORK)
    assert [m["handle"] for m in listed] == sorted(["secretariat", *PEOPLE])
    for m in listed:
        assert MEMBER_FIELDS <= set(m), set(m)
        assert isinstance(m["encryption_key_version"], int)
    by = {m["handle"]: m for m in listed}
    assert by["secretariat"]["role"] == "admin" and by["secretariat"]["country"] == "SV"
    assert by["secretariat"]["name"] == "REFCO secretariat"
    for handle, (name, country) in PEOPLE.items():
        assert (by[handle]["name"], by[handle]["country"], by[handle]["role"]) == (name, country, "member")
        assert by[handle]["fingerprint"] == world.enrolled[handle]
    human = world.member("bob").run("members", "--network", NETWORK).stdout
    assert "secretariat" in human and world.enrolled["carol"] in human


def test_whoami(world):
    world.member("bob").run("inbox")    # whoami works offline: the first contact after approval
    info = world.member("bob").json("whoami")
    assert info["handle"] == "bob" and info["fingerprint"] == world.enrolled["bob"]
    assert [n["name"] for n in info["networks"]] == [NETWORK]
    assert info["networks"][0]["status"] == "member"


# -- a request with two attachments to two recipients ---------------------------------------------


def test_request_with_two_attachments_reaches_two_recipients(world, files):
    sent = send(world.admin, "--to", "alice", "--to", "bob", "--subject", "MLA 2026/114: bank records",
                "--type", "request", "--priority", "urgent", "--reference", "FGN-114",
                "--attach", str(files["letter"]), "--attach", str(files["video"]), "--json",
                body="Under the treaty, we request the records in the annexes.").json()
    assert SEND_FIELDS <= set(sent)
    receipt = sent["relay_receipt"]
    assert receipt["message_id"] == sent["id"] and receipt["kind"] == "submission-accepted"
    assert sorted(receipt["recipients"]) == ["alice", "bob"] and receipt["sender"] == "secretariat"

    recipients = ("alice", "bob")
    folders = {h: world.root / "saved" / h for h in recipients}
    # Each recipient on their own machine: both collect, then both read, at the same time.
    inboxes = run_together(*((world.member(h), ["inbox", "--json"]) for h in recipients))
    reads = run_together(*((world.member(h), ["read", sent["id"], "--save-attachments", str(folders[h]),
                                              "--json"]) for h in recipients))
    for handle, listed, message in zip(recipients, (r.json() for r in inboxes), (r.json() for r in reads)):
        folder = folders[handle]
        mine = [m for m in listed if m["id"] == sent["id"]]
        assert len(mine) == 1, listed
        summary = mine[0]
        assert INBOX_FIELDS <= set(summary)
        assert summary["network"] == NETWORK and summary["from"] == "secretariat"
        assert (summary["type"], summary["subject"], summary["priority"]) == (
            "request", "MLA 2026/114: bank records", "urgent")
        assert summary["verified"] is True and isinstance(summary["received_at"], int)
        assert summary["attachments"] == [{"name": "request letter.pdf", "size": files["letter"].stat().st_size},
                                          {"name": "hearing-video.bin", "size": BIG}]

        assert READ_FIELDS <= set(message)
        assert message["id"] == sent["id"] and message["network"] == NETWORK
        assert message["from"] == "secretariat" and message["to"] == ["alice", "bob"]
        assert message["body"] == "Under the treaty, we request the records in the annexes."
        assert message["headers"]["reference"] == "FGN-114" and message["verified"] is True
        assert (message["type"], message["subject"]) == ("request", "MLA 2026/114: bank records")
        assert [a["name"] for a in message["attachments"]] == ["request letter.pdf", "hearing-video.bin"]
        for a, original in zip(message["attachments"], (files["letter"], files["video"])):
            assert set(a) >= {"name", "size", "saved_to"}
            assert a["size"] == original.stat().st_size
            assert Path(a["saved_to"]).parent == folder
            assert same_bytes(Path(a["saved_to"]), original)

    human = world.member("alice").run("read", sent["id"]).stdout
    assert "MLA 2026/114: bank records" in human and "Under the treaty" in human

    # At rest, no COMITY_HOME (sender's or recipients') shows the subject, body or attachments.
    with open(files["video"], "rb") as fh:
        fh.seek(BIG // 2)
        video_piece = fh.read(64)
    needles = [b"MLA 2026/114: bank records", b"Under the treaty, we request",
               files["letter"].read_bytes()[100:164], video_piece]
    for member in (world.admin, world.member("alice"), world.member("bob")):
        for path in (p for p in member.home.rglob("*") if p.is_file()):
            data = path.read_bytes()
            assert not any(needle in data for needle in needles), f"plaintext in {path}"

    # carol was not a recipient: nothing for her, and she cannot read it.
    assert all(m["id"] != sent["id"] for m in world.member("carol").json("inbox"))
    assert_one_error(world.member("carol").run("read", sent["id"], ok=False), contains="no message")


def test_body_from_a_file_and_plain_output(world):
    body = world.root / "body.txt"
    body.write_text("Información urgente: audiencia el lunes.\n", encoding="utf-8")
    result = send(world.member("bob"), "--to", "alice", "--subject", "hearing", "--type", "information",
                  "--body-file", str(body))
    message_id = result.stdout.strip()
    assert len(result.stdout.splitlines()) == 1 and message_id
    world.member("alice").run("--quiet", "inbox")
    shown = world.member("alice").json("read", message_id)
    assert shown["body"] == "Información urgente: audiencia el lunes.\n"
    assert shown["type"] == "information" and shown["attachments"] == []


def test_a_progress_bar_shows_on_a_terminal_only(world, files):
    args = ["send", "--network", NETWORK, "--to", "bob", "--subject", "with a bar", "--body", "b",
            "--attach", str(files["letter"])]
    status, shown = world.admin.run_on_terminal(*args)
    assert status == 0, shown
    assert "100.0%" in shown and "request letter.pdf" in shown
    status, shown = world.admin.run_on_terminal("--quiet", *args)
    assert status == 0 and "%" not in shown, shown
    piped = world.admin.run(*args)
    assert "%" not in piped.stderr and "%" not in piped.stdout


# -- refusals ------------------------------------------------------------------------------------


def test_a_relay_with_another_key_is_refused(world):
    impostor = RelayProcess(world.root / "impostor", world.root / "logs")
    try:
        # carol's machine, with her network's relay address now answering with another key
        home = world.root / "homes" / "carol-misdirected"
        shutil.copytree(world.member("carol").home, home)
        with sqlite3.connect(home / "comity.db") as conn:
            conn.execute("UPDATE networks SET relay_url = ? WHERE name = ?", [impostor.url, NETWORK])
        carol = Member("carol", home)
        for args in (["inbox"], ["members", "--network", NETWORK],
                     ["send", "--network", NETWORK, "--to", "alice", "--subject", "s", "--body", "b"]):
            line = assert_one_error(carol.run(*args, ok=False), contains="pinned")
            assert "relay" in line and impostor.url in line
    finally:
        impostor.stop()


def test_a_tampered_log_is_refused(world):
    code = invite(world.admin, NETWORK, "dave", "--country", "CR")
    with world.relay.db() as conn:
        (entry,) = conn.execute("SELECT entry FROM log_entries WHERE network = ? AND seq = 1",
                                [NETWORK]).fetchone()
        assert '"GT"' in entry
        conn.execute("UPDATE log_entries SET entry = ? WHERE network = ? AND seq = 1",
                     [entry.replace('"GT"', '"CR"', 1), NETWORK])
    dave = world.fresh("dave")
    try:
        line = assert_one_error(dave.run("enroll", code, ok=False), contains="does not verify")
        assert NETWORK in line
    finally:
        with world.relay.db() as conn:
            conn.execute("UPDATE log_entries SET entry = ? WHERE network = ? AND seq = 1", [entry, NETWORK])
    # The same code works against the honest log: the refusal was the tampering.
    assert dave.json("enroll", code)["network"] == NETWORK


def test_a_removed_member_cannot_fetch_and_later_mail_is_not_for_it(world):
    carol = world.member("carol")
    carol.run("inbox")           # she has used the network since her approval
    assert world.admin.run("remove", "--network", NETWORK, "carol").stdout.strip() == "removed carol"
    assert "carol" not in [m["handle"] for m in world.admin.json("members", "--network", NETWORK)]

    assert_one_error(carol.run("inbox", ok=False), contains="member")
    assert_one_error(carol.run("inbox", "--network", NETWORK, ok=False), contains="member")
    assert_one_error(carol.run("send", "--network", NETWORK, "--to", "alice", "--subject", "s",
                               "--body", "b", ok=False), contains="member")

    with world.relay.db() as conn:
        before = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    refused = send(world.admin, "--to", "alice", "--to", "carol", "--subject", "after removal", ok=False)
    assert_one_error(refused, contains="carol was removed")
    with world.relay.db() as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == before

    sent = send(world.member("bob"), "--to", "alice", "--subject", "after removal", "--json").json()
    with world.relay.db() as conn:
        (envelope,) = conn.execute("SELECT envelope FROM envelopes WHERE network = ? AND message_id = ?",
                                   [NETWORK, sent["id"]]).fetchone()
    assert '"carol"' not in envelope and '"alice"' in envelope


# -- resumed upload --------------------------------------------------------------------------------


def test_an_upload_killed_mid_way_resumes_on_the_next_run(world, files):
    args = ["send", "--network", NETWORK, "--to", "alice", "--subject", "resumed annex",
            "--body", "the annex follows", "--attach", str(files["video"]), "--json"]
    blobs = world.relay.blob_dir
    already = set(blobs.glob("*.part"))
    process = world.admin.popen(*args)

    def uploading() -> Path | None:
        if process.poll() is not None:
            raise AssertionError(f"comity send ended ({process.returncode}) before it could be interrupted")
        return next((p for p in blobs.glob("*.part") if p not in already and p.stat().st_size > 0), None)
    try:
        part = wait_until(uploading, COMMAND_TIMEOUT, "the upload to start")
    finally:
        kill(process)
    assert process.returncode == -9
    wait_for_upload_lock(part, 30)
    stored = part.stat().st_size
    total = ciphertext_size(BIG)
    assert 0 < stored < total, (stored, total)
    blob_id = part.name.removesuffix(".part")

    log_from = world.relay.log_size()
    sent = world.admin.run(*args).json()
    # Asked where to resume (HEAD), then sent only the missing pieces, every one accepted: the
    # relay takes a piece only at the byte its .part file ends, so this one started at `stored`.
    # The killed PATCH's own line (status 499) may land in the log after log_from: the relay
    # writes it once the dead connection is noticed, which races with the rerun.
    blob_requests = [(r["method"], r["status"]) for r in world.relay.requests(log_from)
                     if r["route"].endswith("/blobs/{id}") and r["status"] != 499]
    missing_pieces = -(-(total - stored) // UPLOAD_PIECE)
    assert blob_requests == [("HEAD", 200)] + [("PATCH", 204)] * missing_pieces, blob_requests
    assert not part.exists() and (blobs / blob_id).stat().st_size == total
    with world.relay.db() as conn:
        assert conn.execute("SELECT message_id, complete FROM blobs WHERE blob_id = ?",
                            [blob_id]).fetchone() == (sent["id"], 1)

    alice = world.member("alice")
    assert [m["subject"] for m in alice.json("inbox") if m["id"] == sent["id"]] == ["resumed annex"]
    saved = alice.json("read", sent["id"], "--save-attachments", str(world.root / "resumed"))
    assert same_bytes(Path(saved["attachments"][0]["saved_to"]), files["video"])


# -- errors: one line, the right status -------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_relay_unreachable(world):
    lost = world.fresh("lost")
    result = lost.run("network", "create", "nowhere", "--relay", f"http://127.0.0.1:{_closed_port()}",
                      "--token", "x" * 32, "--handle", "lost", ok=False)
    assert_one_error(result, contains="cannot reach the relay")


def test_wrong_passphrase(world):
    alice = world.member("alice")
    result = alice.run("whoami", ok=False, env=base_env(COMITY_HOME=str(alice.home),
                                                         COMITY_PASSPHRASE="not it"))
    assert_one_error(result, contains="wrong passphrase")


def test_passphrase_file(world):
    alice = world.member("alice")
    secret = world.root / "alice-passphrase"
    secret.write_text(alice.passphrase + "\n")
    env = base_env(COMITY_HOME=str(alice.home))
    assert Member("alice", alice.home).run("--passphrase-file", str(secret), "whoami", env=env).status == 0
    result = alice.run("whoami", ok=False, env=env)      # no passphrase at all, and no terminal
    assert_one_error(result, 2, contains="no passphrase")


def test_unknown_handle(world):
    result = send(world.admin, "--to", "nobody", "--subject", "s", ok=False)
    assert_one_error(result, contains="unknown handle 'nobody'")


def test_unknown_network(world):
    assert_one_error(world.admin.run("members", "--network", "nope", ok=False), contains="unknown network")


@pytest.mark.parametrize("code", ["not-an-invite", "comity-invite-1.AAAA"])
def test_bad_invite_code(world, code):
    assert_one_error(world.fresh("newcomer").run("enroll", code, ok=False))


def test_a_mistyped_invite_code_is_refused(world):
    code = world.invites["alice"]
    i = len(code) // 2
    typo = code[:i] + ("A" if code[i] != "A" else "B") + code[i + 1:]
    assert_one_error(world.fresh("typist").run("enroll", typo, ok=False))


def test_file_not_found(world):
    missing = world.root / "no such file.pdf"
    assert_one_error(send(world.admin, "--to", "alice", "--subject", "s", "--attach", str(missing), ok=False),
                     contains="file not found")
    assert_one_error(world.admin.run("send", "--network", NETWORK, "--to", "alice", "--subject", "s",
                                     "--body-file", str(missing), ok=False), contains="file not found")


@pytest.mark.parametrize("args", [
    ["send", "--network", NETWORK, "--subject", "s", "--body", "b"],       # no --to
    ["invite", "--network", NETWORK, "--handle", "x.y", "--role", "king"],
    ["network", "create", "x"],
    ["frobnicate"],
    ["read"],
])
def test_usage_errors_exit_2(world, args):
    assert_one_error(world.admin.run(*args, ok=False), 2)


def test_invalid_handle_is_a_usage_error(world):
    result = world.fresh("bad").run("network", "create", "other", "--relay", world.relay.url,
                                    "--token", "x" * 32, "--handle", "Not Valid", ok=False)
    assert_one_error(result, 2, contains="invalid handle")


# -- the demo --------------------------------------------------------------------------------------


def test_demo_runs_and_leaves_nothing_behind(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    home = tmp_path / "untouched-home"
    env = base_env(TMPDIR=str(scratch), COMITY_HOME=str(home))
    done = subprocess.run(COMITY + ["demo"], capture_output=True, text=True, env=env, timeout=COMMAND_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "identical to what was sent: True" in done.stdout
    assert list(scratch.iterdir()) == [], "the demo left files in its temporary folder"
    assert not home.exists(), "the demo touched COMITY_HOME"
