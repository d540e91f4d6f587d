"""Replay and overwrite (issue 9, break 1).

The attack: a relay lists an envelope the member already holds under a fresh mailbox id,
echoes a sender's own message back to it, or hands over a tampered copy under the id of a
message already read; against an honest relay, a member who shares a second network with the
victim re-uses one of the victim's message ids there.

The defence: stored messages are never replaced (inserted once per network and id, with the
envelope hash beside them); an envelope already held is a replay (dropped: not shown, not
acknowledged, no second ``watch --exec``); another envelope under a held id is a collision, kept
apart and reported; every lookup knows its network and refuses to guess between two.

What the user is told: a ``warning:`` line naming the replay or the collision; the stored
message, its status and its evidence stay as they were.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
from urllib.parse import parse_qs, urlsplit

from client.api import Comity
from keys import envelope as env
from keys.encoding import b64d, b64e

from ..e2e_support import (PASSPHRASE, Member, approve, assert_one_error, base_env, kill_group,
                           wait_until)
from .conftest import MaliciousRelay

NETWORK = "refco"
#: a mailbox id the honest relay never issued (ids are 22 base64url characters)
FAKE_ID = "Rr" * 11
FAR_CURSOR = 10 ** 12




def send(member: Member, to: str, subject: str, network: str = NETWORK) -> str:
    return member.run("send", "--network", network, "--to", to, "--subject", subject,
                      input=f"body of {subject}").stdout.strip()


def capture_fetches(mal: MaliciousRelay) -> dict[str, bytes]:
    """Keep every fetch answer (envelope and delivery receipt) the relay hands out, by id."""
    seen: dict[str, bytes] = {}

    def keep(status, body, req):
        if status == 200:
            seen[req.path.rsplit("/", 1)[1]] = body
    mal.rewrite("GET", r"/messages/[A-Za-z0-9_-]+$", keep)
    return seen


def list_again(mal: MaliciousRelay, listed_id: str, answer: bytes) -> None:
    """The relay lists ``answer`` once more under ``listed_id`` and plays along when collected."""
    def mailbox(status, body, req):
        after = int(parse_qs(urlsplit(req.path).query).get("after", ["0"])[0])
        page = json.loads(body)
        if after < FAR_CURSOR:
            page["messages"].append({"cursor": FAR_CURSOR, "id": listed_id, "sender": "alice",
                                     "size": len(answer), "accepted_at": 0})
        return status, json.dumps(page).encode()
    mal.rewrite("GET", rf"/networks/{NETWORK}/mailbox\?", mailbox)
    mal.on_request("GET", rf"/networks/{NETWORK}/messages/{listed_id}$", lambda req: (200, answer))
    mal.on_request("POST", rf"/networks/{NETWORK}/messages/{listed_id}/collected$", lambda req: (200, b"{}"))


def submissions(mal: MaliciousRelay) -> int:
    return sum(1 for method, path, _ in mal.seen if method == "POST" and path.endswith("/messages"))


def test_a_replay_under_a_fresh_id_is_not_mail_not_acknowledged_and_not_run_again(world, tmp_path):
    mal, people = world.mal, world.people
    alice, bob = people["alice"], people["bob"]
    fetched = capture_fetches(mal)
    ran = tmp_path / "ran.txt"
    hook = ("import json, sys; open(sys.argv[1], 'a').write(json.load(sys.stdin)['id'] + '\\n')")
    command = " ".join(shlex.quote(p) for p in (sys.executable, "-c", hook, str(ran)))
    message_id = send(alice, "bob", "replay me")
    bob.run("watch", "--once", "--exec", command)
    assert ran.read_text().split() == [message_id]

    list_again(mal, FAKE_ID, fetched[message_id])
    before = submissions(mal)
    again = bob.run("watch", "--once", "--exec", command)
    assert f"the relay delivered message {message_id} in {NETWORK} again (a replay): ignored" in again.stderr
    assert "stopped after 0 new message(s)" in again.stderr
    assert ran.read_text().split() == [message_id]            # --exec ran once, ever
    assert submissions(mal) == before                         # no second acknowledgement
    listed = bob.run("inbox", "--json")
    assert [m["id"] for m in listed.json()].count(message_id) == 1
    assert "a replay" in listed.stderr                        # warnings even with --json output


def test_an_echo_of_the_senders_own_message_leaves_its_evidence_intact(world, tmp_path):
    mal, people = world.mal, world.people
    alice, bob = people["alice"], people["bob"]
    fetched = capture_fetches(mal)
    message_id = send(alice, "bob", "echo me")
    bob.run("inbox")
    list_again(mal, message_id, fetched[message_id])          # now into alice's own mailbox
    echoed = alice.run("inbox", "--json")
    assert "again (a replay): ignored" in echoed.stderr
    assert message_id not in [m["id"] for m in echoed.json()]
    mal.clear()
    shown = alice.json("status", message_id)
    assert shown["state"] == "accepted" and shown["recipients"]["bob"]["acknowledged"] is not None
    alice.run("export", message_id, "--out", str(tmp_path / "echo.evidence.json"))
    assert "the bundle verifies" in alice.run("verify", str(tmp_path / "echo.evidence.json")).stdout


def test_a_tampered_copy_of_a_message_already_read_never_replaces_it(world):
    mal, people = world.mal, world.people
    alice, bob = people["alice"], people["bob"]
    fetched = capture_fetches(mal)
    message_id = send(alice, "bob", "the genuine subject")
    bob.run("inbox")
    assert "the genuine subject" in bob.run("read", message_id).stdout
    answer = json.loads(fetched[message_id])
    ciphertext = bytearray(b64d(answer["envelope"]["ciphertext"]))
    ciphertext[0] ^= 1
    answer["envelope"]["ciphertext"] = b64e(bytes(ciphertext))
    list_again(mal, message_id, json.dumps(answer).encode())
    collected = bob.run("inbox", "--json")
    assert (f"the relay delivered a different envelope under the id {message_id} of a message already "
            f"held in {NETWORK}: kept apart") in collected.stderr
    mine = [m for m in collected.json() if m["id"] == message_id]
    assert len(mine) == 1 and mine[0]["verified"] is True
    assert "the genuine subject" in bob.run("read", message_id).stdout


def test_an_id_reused_in_another_network_is_kept_apart_and_lookups_ask_which(world, tmp_path):
    """Honest relay, lying member: bob shares a second network with alice and re-uses the id of
    a message alice sent in the first. Alice's status and export must not be broken by it."""
    mal, people = world.mal, world.people
    alice, bob = people["alice"], people["bob"]
    message_id = send(alice, "bob", "the original in refco")
    bob.run("inbox")
    bob.run("network", "create", "iberred", "--relay", mal.url, "--token", mal.relay.token("iberred"),
            "--handle", "bob")
    code = bob.run("invite", "--network", "iberred", "--handle", "alice").stdout.strip()
    alice.run("enroll", code)
    approve(bob, "iberred", alice)

    async def reuse_the_id() -> None:
        os.environ.update({k: v for k, v in base_env().items() if k == "COMITY_INSECURE_FAST_KDF"})
        async with Comity.at(bob.home) as client:
            client.unlock(PASSPHRASE)
            row, relay, verifier = await client.connect("iberred")
            envelope, _ = env._seal_from_parts(
                client.identity, "bob", verifier.roster, ["alice"],
                {"type": "request", "subject": "a message with a borrowed id"}, "body",
                created=client.now(), message_id=b64d(message_id), content_key=os.urandom(32),
                nonce=os.urandom(24))
            await relay.submit("iberred", "bob", envelope)
    asyncio.run(reuse_the_id())

    listed = alice.json("inbox")
    assert {(m["network"], m["id"]) for m in listed if m["id"] == message_id} == {("iberred", message_id)}
    # status and export are about messages we sent: only one of the two is ours.
    shown = alice.json("status", message_id)
    assert shown["state"] == "accepted" and shown["recipients"]["bob"]["acknowledged"] is not None
    assert_one_error(alice.run("read", message_id, ok=False), status=2,
                     contains="exists in several networks (iberred, refco): say which with --network")
    out = tmp_path / "original.evidence.json"
    alice.run("export", message_id, "--out", str(out))
    assert "the original in refco" in alice.run("verify", str(out)).stdout
    read = alice.json("read", message_id, "--network", "iberred")
    assert read["subject"] == "a message with a borrowed id" and read["network"] == "iberred"


def test_a_running_watcher_reports_a_replay_at_once(world, tmp_path):
    """``comity watch`` runs for days: its warnings must show as they happen, not at its exit."""
    mal, people = world.mal, world.people
    alice, bob = people["alice"], people["bob"]
    fetched = capture_fetches(mal)
    message_id = send(alice, "bob", "replayed to a watcher")
    bob.run("inbox")
    list_again(mal, "Ww" * 11, fetched[message_id])
    log = tmp_path / "watch.log"
    watcher = bob.spawn("watch", log=log)
    try:
        wait_until(lambda: f"watch: warning: the relay delivered message {message_id}" in
                   log.read_text(encoding="utf-8", errors="replace"), 60, "the replay warning")
        assert watcher.poll() is None                  # said while running, not at the exit
    finally:
        kill_group(watcher)
