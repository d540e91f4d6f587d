"""Withholding membership log entries to defeat a removal or a key rotation (issue 9, break 5).

The attack: the relay hides the newest log entries from a sender (here bob's encryption-key
rotation), so the sender seals to a key the recipient has retired, one a thief with a stolen
copy can open; nobody was told.

The defence: the relay signs the log head it serves, with its time; a client refuses a head
that is not the pinned relay's, not where the served entries end, or older than
``HEAD_MAX_AGE`` (+ ``CLOCK_SKEW``). A recipient whose log is newer than the head a message
names opens it but says so in its signed acknowledgement (``newer_head``); content wrapped to a
key it had retired more than ``ROTATION_WINDOW`` before the message was sealed or accepted is
refused (``retired-key``). A later entry dated well before a head that omitted it proves the
relay withheld it.

What the user is told: ``error: the relay signed that the refco log ends at entry N, but ...``
(and other one-line refusals of a bad head); the recipient ``warning: alice sent message ID in
refco against an old membership log: ...``; the sender, in ``comity status``, ``warning:
message ID was sealed against an old refco membership log, as bob's acknowledgement shows:
...`` (``--json``: ``warnings``), ``rejected: retired-key`` past the window, and ``warning: the
relay withheld refco log entry N from you: on ... it signed that the log ended at entry N-1,
but entry N had been made on ...``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time

import pytest

from client.api import Comity
from keys.constants import CLOCK_SKEW, HEAD_MAX_AGE, MINUTE, ROTATION_WINDOW
from keys.identity import IdentityKey

from ..e2e_support import PASSPHRASE, assert_one_error
from ._heads_support import hide_from, sign_head, stored_hash

NETWORK = "refco"
#: alice's clock in the late send: far enough past the rotation that the window has closed
LATE = ROTATION_WINDOW + 5 * MINUTE


def relay_head(mal) -> int:
    with mal.relay.db() as db:
        return db.execute("SELECT max(seq) FROM log_entries WHERE network = ?", [NETWORK]).fetchone()[0]


def waiting_ack(stderr: str) -> str:
    """The id of the acknowledgement the sender could not open yet (the relay hid its head)."""
    [found] = set(re.findall(rf"message (\S+) in {NETWORK} cannot be opened yet \(log-behind",
                             stderr))
    return found


def _served(transform):
    """A rewrite rule applying ``transform(page)`` to every log page."""
    def rule(status, body, req):
        if status != 200:
            return None
        return status, json.dumps(transform(json.loads(body))).encode()
    return rule


def _unsigned(mal):
    def transform(page):
        del page["signed_head"]
        return page
    return transform


def _other_key(mal):
    def transform(page):
        head = page["signed_head"]
        impostor = type("Impostor", (), {"key": IdentityKey.generate()})()
        return sign_head(impostor, page, head["seq"], stored_hash(mal, NETWORK, head["seq"]))
    return transform


def _old(mal):
    def transform(page):
        head = page["signed_head"]
        return sign_head(mal, page, head["seq"], stored_hash(mal, NETWORK, head["seq"]),
                         at=int(time.time()) - HEAD_MAX_AGE - CLOCK_SKEW - MINUTE)
    return transform


def _ahead(mal):
    def transform(page):
        return sign_head(mal, page, page["signed_head"]["seq"] + 1, b"\x07" * 32)
    return transform


def _behind(mal):
    def transform(page):
        seq = page["signed_head"]["seq"] - 1
        return sign_head(mal, page, seq, stored_hash(mal, NETWORK, seq))
    return transform


@pytest.mark.parametrize("lie, said", [
    (_unsigned, "the relay did not sign the refco log head it served"),
    (_other_key, "does not verify against the relay key the membership log names"),
    (_old, "minute(s) old"),
    (_ahead, "but served entries only up to"),
    (_behind, "the relay is withholding or rolling back the log"),
])
def test_a_log_head_the_relay_does_not_stand_behind_is_refused(world, lie, said):
    mal, people = world.mal, world.people
    alice = people["alice"]
    mal.rewrite("GET", r"/log\?", _served(lie(mal)))
    assert_one_error(alice.run("members", "--network", NETWORK, ok=False), contains=said)
    mal.clear()
    alice.run("members", "--network", NETWORK)          # the truth is accepted again


def test_a_message_sealed_against_a_withheld_rotation_opens_inside_the_window_and_the_sender_is_warned(world):
    mal, people = world.mal, world.people
    alice, bob = people["alice"], people["bob"]
    alice.run("members", "--network", NETWORK)
    rotation = relay_head(mal) + 1
    bob.run("rotate", "--network", NETWORK)                 # bob's encryption key: a new version
    mal.rewrite("GET", r"/log\?", hide_from(mal, NETWORK, rotation, only="alice"))

    message_id = alice.run("send", "--network", NETWORK, "--to", "bob", "--subject", "withheld",
                           input="sealed to the old key").stdout.strip()
    collected = bob.run("inbox", "--json")
    [shown] = [m for m in collected.json() if m["id"] == message_id]
    assert shown["verified"] is True                        # inside the window: it opens...
    assert (f"warning: alice sent message {message_id} in {NETWORK} against an old membership "
            f"log: bob's encryption key had been replaced (entry {rotation})") in collected.stderr

    # ...and bob's acknowledgement names his newer head. While the relay hides it, alice cannot
    # even read that acknowledgement, and is told so.
    hidden = alice.run("status", message_id, "--json")
    assert f"names membership log entry {rotation}, which the relay has not shown us" in hidden.stderr

    mal.clear()
    alice.run("retry", waiting_ack(hidden.stderr))          # no need to wait for the backoff
    status = alice.run("status", message_id, "--json")
    warned = status.json()["warnings"]
    assert [(w["kind"], w["by"], w["newer_head"]["seq"]) for w in warned] == [("stale", "bob", rotation)]
    assert [(c["seq"], c["handle"], c["change"]) for c in warned[0]["changes"]] == [
        (rotation, "bob", "encryption-key")]
    assert (f"warning: message {message_id} was sealed against an old {NETWORK} membership log, "
            "as bob's acknowledgement shows: bob's encryption key had been replaced") in status.stderr
    assert status.json()["recipients"]["bob"]["acknowledged"] is not None
    shown_again = alice.run("status", message_id)           # kept: shown every time
    assert "was sealed against an old refco membership log" in shown_again.stderr


def test_past_the_window_the_recipient_refuses_and_the_withholding_is_proven(world):
    mal, people = world.mal, world.people
    alice, bob = people["alice"], people["bob"]
    alice.run("members", "--network", NETWORK)
    rotation = relay_head(mal) + 1
    bob.run("rotate", "--network", NETWORK)
    # The relay keeps hiding the rotation from alice and signs fresh heads by her clock, which
    # runs past the window: it still cannot make her seal to the old key unnoticed.
    mal.rewrite("GET", r"/log\?", hide_from(mal, NETWORK, rotation, only="alice",
                                            at=lambda: int(time.time()) + LATE))

    async def send_late() -> str:
        os.environ["COMITY_INSECURE_FAST_KDF"] = "1"
        async with Comity.at(alice.home) as client:
            client.unlock(PASSPHRASE)
            client.clock = lambda: time.time() + LATE
            sent = await client.send(NETWORK, ["bob"], {"type": "request", "subject": "too late"},
                                     "sealed to the old key, long after")
            return sent["id"]
    message_id = asyncio.run(send_late())

    collected = bob.run("inbox", "--json")
    [shown] = [m for m in collected.json() if m["id"] == message_id]
    assert (shown["verified"], shown["reason"]) == (False, "retired-key")
    listed = bob.run("inbox").stdout
    assert "[not verified: retired-key]" in listed

    mal.clear()                                             # back to alice's real clock...
    mal.rewrite("GET", r"/log\?", hide_from(mal, NETWORK, rotation, only="alice"))
    hidden = alice.run("status", message_id, "--json")     # ...bob's rejection names his head
    mal.clear()
    retried = alice.run("retry", waiting_ack(hidden.stderr))
    # The head the relay signed (dated by alice's fast clock) and bob's rotation entry, dated
    # well before it: proof that the relay withheld the entry, told at the first honest sync.
    assert f"warning: the relay withheld {NETWORK} log entry {rotation} from you: on " in retried.stderr
    assert f"it signed that the log ended at entry {rotation - 1}" in retried.stderr
    status = alice.run("status", message_id, "--json")
    assert status.json()["recipients"]["bob"]["reason"] == "retired-key"
    assert status.json()["recipients"]["bob"]["rejected"] is not None
    warned = status.json()["warnings"]
    assert [(w["kind"], w["by"]) for w in warned] == [("stale", "bob")]
    assert "(bob refused it)" in warned[0]["text"]
