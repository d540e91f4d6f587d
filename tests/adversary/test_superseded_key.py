"""A rotated-away identity key still signing (issue 9, break 2).

The attack: a thief holds a member's old identity key. After the member rotated it away, the
thief signs a message (or an acknowledgement) against a log state before the rotation, and a
relay hands it over: recipients checked only that the sender is a member now, so it read
"signature verified"; and a forged acknowledgement, taken first, locked out the genuine one.

The defence: the relay's submission receipt names its log head at acceptance (``log_seq``) and
comes with the envelope. A signature by a key the log has since replaced counts only if that
receipt, verified under the pinned relay key and chained to the delivery, shows the message
reached the relay before the replacing entry; otherwise the message is refused
(``superseded-key``). An acknowledgement by the recipient's current key wins over one that is
not, whichever came first.

What the user is told: the recipient's inbox lists the message as ``[not verified:
superseded-key]`` (``--json``: ``"reason": "superseded-key"``); ``comity read`` refuses it. A
message the member sent before its rotation still reads ``(signature verified)``. The sender's
``comity status`` shows the genuine answer of the current key.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from client.api import Comity
from keys import envelope as env
from keys.encoding import canonical
from keys.receipts import evidence_hash, make_ack, make_relay_receipt

from ..e2e_support import PASSPHRASE
from ._heads_support import deliver_forged

NETWORK = "refco"


def keys_of(member) -> dict:
    """What a thief copying the member's unlocked keystore now would hold, and its log view."""
    async def grab() -> dict:
        os.environ["COMITY_INSECURE_FAST_KDF"] = "1"
        async with Comity.at(member.home) as client:
            client.unlock(PASSPHRASE)
            row, relay, verifier = await client.connect(NETWORK)
            return {"identity": client.identity, "decryption_keys": client.secrets.decryption_keys(),
                    "verifier": verifier, "roster": verifier.roster, "at": client.now()}
    return asyncio.run(grab())


def rotate_identity(member, admin) -> None:
    new = member.json("rotate", "--identity", "--network", NETWORK)["fingerprint"]
    # The member reads the new fingerprint to the administrator out of band.
    admin.run("approve-rotation", "--network", NETWORK, member.handle, "--fingerprint", new)
    member.run("members", "--network", NETWORK)          # the new key is in force here


def relay_head(mal) -> int:
    with mal.relay.db() as db:
        return db.execute("SELECT max(seq) FROM log_entries WHERE network = ?", [NETWORK]).fetchone()[0]


def relay_receipt(mal, kind: str, envelope: dict, **fields) -> dict:
    return make_relay_receipt(mal.key, kind, network=envelope["network"], message_id=envelope["id"],
                              envelope_hash=env.envelope_hash(envelope), sender=envelope["sender"],
                              **fields)


@pytest.mark.parametrize("acceptance", ["none", "after the rotation"])
def test_a_message_signed_by_a_replaced_identity_key_is_refused(world, acceptance):
    mal, people = world.mal, world.people
    admin, alice, bob = people["secretariat"], people["alice"], people["bob"]
    stolen = keys_of(alice)
    rotate_identity(alice, admin)
    # The thief signs as alice with the old key, against the log before her rotation.
    forged, _ = env.seal(stolen["identity"], "alice", stolen["roster"], ["bob"],
                         {"type": "request", "subject": "urgent: wire the funds"}, "signed by a thief",
                         created=int(time.time()))
    submission = None
    if acceptance != "none":      # the relay signs, truthfully, that it accepted it just now
        submission = relay_receipt(mal, "submission-accepted", forged, time=int(time.time()),
                                   recipients=["bob"], log_seq=relay_head(mal))
    delivery = relay_receipt(mal, "delivered", forged, time=int(time.time()), recipient="bob",
                             prev=evidence_hash(submission) if submission else bytes(32))
    deliver_forged(mal, "bob", forged, submission=submission, delivery=delivery)

    collected = bob.run("inbox", "--json")
    if acceptance == "none":
        # Nothing says when it was submitted: never shown, never signed as a rejection either
        # (a relay could otherwise earn a false signed rejection by leaving the acceptance out).
        assert forged["id"] not in [m["id"] for m in collected.json()]
        assert f"message {forged['id']} in {NETWORK} cannot be opened yet (acceptance-missing" in collected.stderr
        return
    [shown] = [m for m in collected.json() if m["id"] == forged["id"]]
    assert (shown["verified"], shown["reason"]) == (False, "superseded-key")
    assert "[not verified: superseded-key]" in bob.run("inbox").stdout
    refused = bob.run("read", forged["id"], ok=False)
    assert "failed verification (superseded-key)" in refused.stderr


def test_a_message_sent_before_the_rotation_still_verifies(world):
    people = world.people
    admin, alice, bob = people["secretariat"], people["alice"], people["bob"]
    message_id = alice.run("send", "--network", NETWORK, "--to", "bob", "--subject", "before",
                           input="sent, then my key was rotated").stdout.strip()
    rotate_identity(alice, admin)
    [shown] = [m for m in bob.json("inbox") if m["id"] == message_id]
    assert shown["verified"] is True
    assert "from:      alice (signature verified)" in bob.run("read", message_id).stdout


def test_an_acknowledgement_by_the_current_key_wins_over_a_forged_earlier_one(world):
    mal, people = world.mal, world.people
    admin, alice, bob = people["secretariat"], people["alice"], people["bob"]
    message_id = alice.run("send", "--network", NETWORK, "--to", "bob", "--subject", "for bob",
                           input="wrapped to bob's key of today").stdout.strip()
    with mal.relay.db() as db:
        [sent] = db.execute("SELECT envelope FROM envelopes WHERE network = ? AND message_id = ?",
                            [NETWORK, message_id]).fetchone()
    envelope = json.loads(sent)
    stolen = keys_of(bob)                                 # bob's keys and log, copied by a thief
    rotate_identity(bob, admin)

    # The relay damages bob's copy: bob, now signing with his new key, truthfully rejects it.
    def damage(status, body, req):
        answer = json.loads(body)
        text = answer["envelope"]["ciphertext"]
        answer["envelope"]["ciphertext"] = ("A" if text[0] != "A" else "B") + text[1:]
        return status, json.dumps(answer).encode()
    mal.rewrite("GET", rf"/messages/{message_id}$", damage)
    bob.run("inbox")
    mal.clear()
    with mal.relay.db() as db:
        [delivered] = db.execute("SELECT receipt FROM receipts WHERE network = ? AND message_id = ? "
                                 "AND recipient = 'bob' AND kind = 'delivery'",
                                 [NETWORK, message_id]).fetchone()

    # The thief, with bob's old keys, reads the message and acknowledges it as bob; the relay,
    # colluding, dates its acceptance before bob's rotation and lists it first for alice.
    opened = env.open(envelope, recipient_handle="bob", decryption_keys=stolen["decryption_keys"],
                      roster_at=stolen["verifier"].roster_at)
    ack = make_ack(stolen["identity"], "acknowledged", network=envelope["network"],
                   message_id=message_id, envelope_hash=env.envelope_hash(envelope), sender="alice",
                   recipient="bob", time=int(time.time()),
                   prev=evidence_hash(json.loads(delivered)),
                   payload_hash=opened.payload_hash())
    forged, _ = env.seal(stolen["identity"], "bob", stolen["roster"], ["alice"],
                         {"type": "receipt", "subject": f"acknowledged: {message_id}",
                          "in_reply_to": message_id}, canonical(ack).decode("utf-8"),
                         created=stolen["at"])
    submission = relay_receipt(mal, "submission-accepted", forged, time=stolen["at"],
                               recipients=["alice"], log_seq=stolen["roster"].seq)
    delivery = relay_receipt(mal, "delivered", forged, time=int(time.time()), recipient="alice",
                             prev=evidence_hash(submission))
    deliver_forged(mal, "alice", forged, submission=submission, delivery=delivery)

    shown = alice.json("status", message_id)["recipients"]["bob"]
    assert shown["acknowledged"] is None                  # the thief's "acknowledged" lost...
    assert (shown["rejected"] is not None, shown["reason"]) == (True, "decryption-failed")
