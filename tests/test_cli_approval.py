"""`comity approve` and `comity approve-rotation` sign only a fingerprint someone compared.

End to end: the real relay on 127.0.0.1 port 0 and the real `comity` commands. Each refusal
changes nothing (checked with `pending` and `members`). The terminal confirmation runs the
command on a pseudo-terminal and answers its prompt (tests/adversary/_rotation_support.py).
"""

from __future__ import annotations

import pytest

from .adversary._rotation_support import identity_fingerprint, network_with, run_answering
from .e2e_support import Member, RelayProcess, assert_one_error, invite

NETWORK = "iberred"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("approval")
    relay = RelayProcess(root / "relay", root / "logs")
    try:
        admin, members = network_with(relay, root, NETWORK, "bob")
        yield root, admin, members["bob"]
    finally:
        relay.stop()


def _members(admin: Member) -> dict[str, str]:
    return {m["handle"]: m["fingerprint"] for m in admin.json("members", "--network", NETWORK)}


def _waiting(admin: Member, kind: str) -> list[dict]:
    return admin.json("pending", "--network", NETWORK)[kind]


def test_approve_signs_only_the_fingerprint_the_enrollee_read_out(world):
    root, admin, _ = world
    carol, dave = (Member(h, root / "homes" / h) for h in ("carol", "dave"))
    for person in (carol, dave):
        person.run("enroll", invite(admin, NETWORK, person.handle))
    fingerprint = identity_fingerprint(carol)

    refused = admin.run("approve", "--network", NETWORK, "carol", ok=False)
    assert_one_error(refused, status=2, contains="refusing to approve carol without the fingerprint")
    assert refused.error_lines()[1].startswith("hint: pass --fingerprint")
    assert_one_error(admin.run("approve", "--network", NETWORK, "carol", "--fingerprint", "12ab",
                               ok=False), status=2, contains="invalid fingerprint")
    other = identity_fingerprint(dave)
    assert_one_error(admin.run("approve", "--network", NETWORK, "carol", "--fingerprint", other,
                               ok=False), contains="does not have fingerprint")
    status, screen = run_answering(admin, "approve", "--network", NETWORK, "carol", answer="n")
    assert status == 1 and f"enrollment for carol, fingerprint {fingerprint}" in screen, screen
    assert "error: not approved: nothing was signed" in screen
    assert "carol" not in _members(admin)
    assert [p["handle"] for p in _waiting(admin, "enrollments")] == ["carol", "dave"]

    status, screen = run_answering(admin, "approve", "--network", NETWORK, "carol", answer="y")
    assert status == 0 and f"approved carol (member), fingerprint {fingerprint}" in screen, screen
    # Spaces optional, any case.
    approved = admin.json("approve", "--network", NETWORK, "dave",
                          "--fingerprint", other.replace(" ", "").upper())
    assert approved == {"handle": "dave", "fingerprint": other, "role": "member"}
    assert _members(admin)["carol"] == fingerprint and _members(admin)["dave"] == other


def test_approve_rotation_signs_only_the_new_fingerprint_the_member_read_out(world):
    _, admin, bob = world
    old = identity_fingerprint(bob)
    new = bob.json("rotate", "--identity")["fingerprint"]
    [waiting] = _waiting(admin, "rotations")
    assert {k: v for k, v in waiting.items() if k not in ("id", "submitted_at")} == {
        "handle": "bob", "fingerprint": new, "current_fingerprint": old, "verified": True,
        "problem": None, "conflict": False}

    refused = admin.run("approve-rotation", "--network", NETWORK, "bob", ok=False)
    assert_one_error(refused, status=2, contains="refusing to approve bob without the fingerprint")
    assert refused.error_lines()[1].startswith("hint: pass --fingerprint")
    assert_one_error(admin.run("approve-rotation", "--network", NETWORK, "bob",
                               "--fingerprint", old, ok=False),
                     contains=f"no identity rotation from bob to fingerprint {old}")
    status, screen = run_answering(admin, "approve-rotation", "--network", NETWORK, "bob",
                                   answer="")           # Enter: the default is no
    assert status == 1 and f"identity rotation for bob, fingerprint {new}" in screen, screen
    assert "error: not approved: nothing was signed" in screen
    assert _members(admin)["bob"] == old and len(_waiting(admin, "rotations")) == 1

    status, screen = run_answering(admin, "approve-rotation", "--network", NETWORK, "bob",
                                   answer="y")
    assert status == 0 and f"bob now signs with {new}" in screen, screen
    assert _members(admin)["bob"] == new and _waiting(admin, "rotations") == []
