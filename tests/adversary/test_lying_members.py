"""Members who lie to break another member's tools (found in review of issue 9).

1. A recipient signs an acknowledgement that hangs off nothing (a made-up ``prev``), to break
   the sender's ``status`` and ``export`` for good ("does not chain"). Defence: only an
   acknowledgement that follows the relay's delivery receipt to its signer counts; another is
   kept, not counted, and reported. The user is told: ``warning: bob's acknowledged of ID does
   not follow the relay's delivery receipt to them: not counted as evidence``.
2. A sender sends a message that makes the recipient's ``watch --exec`` hook fail, to hold back
   every later message. Defence: a failing message is retried (at most 5 times) without holding
   back the others.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys

from client.api import Comity
from keys import envelope as env
from keys.encoding import canonical
from keys.receipts import make_ack

from ..e2e_support import PASSPHRASE

NETWORK = "refco"


def test_an_acknowledgement_that_follows_nothing_cannot_break_the_senders_evidence(world, tmp_path):
    alice, bob = world.people["alice"], world.people["bob"]
    message_id = alice.run("send", "--network", NETWORK, "--to", "bob", "--subject", "to be acked",
                           input="body").stdout.strip()
    bob.run("inbox", "--no-ack")

    async def lie() -> None:
        os.environ["COMITY_INSECURE_FAST_KDF"] = "1"
        async with Comity.at(bob.home) as client:
            client.unlock(PASSPHRASE)
            row, relay, verifier = await client.connect(NETWORK)
            [(_, held)] = client.state.find("message", message_id)
            ack = make_ack(client.identity, "acknowledged", network=verifier.roster.genesis_hash,
                           message_id=message_id, envelope_hash=env.envelope_hash(held["envelope"]),
                           sender="alice", recipient="bob", time=client.now(), prev=os.urandom(32),
                           payload_hash=env.payload_hash(held["signed_payload"]))
            sealed, _ = env.seal(client.identity, "bob", verifier.roster, ["alice"],
                                 {"type": "receipt", "subject": "acknowledged", "in_reply_to": message_id},
                                 canonical(ack).decode("utf-8"), created=client.now())
            await relay.submit(NETWORK, "bob", sealed)
    asyncio.run(lie())

    shown = alice.run("status", message_id, "--json")
    assert "bob's acknowledged of " + message_id + " does not follow the relay's delivery receipt" in shown.stderr
    bob_row = shown.json()["recipients"]["bob"]
    assert bob_row["delivered"] is not None and bob_row["acknowledged"] is None
    out = tmp_path / "still-exportable.evidence.json"
    alice.run("export", message_id, "--out", str(out))
    assert "the bundle verifies" in alice.run("verify", str(out)).stdout


def test_a_message_that_makes_the_hook_fail_does_not_hold_back_the_others(world, tmp_path):
    alice, bob = world.people["alice"], world.people["bob"]
    ran = tmp_path / "ran.txt"
    hook = ("import json, sys\n"
            "m = json.load(sys.stdin)\n"
            "open(sys.argv[1], 'a').write(m['subject'] + '\\n')\n"
            "sys.exit(1 if m['subject'].startswith('poison') else 0)\n")
    command = " ".join(shlex.quote(p) for p in (sys.executable, "-c", hook, str(ran)))
    bob.run("inbox")                                          # nothing older in the way
    for subject in ("poison pill", "a genuine request"):
        alice.run("send", "--network", NETWORK, "--to", "bob", "--subject", subject, input="body")
    first = bob.run("watch", "--once", "--exec", command)
    assert "--exec failed for" in first.stderr and "will retry" in first.stderr
    assert "a genuine request" in ran.read_text().splitlines()
    for _ in range(5):
        bob.run("watch", "--once", "--exec", command)
    lines = ran.read_text().splitlines()
    assert lines.count("a genuine request") == 1
    assert lines.count("poison pill") == 5                    # tried, then given up on
