"""End-to-end: saving received attachments (``comity inbox``, ``comity read --save-attachments``).

A real relay on 127.0.0.1, a network made with the real commands; ``alice`` sends, the others
receive. What is checked is what a user finds on disk and reads on the terminal: a link in the
target folder is never followed, a taken name gets the next numbered one (a bounded number of
times), a name too long for the file system is shortened keeping its extension, saved files and
the local cache are private whatever the umask, and the cache is named by the hash the sender
signed and checked every time it is used.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from .adversary._attach_support import (NETWORK, mode, run_with_umask,
                                        send_with_names)
from .e2e_support import Member, RelayProcess, assert_one_error, make_network

#: a command that would loop forever (the bug this file guards against) is cut off after this
SAVE_TIMEOUT = 60.0
#: the name limit of ext4, XFS, Btrfs and APFS, in UTF-8 bytes
NAME_MAX = 255


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    root = tmp_path_factory.mktemp("attach")
    relay = RelayProcess(root / "relay", root / "logs")
    try:
        members = make_network(relay.url, relay, root, ["alice", "bob", "carol", "dave"], network=NETWORK)
        yield root, relay, members
    finally:
        relay.stop()


def _send(net, to: str, name: str, content: bytes) -> tuple[str, Path]:
    root, _, members = net
    source = root / "outgoing" / to / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(content)
    sent = members["alice"].run("send", "--network", NETWORK, "--to", to, "--subject", "annex",
                                "--body", "see the annex", "--attach", str(source))
    return sent.stdout.strip(), source


def _save(member: Member, message_id: str, folder: Path) -> list[dict]:
    read = member.run("read", message_id, "--save-attachments", str(folder), "--json", timeout=SAVE_TIMEOUT)
    return read.json()["attachments"]


def test_links_in_the_folder_are_never_followed(net, tmp_path):
    root, _, members = net
    message_id, source = _send(net, "bob", "request.pdf", b"%PDF-1.4 the request")
    members["bob"].run("inbox")
    folder, victim = tmp_path / "received", tmp_path / "victim.txt"
    folder.mkdir()
    victim.write_bytes(b"not to be touched")
    (folder / "request.pdf").symlink_to(tmp_path / "nowhere" / "planted")     # dangling
    (folder / "request (1).pdf").symlink_to(victim)
    saved = _save(members["bob"], message_id, folder)
    assert saved[0]["saved_to"] == str(folder / "request (2).pdf")
    assert Path(saved[0]["saved_to"]).read_bytes() == source.read_bytes()
    assert not (tmp_path / "nowhere").exists() and victim.read_bytes() == b"not to be touched"
    assert sorted(p.name for p in folder.iterdir()) == ["request (1).pdf", "request (2).pdf", "request.pdf"]


def test_a_folder_holding_every_numbered_copy_is_a_clear_error(net, tmp_path):
    _, _, members = net
    message_id, _ = _send(net, "bob", "memo.txt", b"memo")
    members["bob"].run("inbox")
    folder = tmp_path / "full"
    folder.mkdir()
    for name in ["memo.txt", *(f"memo ({n}).txt" for n in range(1, 100))]:
        (folder / name).write_bytes(b"older")
    result = members["bob"].run("read", message_id, "--save-attachments", str(folder), ok=False,
                                timeout=SAVE_TIMEOUT)
    assert_one_error(result, contains="already holds it and 99 numbered copies")
    assert len(list(folder.iterdir())) == 100


def test_a_name_too_long_for_the_file_system_is_shortened_keeping_its_extension(net, tmp_path):
    root, _, members = net
    files = [root / "outgoing" / "long-1.bin", root / "outgoing" / "long-2.bin"]
    for n, path in enumerate(files):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"annex %d" % n)
    names = ["é" * 200, "é" * 200 + ".pdf"]           # 400 and 404 bytes in UTF-8
    message_id = send_with_names(members["alice"], "bob", files, names)
    members["bob"].run("inbox")
    saved = _save(members["bob"], message_id, tmp_path / "long")
    assert [a["name"] for a in saved] == names          # --json: the names as sent
    paths = [Path(a["saved_to"]) for a in saved]
    assert paths[0].name == "é" * 127                    # 254 bytes: a whole character fits no more
    assert paths[1].name == "é" * 125 + ".pdf"
    assert all(len(p.name.encode("utf-8")) <= NAME_MAX for p in paths)
    assert [p.read_bytes() for p in paths] == [b"annex 0", b"annex 1"]
    # Shown in full as sent, then where it went.
    shown = members["bob"].run("read", message_id).stdout
    assert f"attached:  {'é' * 200}.pdf (7 B)" in shown


def test_saved_files_and_the_cache_are_private_whatever_the_umask(net, tmp_path):
    root, _, members = net
    carol = members["carol"]
    message_id, source = _send(net, "carol", "statement.pdf", b"bank statement")
    assert run_with_umask(carol, 0, "inbox").status == 0
    cached = [p for p in (carol.home / "blobs").iterdir()]
    assert cached and all(mode(p) == 0o600 for p in cached), [oct(mode(p)) for p in cached]
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    folder = existing / "new" / "deeper"
    read = run_with_umask(carol, 0, "read", message_id, "--save-attachments", str(folder), "--json")
    assert read.status == 0, read.stderr
    saved = Path(read.json()["attachments"][0]["saved_to"])
    assert saved.read_bytes() == source.read_bytes()
    assert mode(saved) == 0o600
    assert mode(folder) == mode(folder.parent) == 0o700
    assert mode(existing) == 0o755                      # not comity's to change


def test_the_cache_is_named_by_the_signed_hash_and_checked_at_every_use(net, tmp_path):
    root, relay, members = net
    dave = members["dave"]
    before = set(relay.blob_dir.iterdir())
    message_id, source = _send(net, "dave", "evidence.bin", os.urandom(5000))
    (blob,) = set(relay.blob_dir.iterdir()) - before
    ciphertext = blob.read_bytes()
    digest = hashlib.sha256(ciphertext).hexdigest()
    # A file of the right size but the wrong bytes already sits under that name (damaged, or
    # planted by another program): it is hashed, found wrong, and fetched anew.
    planted = dave.home / "blobs" / digest
    planted.write_bytes(os.urandom(len(ciphertext)))
    new = dave.json("inbox")
    assert [m["verified"] for m in new if m["id"] == message_id] == [True]
    assert planted.read_bytes() == ciphertext
    assert not (dave.home / "blobs" / blob.name).exists()      # never by the relay's blob id
    saved = _save(dave, message_id, tmp_path / "dave")
    assert Path(saved[0]["saved_to"]).read_bytes() == source.read_bytes()
    # Damaged after the download: refused when used, never decrypted into a file.
    planted.write_bytes(os.urandom(len(ciphertext)))
    result = dave.run("read", message_id, "--save-attachments", str(tmp_path / "again"), ok=False)
    assert_one_error(result, contains="its copy here is damaged")
    assert not (tmp_path / "again").exists()
