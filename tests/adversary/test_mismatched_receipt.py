"""A submission receipt that does not match what was sent (issue 9, break 7).

The attack: the relay answers a submission with a receipt it really signed, but about another
envelope (another hash, other recipients, another network, another message), so that the
sender believes the relay took responsibility for a message it never accepted.

The defence: ``send`` compares every field of the signed receipt with the envelope it
submitted (id, envelope hash, network, sender, recipients) besides checking the relay's
signature, and counts the message as sent only on a full match. Otherwise the message stays
queued and ``comity retry`` (or the next ``inbox``/``watch``) sends it again.

What the user is told: ``error: the relay's receipt does not match the message sent (...);
message ID is not counted as accepted and stays queued`` and a hint naming ``comity retry``.
"""

from __future__ import annotations

import json

import pytest

from keys.encoding import b64d, b64e
from keys.receipts import make_relay_receipt

from ..e2e_support import assert_one_error
from .conftest import MaliciousRelay

NETWORK = "refco"


PEOPLE = ["alice", "bob", "carol"]


def forge(mal: MaliciousRelay, **change):
    """Answer submissions with a receipt signed by the relay's own key, one field changed."""
    def rewrite(status, body, req):
        if status not in (200, 201):
            return None
        real = json.loads(body)["receipt"]
        fields = {"network": real["network"], "message_id": real["message_id"],
                  "envelope_hash": real["envelope_hash"], "sender": real["sender"],
                  "time": real["time"], "recipients": real["recipients"]}
        fields.update({k: (v(real) if callable(v) else v) for k, v in change.items()})
        receipt = make_relay_receipt(mal.key, "submission-accepted", **fields)
        return status, json.dumps({"receipt": receipt}).encode()
    mal.rewrite("POST", r"/v1/networks/[^/]+/messages$", rewrite)


def _flip(text: str) -> str:
    raw = bytearray(b64d(text))
    raw[0] ^= 1
    return b64e(bytes(raw))


@pytest.mark.parametrize("change, problem", [
    ({"envelope_hash": lambda r: _flip(r["envelope_hash"])}, "it names another envelope hash"),
    ({"recipients": ["bob", "carol"]}, "it names other recipients"),
    ({"network": lambda r: _flip(r["network"])}, "it names another network"),
    ({"message_id": "A" * 22}, "it names another message id"),
])
def test_a_receipt_for_something_else_is_refused_and_the_message_stays_queued(world, change, problem):
    mal, people = world.mal, world.people
    alice, bob = people["alice"], people["bob"]
    forge(mal, **change)
    refused = alice.run("send", "--network", NETWORK, "--to", "bob", "--subject", "receipt check",
                        input="body", ok=False)
    line = assert_one_error(refused, contains=f"the relay's receipt does not match the message sent ({problem})")
    assert "is not counted as accepted and stays queued" in line
    assert "comity retry" in refused.stderr
    message_id = line.split("message ")[-1].split(" ")[0]
    assert alice.json("status", message_id, "--no-ack")["state"] == "queued"

    mal.clear()                                       # an honest answer this time
    retried = alice.json("retry", message_id)
    assert retried["status"] == "accepted" and retried["relay_receipt"]["message_id"] == message_id
    assert alice.json("status", message_id, "--no-ack")["state"] == "accepted"
    assert message_id in [m["id"] for m in bob.json("inbox")]


def test_a_queued_message_goes_out_with_the_next_inbox(world):
    mal, people = world.mal, world.people
    alice, bob = people["alice"], people["bob"]
    forge(mal, recipients=["carol"])
    refused = alice.run("send", "--network", NETWORK, "--to", "bob", "--subject", "queued then sent",
                        input="body", ok=False)
    message_id = assert_one_error(refused, contains="stays queued").split("message ")[-1].split(" ")[0]
    mal.clear()
    alice.run("inbox")
    assert alice.json("status", message_id, "--no-ack")["state"] == "accepted"
    assert "queued then sent" in [m["subject"] for m in bob.json("inbox")]


def test_an_acknowledgement_earned_before_the_signer_was_removed_is_kept(world):
    """Not an attack but its cousin: evidence must not be lost because the recipient left the
    network after acknowledging. (Runs last: carol is removed.)"""
    people = world.people
    alice, carol, admin = people["alice"], people["carol"], people["secretariat"]
    message_id = alice.run("send", "--network", NETWORK, "--to", "carol", "--subject", "before removal",
                           input="body").stdout.strip()
    carol.run("inbox")                               # collects and acknowledges
    admin.run("remove", "--network", NETWORK, "carol")
    shown = alice.json("status", message_id)["recipients"]["carol"]
    assert shown["acknowledged"] is not None and shown["removed_since"] is True
    assert "carol (removed since)" in alice.run("status", message_id).stdout
