"""A temporary fault must not become a permanent, signed false rejection (issue 9, break 8).

The attack (or plain bad luck): the relay fails to serve an attachment, serves it damaged, or is
a moment behind on the membership log when a recipient collects. Before, the recipient told the
relay "collected" (so the message was deleted) and signed ``rejected`` against a valid message:
a signed, false statement in the sender's evidence.

The defence: only failures that retrying cannot change (a bad signature, a wrong recipient,
content that does not decrypt) are signed as rejections. A transient failure signs nothing,
leaves the message at the relay, and is retried with backoff, or at once with ``comity retry``.

What the user is told: ``warning: message ID in NETWORK cannot be opened yet (REASON: ...);
attempt N, retried automatically, or now with 'comity retry ID --network NETWORK'``.
"""

from __future__ import annotations

import json

import pytest

from ._heads_support import hide_from
from .conftest import MaliciousRelay

NETWORK = "refco"




def recipient_status(sender, message_id: str, recipient: str) -> dict:
    return sender.json("status", message_id, "--no-ack")["recipients"][recipient]


@pytest.mark.parametrize("fault", ["missing", "damaged"])
def test_an_attachment_the_relay_cannot_serve_is_retried_not_rejected(world, fault):
    mal, people, root = world.mal, world.people, world.root
    alice, bob = people["alice"], people["bob"]
    annex = root / f"annex-{fault}.pdf"
    annex.write_bytes(b"%PDF-1.4 " + bytes(range(256)) * 40)
    message_id = alice.run("send", "--network", NETWORK, "--to", "bob", "--subject", f"blob {fault}",
                           "--attach", str(annex), input="see the annex").stdout.strip()
    if fault == "missing":
        mal.on_request("GET", r"/blobs/", lambda req: (404, json.dumps(
            {"error": "not-found", "message": "no such blob"}).encode()))
    else:
        def damage(status, body, req):
            return status, body[:-1] + bytes([body[-1] ^ 1])
        mal.rewrite("GET", r"/blobs/", damage)

    for attempt in (1, 2):
        collected = bob.run("inbox", "--json")
        assert message_id not in [m["id"] for m in collected.json()]
        if attempt == 1:
            assert (f"warning: message {message_id} in {NETWORK} cannot be opened yet "
                    "(attachment-unavailable") in collected.stderr
            assert f"'comity retry {message_id} --network {NETWORK}'" in collected.stderr
    shown = recipient_status(alice, message_id, "bob")
    assert shown["rejected"] is None and shown["acknowledged"] is None     # nothing signed

    mal.clear()                                      # the relay serves the blob again
    assert bob.json("retry", message_id)["status"] == "collected"
    assert bob.json("read", message_id)["verified"] is True
    shown = recipient_status(alice, message_id, "bob")
    assert shown["acknowledged"] is not None and shown["rejected"] is None


def test_a_log_entry_not_shown_yet_is_retried_not_rejected_as_a_fork(world):
    mal, people = world.mal, world.people
    alice, bob = people["alice"], people["bob"]
    seq = max(e["seq"] for e in _log(mal, alice)) + 1       # the entry alice's rotation will make
    alice.run("rotate", "--network", NETWORK)

    # bob is shown the log up to seq - 1, under a head the relay signs (it holds its key)
    mal.rewrite("GET", r"/log\?", hide_from(mal, NETWORK, seq))
    message_id = alice.run("send", "--network", NETWORK, "--to", "bob", "--subject", "after rotation",
                           input="body").stdout.strip()
    collected = bob.run("inbox", "--json")
    assert message_id not in [m["id"] for m in collected.json()]
    assert f"(log-behind: the message names membership log entry {seq}" in collected.stderr
    assert recipient_status(alice, message_id, "bob")["rejected"] is None

    mal.clear()
    assert bob.json("retry", message_id)["status"] == "collected"
    shown = recipient_status(alice, message_id, "bob")
    assert shown["acknowledged"] is not None and shown["rejected"] is None


def _log(mal: MaliciousRelay, member) -> list[dict]:
    """The log entries the member's client stored (read through a harmless command)."""
    member.run("members", "--network", NETWORK)
    import sqlite3
    conn = sqlite3.connect(member.home / "comity.db")
    try:
        return [json.loads(r[0]) for r in conn.execute("SELECT entry FROM log_entries WHERE network = ?",
                                                        [NETWORK])]
    finally:
        conn.close()


def test_an_upload_piece_the_relay_stopped_waiting_for_is_resumed(world):
    """The relay answers 408 request-timeout to a piece whose body stalled (relay/httputil.py
    body_chunks): the sender asks where to go on and finishes the upload, not fails the send."""
    mal, people, root = world.mal, world.people, world.root
    alice, bob = people["alice"], people["bob"]
    annex = root / "annex-stalled.bin"
    annex.write_bytes(bytes(range(256)) * 4000)
    refused = []

    def stall_first_piece(req):
        if refused:
            return None                              # later pieces reach the relay
        refused.append(req.path)
        return 408, json.dumps({"error": "request-timeout",
                                "message": "the request body stopped arriving"}).encode()
    mal.on_request("PATCH", r"/blobs/", stall_first_piece)
    sent = alice.run("send", "--network", NETWORK, "--to", "bob", "--subject", "stalled piece",
                     "--attach", str(annex), input="see the annex")
    assert refused, "the first piece was refused with 408"
    message_id = sent.stdout.strip()
    assert message_id in [m["id"] for m in bob.run("inbox", "--json").json()]
    saved = bob.json("read", message_id)
    assert saved["verified"] is True
