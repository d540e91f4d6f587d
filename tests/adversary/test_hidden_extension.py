"""A lying sender cannot hide an attachment's real extension in the name it signs.

The attack: a member's modified client names an attachment so that it reads as one thing and
is another: zero-width characters, a byte-order mark or a soft hyphen inside the name; an
Arabic letter mark (a direction character the protocol's name rule lets through); trailing dots
and spaces; a fullwidth dot that looks like "." but is not one; a Windows device name. The
manifest's name rule (docs/protocol.md §5) refuses control characters and direction overrides,
not these.

The defence: the recipient's client makes its own name for disk (client/filenames.py): NFKC,
format and control characters dropped, no trailing dots or spaces, device names prefixed, so
the saved name is exactly what the file system and every program see. ``comity read`` shows the
name as sent, escaped and quoted, beside the path it was saved to.

What the user is told: ``attached:  "invoice.pdf\\u200b\\u200b.exe" (14 B) ->
DIR/invoice.pdf.exe``; ``--json`` gives the name as sent and ``saved_to``.
"""

from __future__ import annotations


from ._attach_support import send_with_names
from .conftest import build_network

NETWORK = "refco"
#: sent name -> the name it is saved under -> how ``read`` shows the sent name
CASES = [
    ("invoice.pdf\u200b\u200b.exe", "invoice.pdf.exe", '"invoice.pdf\\u200b\\u200b.exe"'),
    ("scan\u061cfdp.exe", "scanfdp.exe", '"scan\\u061cfdp.exe"'),
    ("\ufeffsummary\u00ad.docx", "summary.docx", '"\\ufeffsummary\\xad.docx"'),
    ("notes.txt . . .", "notes.txt", '"notes.txt . . ."'),
    ("contract\uff0epdf", "contract.pdf", "contract\uff0epdf"),
    ("CON.txt", "_CON.txt", "CON.txt"),
]


def test_saved_names_show_what_the_file_system_sees(malicious_relay, tmp_path):
    people = build_network(malicious_relay, tmp_path, "secretariat", ["mallory", "bob"], network=NETWORK)
    mallory, bob = people["mallory"], people["bob"]
    files = []
    for n, _ in enumerate(CASES):
        files.append(tmp_path / "outgoing" / f"file-{n}.bin")
        files[-1].parent.mkdir(exist_ok=True)
        files[-1].write_bytes(b"annex number %d" % n)
    message_id = send_with_names(mallory, "bob", files, [sent for sent, _, _ in CASES], network=NETWORK)
    bob.run("inbox")
    folder = tmp_path / "received"

    message = bob.json("read", message_id, "--save-attachments", str(folder))
    assert [a["name"] for a in message["attachments"]] == [sent for sent, _, _ in CASES]
    assert [a["saved_to"] for a in message["attachments"]] == [str(folder / saved) for _, saved, _ in CASES]
    for (_, saved, _), source in zip(CASES, files):
        assert (folder / saved).read_bytes() == source.read_bytes()

    shown = bob.run("read", message_id, "--save-attachments", str(tmp_path / "again")).stdout
    for (_, saved, sent_shown), source in zip(CASES, files):
        size = len(source.read_bytes())
        assert f"attached:  {sent_shown} ({size} B) -> {tmp_path / 'again' / saved}\n" in shown, shown
    assert sorted(p.name for p in folder.iterdir()) == sorted(saved for _, saved, _ in CASES)
