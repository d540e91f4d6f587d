"""A relay that sends more than an attachment's signed size cannot fill the recipient's disk.

The attack: the relay answers the download of a 54-byte attachment (its ciphertext size, signed
by the sender in the manifest) with megabytes. Before, the client wrote everything it was sent
(41.9 MB for that attachment) and only then found the hash wrong.

The defence: the client asks for, and accepts, at most the signed ``ciphertext_size``; a larger
announced length is refused before the body is read, and a body that runs past it is cut off at
the first byte too many. Nothing beyond the signed size reaches the disk; the part already
written is deleted. The message waits at the relay, as for any transient fault (break 8).

What the user is told: ``warning: message ID in refco cannot be opened yet
(attachment-unavailable: attachment annex.txt: the relay at URL sent more than the 54 bytes
asked for: refused); attempt 1, retried automatically, or now with 'comity retry ID --network
refco'``.
"""

from __future__ import annotations

from ._attach_support import run_with_file_limit
from .conftest import build_network

NETWORK = "refco"
#: what the lying relay sends for the attachment
FLOOD = 32 * 1024 * 1024
#: no file the client writes may grow past this (its database and log stay far below it)
FILE_LIMIT = 4 * 1024 * 1024
#: 12 bytes of plaintext are 54 bytes of stream: 26 header + 12 + 16 tag
PLAINTEXT = b"twelve bytes"
CIPHERTEXT_SIZE = 54


def test_a_download_stops_at_the_signed_size(malicious_relay, tmp_path):
    mal = malicious_relay
    people = build_network(mal, tmp_path, "secretariat", ["alice", "bob"], network=NETWORK)
    alice, bob = people["alice"], people["bob"]
    annex = tmp_path / "annex.txt"
    annex.write_bytes(PLAINTEXT)
    message_id = alice.run("send", "--network", NETWORK, "--to", "bob", "--subject", "small annex",
                           "--attach", str(annex), input="see the annex").stdout.strip()
    mal.on_request("GET", r"/blobs/", lambda req: (200, b"\0" * FLOOD,
                                                   {"Content-Type": "application/octet-stream"}))

    collected = run_with_file_limit(bob, FILE_LIMIT, "inbox", "--json")
    assert collected.status == 0, collected.stderr          # not killed for a file too large
    assert message_id not in [m["id"] for m in collected.json()]
    assert (f"warning: message {message_id} in {NETWORK} cannot be opened yet (attachment-unavailable: "
            f"attachment annex.txt: the relay at {mal.url} sent more than the {CIPHERTEXT_SIZE} bytes "
            "asked for: refused)") in collected.stderr
    assert all(p.stat().st_size <= CIPHERTEXT_SIZE for p in (bob.home / "blobs").iterdir())

    mal.clear()                                              # the relay serves the real bytes
    assert bob.json("retry", message_id)["status"] == "collected"
    saved = bob.json("read", message_id, "--save-attachments", str(tmp_path / "saved"))
    assert (tmp_path / "saved" / "annex.txt").read_bytes() == PLAINTEXT
    assert saved["attachments"][0]["saved_to"] == str(tmp_path / "saved" / "annex.txt")
