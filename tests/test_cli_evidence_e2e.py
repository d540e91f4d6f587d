"""End-to-end, issue 5: receipts, status, watch, key rotation and evidence bundles.

The real ``comity-relay serve`` and ``comity`` commands as child processes,
each member with its own ``COMITY_HOME`` (helpers in e2e_support.py). One
relay and one network serve the module: an administrator (secretariat) and
four members, each scenario checking only what its own messages did:

- alice and bob receive, collect and acknowledge (status, a tampered copy,
  ``--no-ack``, the exported bundle), and send to carol;
- carol runs ``comity watch --exec`` across a relay crash and a SIGKILL;
- dave rotates his encryption key, then (the next test, in file order) his
  identity key.

Nothing sleeps for a fixed time: every wait is for a file, an output line or
a process exit, with a deadline.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .e2e_support import (COMITY, COMMAND_TIMEOUT, Member, RelayProcess, Result, approve,
                          assert_one_error, base_env, create_network, invite, kill_group,
                          run_together, wait_until)

NETWORK = "ejn-pilot"
PEOPLE = ("alice", "bob", "carol", "dave")
#: the per-recipient fields issue 5 fixes for ``comity status --json`` (more are allowed)
STATUS_FIELDS = {"accepted", "delivered", "acknowledged", "rejected", "reason"}
#: how long a watcher may take to see, collect, acknowledge and hand on a message, relay
#: restarts and reconnection backoff included, on a loaded 2-core machine
WATCH_TIMEOUT = 60.0


@dataclass
class World:
    root: Path
    relay: RelayProcess
    admin: Member
    members: dict[str, Member]

    def member(self, handle: str) -> Member:
        return self.members[handle]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("evidence-e2e")
    relay = RelayProcess(root / "relay", root / "logs")
    try:
        admin = Member("secretariat", root / "homes" / "secretariat")
        create_network(relay, admin, NETWORK, name="EJN pilot secretariat", country="EU")
        w = World(root, relay, admin, {h: Member(h, root / "homes" / h) for h in PEOPLE})
        codes = {h: invite(admin, NETWORK, h) for h in PEOPLE}
        run_together(*((w.member(h), ["enroll", codes[h]]) for h in PEOPLE))
        for handle in PEOPLE:
            approve(admin, NETWORK, w.member(handle))
        yield w
    finally:
        relay.stop()


# -- helpers -------------------------------------------------------------------------------------


def send(sender: Member, to: list[str], subject: str, body: str = "Please find the request below.") -> str:
    args = ["send", "--network", NETWORK, "--subject", subject, "--json"]
    for handle in to:
        args += ["--to", handle]
    return sender.run(*args, input=body).json()["id"]


def send_together(*messages: tuple[Member, list[str], str]) -> list[str]:
    """Several senders, each on their own machine, sending at the same moment; their ids in order."""
    commands = []
    for sender, to, subject in messages:
        args = ["send", "--network", NETWORK, "--subject", subject, "--body", f"about: {subject}", "--json"]
        for handle in to:
            args += ["--to", handle]
        commands.append((sender, args))
    return [r.json()["id"] for r in run_together(*commands)]


def status(sender: Member, message_id: str) -> dict:
    """``comity status ID --json``, its shape checked: null or a time for each event."""
    shown = sender.json("status", message_id)
    assert set(shown) == {"id", "state", "recipients", "warnings"} and shown["id"] == message_id, shown
    assert shown["warnings"] == [], shown           # nobody's log was newer than the sender's
    for handle, r in shown["recipients"].items():
        assert STATUS_FIELDS <= set(r), (handle, r)
        for name in ("accepted", "delivered", "acknowledged", "rejected"):
            assert r[name] is None or isinstance(r[name], int), (handle, name, r)
        assert r["reason"] is None or isinstance(r["reason"], str)
    return shown["recipients"]


def tamper_with_ciphertext(relay: RelayProcess, message_id: str) -> None:
    """Flip one character in the middle of the stored envelope's ciphertext (still base64url)."""
    with relay.db() as conn:
        (text,) = conn.execute("SELECT envelope FROM envelopes WHERE network = ? AND message_id = ?",
                               [NETWORK, message_id]).fetchone()
        ciphertext = json.loads(text)["ciphertext"]
        i = len(ciphertext) // 2          # not the last character, whose low bits may be padding
        changed = ciphertext[:i] + ("A" if ciphertext[i] != "A" else "B") + ciphertext[i + 1:]
        assert text.count(ciphertext) == 1
        conn.execute("UPDATE envelopes SET envelope = ? WHERE network = ? AND message_id = ?",
                     [text.replace(ciphertext, changed), NETWORK, message_id])


def listing_line(listing: str, message_id: str) -> str:
    lines = [line for line in listing.splitlines() if line.startswith(message_id)]
    assert len(lines) == 1, listing
    return lines[0]


def verify_offline(*args: str) -> Result:
    """``comity verify`` as an expert runs it: no COMITY_HOME, no passphrase, no relay."""
    done = subprocess.run(COMITY + ["verify", *args], capture_output=True, text=True, env=base_env(),
                          stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT)
    return Result(["verify", *args], done.returncode, done.stdout, done.stderr)


def verify_all(files: list[Path], at_once: int = 6) -> list[Result]:
    """``comity verify`` on several files, ``at_once`` at a time."""
    results = []
    for start in range(0, len(files), at_once):
        chunk = files[start:start + at_once]
        started = [subprocess.Popen(COMITY + ["verify", str(f)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, env=base_env(), text=True) for f in chunk]
        for f, process in zip(chunk, started):
            stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT)
            results.append(Result(["verify", str(f)], process.returncode, stdout, stderr))
    return results


def signatures_failing_alone(bundle: Path) -> list[str]:
    """Check each item of the bundle's ``signatures`` list with nothing but the key and bytes it
    gives (pyca/cryptography, that is OpenSSL); the ``what`` of those that fail."""
    failed = []
    for item in json.loads(bundle.read_bytes())["signatures"]:
        key = load_pem_public_key(item["public_key_pem"].encode("ascii"))
        try:
            key.verify(base64.b64decode(item["signature_base64"]), base64.b64decode(item["signed_data_base64"]))
        except InvalidSignature:
            failed.append(item["what"])
    return failed


# -- 1, 2: accepted, delivered, acknowledged, and a tampered copy rejected --------------------------


def test_status_follows_each_recipient_and_a_tampered_copy_is_rejected(world):
    admin, alice, bob = world.admin, world.member("alice"), world.member("bob")
    first = send(admin, ["alice", "bob"], "MLA 2026/7: bank records")
    second = send(admin, ["alice", "bob"], "MLA 2026/8: witness hearing")

    for message_id in (first, second):
        for handle, r in status(admin, message_id).items():
            assert r["accepted"] is not None, (handle, r)
            assert (r["delivered"], r["acknowledged"], r["rejected"], r["reason"]) == (None, None, None, None)

    alice.run("inbox")
    shown = status(admin, first)
    assert shown["alice"]["accepted"] <= shown["alice"]["delivered"] <= shown["alice"]["acknowledged"]
    assert shown["alice"]["rejected"] is None and shown["alice"]["reason"] is None
    assert (shown["bob"]["delivered"], shown["bob"]["acknowledged"]) == (None, None)

    # bob's copy of the second message is altered at the relay after alice collected hers.
    tamper_with_ciphertext(world.relay, second)
    collected = bob.run("inbox")
    assert "2 new message(s), 1 failed verification and kept aside" in collected.stderr
    assert "MLA 2026/7: bank records" in listing_line(collected.stdout, first)
    assert "[not verified: decryption-failed]" in listing_line(collected.stdout, second)
    assert "MLA 2026/8" not in collected.stdout
    listed = {m["id"]: m for m in bob.json("inbox")}
    assert listed[first]["verified"] is True
    assert listed[second]["verified"] is False and listed[second]["reason"] == "decryption-failed"
    assert_one_error(bob.run("read", second, ok=False), contains="failed verification")

    both = status(admin, first)
    for handle in ("alice", "bob"):
        assert both[handle]["delivered"] is not None and both[handle]["acknowledged"] is not None, both
        assert both[handle]["rejected"] is None
    tampered = status(admin, second)
    assert tampered["alice"]["acknowledged"] is not None and tampered["alice"]["rejected"] is None
    assert tampered["bob"]["delivered"] is not None and tampered["bob"]["acknowledged"] is None
    assert tampered["bob"]["rejected"] is not None and tampered["bob"]["reason"] == "decryption-failed"
    human = admin.run("status", second).stdout
    assert "rejected: decryption-failed" in human and "MLA 2026/8: witness hearing" in human


def test_inbox_no_ack_collects_without_acknowledging(world):
    admin, alice = world.admin, world.member("alice")
    message_id = send(admin, ["alice"], "for the file only")
    listed = {m["id"]: m for m in alice.json("inbox", "--no-ack")}
    assert listed[message_id]["verified"] is True
    r = status(admin, message_id)["alice"]
    assert r["delivered"] is not None and r["acknowledged"] is None and r["rejected"] is None


# -- 3: watch --exec, exactly once ----------------------------------------------------------------------

# The --exec command: appends the message id to a file. For a message whose subject starts with
# "hold" it first writes its pid to GATE/held-SUBJECT and waits until the test creates
# GATE/release-SUBJECT: so the test can stop or kill the watcher while a command is running.
HOOK = """\
import json, os, sys, time
record, gate = sys.argv[1], sys.argv[2]
message = json.load(sys.stdin)
subject = message["subject"]
if subject.startswith("hold"):
    with open(os.path.join(gate, "pid.tmp"), "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(os.path.join(gate, "pid.tmp"), os.path.join(gate, "held-" + subject))
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(gate, "release-" + subject)):
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.005)
with open(record, "a", encoding="utf-8") as fh:
    fh.write(message["id"] + "\\n")
"""


def _recorded(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split() if path.exists() else []


def _held(gate: Path, subject: str) -> str:
    """The pid of the --exec command holding ``subject``, once it holds."""
    path = gate / f"held-{subject}"
    return path.read_text() if path.exists() else ""


def _wait_for_text(log: Path, text: str, process: subprocess.Popen) -> None:
    def shown() -> bool:
        if text in log.read_text(encoding="utf-8", errors="replace"):
            return True
        if process.poll() is not None:
            raise AssertionError(f"the watcher exited ({process.returncode}) before {text!r}:\n"
                                 + log.read_text(encoding="utf-8", errors="replace"))
        return False
    wait_until(shown, WATCH_TIMEOUT, repr(text))


def test_watch_exec_runs_once_per_message_across_a_relay_restart_and_a_kill(world):
    carol = world.member("carol")
    senders = (world.admin, world.member("alice"), world.member("bob"))
    folder = world.root / "watch"
    gate = folder / "gate"
    gate.mkdir(parents=True)
    hook, record = folder / "register.py", folder / "registered.txt"
    hook.write_text(HOOK, encoding="utf-8")
    command = " ".join(shlex.quote(str(p)) for p in (sys.executable, hook, record, gate))
    sent: dict[str, Member] = {}           # message id -> its sender
    interrupted: set[str] = set()          # killed while its command ran: reported, never rerun

    def batch(*subjects: str) -> list[str]:
        ids = send_together(*((senders[i % 3], ["carol"], s) for i, s in enumerate(subjects)))
        sent.update((message_id, senders[i % 3]) for i, message_id in enumerate(ids))
        return ids

    def all_recorded() -> bool:
        return set(sent) - interrupted <= set(_recorded(record))

    logs = [folder / "watcher-1.log", folder / "watcher-2.log"]
    watcher = carol.spawn("watch", "--exec", command, log=logs[0])
    watchers = [watcher]
    try:
        _wait_for_text(logs[0], "watch: waiting for messages", watcher)
        batch("first 1", "first 2", "first 3")
        wait_until(lambda: _recorded(record), WATCH_TIMEOUT, "the first message to be registered")

        world.relay.restart(signal.SIGKILL)              # a relay crash; it comes back on its port
        batch("after the restart 1", "after the restart 2", "after the restart 3")
        wait_until(all_recorded, WATCH_TIMEOUT, "the watcher to reconnect and catch up")
        _wait_for_text(logs[0], f"watch: reconnected to {NETWORK}", watcher)
        assert f"watch: lost {NETWORK}: " in logs[0].read_text(encoding="utf-8")

        held = batch("hold-1", "behind the held one 1", "behind the held one 2")[0]
        hook_pid = int(wait_until(lambda: _held(gate, "hold-1"), WATCH_TIMEOUT, "the --exec command to hold"))
        assert watcher.poll() is None
        os.kill(watcher.pid, signal.SIGKILL)             # the watcher crashes mid-way through a batch
        assert watcher.wait(timeout=COMMAND_TIMEOUT) == -signal.SIGKILL
        os.kill(hook_pid, signal.SIGKILL)                # ...and so does the command it was running
        (gate / "release-hold-1").touch()
        assert held not in _recorded(record)
        interrupted.add(held)

        watcher = carol.spawn("watch", "--exec", command, log=logs[1])
        watchers.append(watcher)
        _wait_for_text(logs[1], "watch: waiting for messages", watcher)
        wait_until(all_recorded, WATCH_TIMEOUT, "the new watcher to run what the killed one left")
        # Whether the killed command finished cannot be known: at most once, so it is reported.
        _wait_for_text(logs[1], f"--exec for {held} was interrupted", watcher)
        batch("late 1", "late 2")
        wait_until(all_recorded, WATCH_TIMEOUT, "the late messages to be registered")
        batch("hold-2")
        wait_until(lambda: _held(gate, "hold-2"), WATCH_TIMEOUT, "the --exec command to hold")

        # SIGTERM while a command runs: the watcher lets it finish, marks it done, exits 0.
        watcher.send_signal(signal.SIGTERM)
        (gate / "release-hold-2").touch()
        assert watcher.wait(timeout=COMMAND_TIMEOUT) == 0
        assert all_recorded()
        shown = logs[1].read_text(encoding="utf-8")
        assert "Traceback" not in shown and "watch: stopped after" in shown, shown
    finally:
        for started in watchers:             # on failure: no watcher or --exec command left behind
            kill_group(started)

    waiting = batch("waiting 1", "waiting 2")
    once = carol.run("watch", "--once", "--exec", command)
    assert all_recorded() and "Traceback" not in once.stderr
    assert "watch: stopped after 2 new message(s)" in once.stderr
    again = carol.run("watch", "--once", "--exec", command)
    assert "watch: stopped after 0 new message(s)" in again.stderr

    registered = _recorded(record)
    assert sorted(registered) == sorted(set(sent) - interrupted), "each message registered at most once"
    assert held not in registered
    assert set(waiting) <= set(registered) and len(sent) == 14
    # Every sender sees carol's acknowledgement of every message: the senders ask at the same
    # time, each about one of its messages per round.
    queues = [[m for m, s in sent.items() if s is sender] for sender in senders]
    while any(queues):
        asked = [(sender, queue.pop()) for sender, queue in zip(senders, queues) if queue]
        for (_, message_id), result in zip(asked, run_together(
                *((sender, ["status", message_id, "--json"]) for sender, message_id in asked))):
            carol_status = result.json()["recipients"]["carol"]
            assert carol_status["acknowledged"] is not None, (message_id, carol_status)


# -- 4: key rotation with messages in flight; identity rotation; roles ----------------------------------


def _wrapped_version(relay: RelayProcess, message_id: str, handle: str) -> int:
    with relay.db() as conn:
        (text,) = conn.execute("SELECT envelope FROM envelopes WHERE network = ? AND message_id = ?",
                               [NETWORK, message_id]).fetchone()
    return json.loads(text)["wrapped"][handle]["key_version"]


def _key_version(member: Member, handle: str) -> int:
    listed = {m["handle"]: m for m in member.json("members", "--network", NETWORK)}
    return listed[handle]["encryption_key_version"]


def test_rotation_while_messages_are_in_flight_loses_none(world):
    alice, dave = world.member("alice"), world.member("dave")
    before = [send(alice, ["dave"], f"before the rotation {i}", body=f"body before {i}") for i in (1, 2)]
    assert _key_version(alice, "dave") == 1

    rotated = dave.run("rotate")
    assert rotated.stdout == f"encryption key version 2 published in {NETWORK}\n"
    keys = {k["version"]: k for k in dave.json("whoami")["encryption_keys"]}
    assert sorted(keys) == [1, 2]
    assert keys[1]["retired_at"] is not None and keys[2]["retired_at"] is None

    assert _key_version(alice, "dave") == 2          # the sender learns the new key from the log
    after = send(alice, ["dave"], "after the rotation", body="body after")
    assert [_wrapped_version(world.relay, m, "dave") for m in before + [after]] == [1, 1, 2]

    listed = {m["id"]: m for m in dave.json("inbox")}
    assert all(listed[m]["verified"] for m in before + [after]), listed
    bodies = run_together(*((dave, ["read", m, "--json"]) for m in before + [after]))
    assert [r.json()["body"] for r in bodies] == ["body before 1", "body before 2", "body after"]
    for message_id in before + [after]:
        assert status(alice, message_id)["dave"]["acknowledged"] is not None


def test_identity_rotation_countersigned_by_an_admin_then_mail_flows_both_ways(world):
    admin, alice, dave = world.admin, world.member("alice"), world.member("dave")
    earlier = send(alice, ["dave"], "acknowledged with the old identity key")
    dave.run("inbox")
    old = dave.json("whoami")["fingerprint"]
    pending = dave.run("rotate", "--identity")
    new = pending.stdout.removeprefix("new identity key ").removesuffix(" is waiting for an administrator\n")
    assert new != pending.stdout and new != old, pending.stdout
    assert "approve-rotation --network NAME YOUR-HANDLE --fingerprint FPR" in pending.stderr
    # Until an administrator countersigns, the log still knows dave by the old key.
    assert {m["handle"]: m["fingerprint"] for m in admin.json("members", "--network", NETWORK)}["dave"] == old

    approved = admin.run("approve-rotation", "--network", NETWORK, "dave", "--fingerprint", new)
    assert approved.stdout == f"dave now signs with {new}\n"
    assert {m["handle"]: m["fingerprint"] for m in admin.json("members", "--network", NETWORK)}["dave"] == new
    assert_one_error(admin.run("approve-rotation", "--network", NETWORK, "dave", "--fingerprint", new,
                               ok=False), contains="no identity rotation from dave")

    to_dave = send(admin, ["dave"], "to the new key", body="for dave")
    from_dave = send(dave, ["secretariat"], "from the new key", body="from dave")
    me = dave.json("whoami")                       # offline: as the last command left the keystore
    assert me["fingerprint"] == new
    # The encryption key published with the new identity is the only one not retired.
    keys = sorted(me["encryption_keys"], key=lambda k: k["version"])
    assert keys[-1]["retired_at"] is None and all(k["retired_at"] is not None for k in keys[:-1]), keys
    assert _key_version(admin, "dave") == keys[-1]["version"]
    received = {m["id"]: m for m in dave.json("inbox")}
    assert received[to_dave]["verified"] is True
    answered = {m["id"]: m for m in admin.json("inbox")}
    assert answered[from_dave]["verified"] is True and answered[from_dave]["from"] == "dave"
    assert admin.json("read", from_dave)["body"] == "from dave"
    assert status(admin, to_dave)["dave"]["acknowledged"] is not None      # signed with dave's new key
    assert status(dave, from_dave)["secretariat"]["acknowledged"] is not None

    # Evidence from before the rotation still proves what it proved: the bundle names the key
    # dave acknowledged with then, and each listed signature checks without comity.
    bundle = world.root / "evidence-before-rotation.json"
    alice.run("export", earlier, "--out", str(bundle))
    checked = verify_offline(str(bundle))
    assert checked.status == 0, checked.stdout
    assert "acknowledged by dave at " in checked.stdout and f"signed by dave's key {old}" in checked.stdout
    assert signatures_failing_alone(bundle) == []


def test_set_role_and_the_last_admin_cannot_step_down(world):
    admin, alice, bob = world.admin, world.member("alice"), world.member("bob")

    def roles() -> dict[str, str]:
        return {m["handle"]: m["role"] for m in bob.json("members", "--network", NETWORK)}

    assert_one_error(admin.run("set-role", "--network", NETWORK, "secretariat", "member", ok=False),
                     contains="last admin")
    assert_one_error(bob.run("set-role", "--network", NETWORK, "bob", "admin", ok=False),
                     contains="only an administrator")
    assert_one_error(admin.run("set-role", "--network", NETWORK, "bob", "king", ok=False), 2)

    assert admin.run("set-role", "--network", NETWORK, "alice", "admin").stdout == "alice is now admin\n"
    assert roles()["alice"] == "admin"
    # With two administrators, either may step down; the one left may not.
    assert alice.run("set-role", "--network", NETWORK, "alice", "member").stdout == "alice is now member\n"
    assert roles() == {"secretariat": "admin", **{h: "member" for h in PEOPLE}}
    assert_one_error(admin.run("set-role", "--network", NETWORK, "secretariat", "member", ok=False),
                     contains="last admin")


# -- 5: evidence bundles, offline ----------------------------------------------------------------------


def _changed(raw: bytes, position: int) -> bytes:
    """``raw`` with the byte at ``position`` replaced by a different one of the same kind where it
    can be (a digit by a digit, a letter by a letter), so the file usually stays valid JSON and
    the signatures, not the parser, have to catch the change."""
    old = raw[position:position + 1]
    if old.isdigit():
        new = b"7" if old != b"7" else b"3"
    elif old.isalpha():
        new = b"q" if old != b"q" else b"x"
    else:
        new = bytes([raw[position] ^ 0x01])
    return raw[:position] + new + raw[position + 1:]


def test_an_exported_bundle_verifies_offline_and_no_changed_copy_does(world):
    admin = world.admin
    body = "We request the hearing of the witness named in the annex, under Article 9 of the treaty."
    message_id = send(admin, ["alice", "bob"], "MLA 2026/12: hearing of a witness", body=body)
    run_together((world.member("alice"), ["inbox"]), (world.member("bob"), ["inbox"]))

    bundle = world.root / "evidence" / "mla-2026-12.evidence.json"
    bundle.parent.mkdir()
    exported = admin.run("export", message_id, "--out", str(bundle))
    assert exported.stdout.startswith(f"wrote {bundle}: ")
    assert "the bundle contains the message in clear" in exported.stderr
    assert bundle.stat().st_mode & 0o077 == 0
    assert_one_error(admin.run("export", message_id, "--out", str(bundle), ok=False), contains="exists")

    checked = verify_offline(str(bundle))
    assert checked.status == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    findings = [line for line in lines[:-1] if not line.startswith("for ")]
    assert lines[-1] == "the bundle verifies" and all(line.startswith("ok   ") for line in findings), lines
    for handle in ("alice", "bob"):        # then, per recipient, what is proven (no gap here)
        assert f"for {handle}: proven: delivered to {handle}'s authenticated session at " in checked.stdout
        assert f"for {handle}: proven: {handle}'s software verified and decrypted exactly this content" \
            in checked.stdout
    assert "NOT proven" not in checked.stdout
    assert signatures_failing_alone(bundle) == []
    fingerprint = admin.json("whoami")["networks"][0]["fingerprint"]
    text = checked.stdout
    assert f"membership log of '{NETWORK}' verifies from its genesis (network fingerprint {fingerprint})" in text
    assert f"message {message_id} was signed by secretariat" in text
    assert "for alice, bob; subject 'MLA 2026/12: hearing of a witness'" in text
    assert "submission-accepted (alice, bob) at " in text and "signed by the relay" in text
    for handle in ("alice", "bob"):
        assert f"delivered ({handle}) at " in text
        assert f"acknowledged by {handle} at " in text
    assert "the bundle as a whole is signed by its exporter, secretariat" in text

    as_json = verify_offline(str(bundle), "--network-fingerprint", fingerprint.replace(" ", ""), "--json")
    assert as_json.status == 0
    report = json.loads(as_json.stdout)
    assert report["ok"] is True and report["network_fingerprint"] == fingerprint
    assert [f["text"] for f in report["findings"]] == [line[5:] for line in findings]
    assert set(report["recipients"]) == {"alice", "bob"} and report["recipients"]["bob"]["acknowledged"]
    other = ("0" if fingerprint[0] != "0" else "1") + fingerprint[1:]
    wrong = verify_offline(str(bundle), "--network-fingerprint", other)
    assert wrong.status == 1 and "the bundle does NOT verify" in wrong.stdout
    assert f"FAIL the bundle's network fingerprint {fingerprint} is not the expected one" in wrong.stdout
    assert_one_error(verify_offline(str(bundle), "--network-fingerprint", "not a fingerprint"), 2)

    # Any changed byte makes it fail: the first and last, the body, an acknowledgement (its
    # recipient, time and signature), a relay receipt, the log, and points spread over the file.
    raw = bundle.read_bytes()
    ack = raw.index(b'"kind":"acknowledged"')
    ack_start, ack_end = raw.rindex(b"{", 0, ack), raw.index(b"}", ack)
    in_ack = [raw.index(field, ack_start) + len(field) + offset
              for field, offset in ((b'"recipient":"', 0), (b'"time":', 9), (b'"sig":"', 20))]
    assert all(ack_start < p < ack_end for p in in_ack)
    positions = {0, len(raw) - 1, len(raw) - 2, raw.index(b"Article 9") + 8, *in_ack,
                 raw.index(b'"kind":"delivered"') + 10, raw.index(b'"kind":"add-member"') + 9,
                 raw.index(b'"exported_at":') + len(b'"exported_at":') + 9}
    positions |= {len(raw) * k // 7 for k in range(1, 7)}
    copies = []
    for position in sorted(positions):
        copy = bundle.parent / f"changed-at-{position}.json"
        copy.write_bytes(_changed(raw, position))
        assert copy.read_bytes() != raw
        copies.append(copy)
    for copy, result in zip(copies, verify_all(copies)):
        assert result.status == 1, f"{copy.name} verifies:\n{result.stdout}"
        assert "Traceback" not in result.stderr, result.stderr
        assert "the bundle verifies" not in result.stdout

    missing = verify_offline(str(bundle.parent / "no-such-bundle.json"))
    assert_one_error(missing, contains="no-such-bundle.json")
    not_a_bundle = bundle.parent / "notes.txt"
    not_a_bundle.write_text("minutes of the meeting\n")
    assert_one_error(verify_offline(str(not_a_bundle)), contains="not a comity evidence bundle")
    some_json = bundle.parent / "other.json"
    some_json.write_text('{"format": "something-else"}\n')
    assert_one_error(verify_offline(str(some_json)), contains="not a comity evidence bundle")
