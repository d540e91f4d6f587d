"""Attack: a thief with a copy of a member's old identity key races the member's identity rotation.

Bob asks to rotate his identity key; a thief holding a copy of bob's COMITY_HOME (his old keys
and passphrase) asks for a rotation onto the thief's own key right after. Before issue 9 the
relay kept one request per member, the thief's replaced bob's, and `approve-rotation` signed
whatever was waiting without showing it: the thief owned bob's identity.

Defence: the relay keeps every request (none replaces another); `comity pending` shows each with
its new fingerprint, checked by the administrator's own client, and marks competing requests for
one member as a conflict; `approve-rotation` signs only the fingerprint the member read out
(`--fingerprint`, or a confirmation on a terminal), never picks between competing requests, and
refuses without either on a non-terminal. What the user is told: `CONFLICT` and a warning naming
bob in `pending`; `error: refusing to approve bob without the fingerprint ...` with `hint: pass
--fingerprint ...`; after approval, `bob now signs with FPR` and a warning that a competing
rotation made with bob's old key was left unsigned. A relay that alters a waiting request (its
own key swapped in) gets it listed as failing its check, and nothing signed.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e_support import RelayProcess, assert_one_error

from ._rotation_support import identity_fingerprint, network_with, run_answering, stolen_copy

NETWORK = "refco"


@pytest.fixture
def relay(tmp_path):
    relay = RelayProcess(tmp_path / "relay", tmp_path / "logs")
    yield relay
    relay.stop()


def test_a_thiefs_competing_rotation_is_shown_and_never_signed_blindly(relay, tmp_path):
    admin, members = network_with(relay, tmp_path, NETWORK, "bob")
    bob = members["bob"]
    old = identity_fingerprint(bob)
    thief = stolen_copy(bob, tmp_path / "homes" / "thief")

    mine = bob.json("rotate", "--identity")["fingerprint"]
    theirs = thief.json("rotate", "--identity")["fingerprint"]
    assert len({old, mine, theirs}) == 3

    # The administrator sees both requests, with their fingerprints, as a conflict.
    listed = admin.json("pending", "--network", NETWORK)["rotations"]
    assert sorted((r["handle"], r["fingerprint"], r["current_fingerprint"], r["verified"],
                   r["conflict"]) for r in listed) == sorted(
        [("bob", mine, old, True, True), ("bob", theirs, old, True, True)])
    shown = admin.run("pending", "--network", NETWORK)
    rows = [line.split() for line in shown.stdout.splitlines()]
    assert [row[0] for row in rows] == ["ROTATING", "bob", "bob"]
    for fingerprint in (mine, theirs):
        assert any(" ".join(row[1:-1]) == fingerprint and row[-1] == "CONFLICT" for row in rows)
    assert "warning: competing identity rotations for bob" in shown.stderr

    # A script that names no fingerprint is refused; nothing is signed.
    refused = admin.run("approve-rotation", "--network", NETWORK, "bob", ok=False)
    assert_one_error(refused, status=2, contains="refusing to approve bob without the fingerprint")
    assert refused.error_lines()[1].startswith("hint: pass --fingerprint")
    # On a terminal too: with two competing requests the command will not pick one.
    status, screen = run_answering(admin, "approve-rotation", "--network", NETWORK, "bob",
                                   answer=None)
    assert status == 2 and "error: 2 competing identity rotations for bob" in screen, screen
    assert "hint: pass --fingerprint" in screen
    assert _fingerprints(admin)["bob"] == old
    assert len(admin.json("pending", "--network", NETWORK)["rotations"]) == 2

    # With the fingerprint bob read out, bob's request is the one signed, and the admin is warned.
    approved = admin.run("approve-rotation", "--network", NETWORK, "bob", "--fingerprint", mine)
    assert approved.stdout == f"bob now signs with {mine}\n"
    assert "competing identity rotation(s) for bob" in approved.stderr and theirs in approved.stderr
    assert _fingerprints(admin)["bob"] == mine

    # The thief's request is stale: not listed, not approvable, and the old key is worthless.
    assert admin.json("pending", "--network", NETWORK)["rotations"] == []
    assert_one_error(admin.run("approve-rotation", "--network", NETWORK, "bob",
                               "--fingerprint", theirs, ok=False),
                     contains="no identity rotation from bob is waiting")
    assert thief.run("rotate", "--identity", ok=False).status != 0
    assert _fingerprints(admin)["bob"] == mine
    bob.run("members", "--network", NETWORK)            # bob's client takes up the new key
    assert identity_fingerprint(bob) == mine


def _fingerprints(admin) -> dict[str, str]:
    return {m["handle"]: m["fingerprint"] for m in admin.json("members", "--network", NETWORK)}


def test_a_relay_that_alters_a_waiting_rotation_gets_nothing_signed(relay, tmp_path):
    """The relay (or whoever holds its database) swaps its own key into bob's request. The
    administrator's client checks the listed entry itself: shown as failing, never signed."""
    from keys.encoding import canonical
    from keys.identity import IdentityKey, format_fingerprint

    admin, members = network_with(relay, tmp_path, NETWORK, "bob")
    old = identity_fingerprint(members["bob"])
    mine = members["bob"].json("rotate", "--identity")["fingerprint"]
    planted = IdentityKey.generate().public
    with relay.db() as db:
        [(rotation_id, text)] = db.execute("SELECT rotation_id, entry FROM pending_rotations")
        entry = json.loads(text)
        entry["body"]["identity_key"] = planted.b64()
        db.execute("UPDATE pending_rotations SET entry = ? WHERE rotation_id = ?",
                   [canonical(entry).decode("utf-8"), rotation_id])

    [listed] = admin.json("pending", "--network", NETWORK)["rotations"]
    assert listed["fingerprint"] == format_fingerprint(planted.fingerprint())
    assert listed["verified"] is False and listed["problem"], listed
    for fingerprint in (listed["fingerprint"], mine):
        assert_one_error(admin.run("approve-rotation", "--network", NETWORK, "bob",
                                   "--fingerprint", fingerprint, ok=False),
                         contains="bob's identity rotation cannot be approved")
    assert _fingerprints(admin)["bob"] == old
