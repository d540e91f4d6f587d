"""A fork of the membership log, and getting out of it (issue 9, weaker points).

The attack (or accident): the relay shows a member one validly signed entry at some position,
then serves another history (a relay restored from an old backup after an administrator signed
different entries; or a relay showing two members two logs). The member's client must refuse
to go on, and must not stay stuck for good either.

The defence: the client refuses the other history (``TrustError``), records both sides, shows
them with ``comity network fork``, and adopts the relay's history only with ``comity network
repin --head HASH`` after an out-of-band check: the relay's chain must verify from the pinned
genesis and hold exactly the head an administrator confirmed.

What the user is told: ``error: the refco log has forked ...`` with a hint naming ``comity
network fork``; that command prints both sides and both heads.
"""

from __future__ import annotations

import asyncio
import os
import time

from client.api import Comity
from keys.encoding import b64e
from keys.log import entry_hash
from keys.log_records import default_policy, make_entry

from ..e2e_support import PASSPHRASE, assert_one_error
from ._heads_support import show_instead
from .conftest import build_network

NETWORK = "refco"


def test_a_fork_is_refused_shown_and_repaired_only_with_the_confirmed_head(malicious_relay, tmp_path):
    mal = malicious_relay
    people = build_network(mal, tmp_path, "secretariat", ["alice"], network=NETWORK)
    admin, alice = people["secretariat"], people["alice"]
    alice.run("members", "--network", NETWORK)

    async def sign_an_entry_the_relay_never_gets() -> dict:
        os.environ["COMITY_INSECURE_FAST_KDF"] = "1"
        async with Comity.at(admin.home) as client:
            client.unlock(PASSPHRASE)
            row, relay, verifier = await client.connect(NETWORK)
            head = verifier.roster
            policy = dict(default_policy(), max_attachments=7)
            return make_entry(head.head_hash, head.seq + 1, "set-policy", {"policy": policy},
                              client.now(), [client.identity])
    other = asyncio.run(sign_an_entry_the_relay_never_gets())

    # The relay signs the head of the history it shows (it holds its key).
    mal.rewrite("GET", r"/log\?", show_instead(mal, other))
    alice.run("members", "--network", NETWORK)           # alice verifies and keeps the other entry
    mal.clear()

    admin.run("rotate", "--network", NETWORK)             # the real log: another entry there...
    admin.run("rotate", "--network", NETWORK)             # ...and one after it
    stuck = alice.run("members", "--network", NETWORK, ok=False)
    assert_one_error(stuck, contains=f"the {NETWORK} log has forked")
    assert f"comity network fork {NETWORK}" in stuck.stderr

    report = alice.json("network", "fork", NETWORK)
    assert report["ours"]["hash"] == b64e(entry_hash(other))
    assert report["ours"]["kind"] == "set-policy"
    assert report["our_head"]["hash"] == b64e(entry_hash(other))
    relay_head = report["relay_head"]
    assert relay_head["seq"] == other["seq"] + 1 and relay_head["hash"] != report["our_head"]["hash"]
    shown = alice.run("network", "fork", NETWORK).stdout
    assert "this machine holds" in shown and "the relay serves" in shown

    wrong = alice.run("network", "repin", NETWORK, "--head", report["our_head"]["hash"], ok=False)
    assert_one_error(wrong, contains="does not contain the head the administrator confirmed")
    assert_one_error(alice.run("members", "--network", NETWORK, ok=False), contains="forked")

    # Out of band, the administrator reads out the head of its own verified log.
    [confirmed] = [n["head"] for n in admin.json("whoami")["networks"] if n["name"] == NETWORK]
    assert confirmed == relay_head
    repinned = alice.json("network", "repin", NETWORK, "--head", confirmed["hash"])
    assert repinned["seq"] == relay_head["seq"]
    assert {m["handle"] for m in alice.json("members", "--network", NETWORK)} == {"secretariat", "alice"}
    assert_one_error(alice.run("network", "fork", NETWORK, ok=False), contains="no fork")
    again = alice.run("network", "repin", NETWORK, "--head", confirmed["hash"], ok=False)
    assert_one_error(again, contains="no fork of the refco log is recorded here: nothing to repin")


def test_an_entry_whose_signatures_do_not_verify_is_no_fork(malicious_relay, tmp_path):
    """A relay cannot make garbage pass for a second history (and frame a signer with it)."""
    mal = malicious_relay
    people = build_network(mal, tmp_path, "secretariat", ["alice"], network=NETWORK)
    alice = people["alice"]
    [head] = [n["head"] for n in alice.json("whoami")["networks"] if n["name"] == NETWORK]
    junk = {"seq": head["seq"] + 1, "prev": b64e(os.urandom(32)), "kind": "set-policy",
            "time": int(time.time()), "body": {"policy": default_policy()},
            "signatures": [{"key": b64e(os.urandom(32)), "sig": b64e(os.urandom(64))}]}
    mal.rewrite("GET", r"/log\?", show_instead(mal, junk))
    refused = alice.run("members", "--network", NETWORK, ok=False)
    assert_one_error(refused, contains=f"the relay served a {NETWORK} log entry that does not verify")
    mal.clear()
    assert_one_error(alice.run("network", "fork", NETWORK, ok=False), contains="no fork")
    alice.run("members", "--network", NETWORK)            # the honest log still verifies
