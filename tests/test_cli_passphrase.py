"""End-to-end: the passphrase that seals a new keystore has at least 8 characters, whichever way it
is given (``COMITY_PASSPHRASE``, ``--passphrase-file``; the prompt had the rule already), and a
keystore that exists opens with whatever it was made with.

No relay is needed: the passphrase is settled before anything is sent, so the relay address
here is one nothing listens on (nothing leaves the machine).
"""

from __future__ import annotations

import pytest

from client import keystore
from client.api import Comity

from .e2e_support import Member, assert_one_error, base_env

#: nothing listens here; a command that got this far would say the relay is unreachable
NO_RELAY = "http://127.0.0.1:9"
SHORT = "1234567"          # one character short


def _sources(member: Member, tmp_path, passphrase: str) -> dict[str, tuple[list[str], dict]]:
    secret = tmp_path / "passphrase.txt"
    secret.write_text(passphrase + "\n", encoding="utf-8")
    plain = base_env(COMITY_HOME=str(member.home))
    return {"environment": ([], base_env(COMITY_HOME=str(member.home), COMITY_PASSPHRASE=passphrase)),
            "file": (["--passphrase-file", str(secret)], plain)}


@pytest.mark.parametrize("source", ["environment", "file"])
@pytest.mark.parametrize("command", [
    ["network", "create", "refco", "--relay", NO_RELAY, "--token", "t" * 32, "--handle", "secretariat"],
    ["enroll", "comity-invite-1.AAAA"],
])
def test_a_new_keystore_needs_eight_characters(tmp_path, source, command):
    member = Member("secretariat", tmp_path / "home")
    options, env = _sources(member, tmp_path, SHORT)[source]
    result = member.run(*options, *command, ok=False, env=env)
    assert_one_error(result, 2, contains="use a passphrase of at least 8 characters")
    assert not (member.home / keystore.KEYSTORE_FILE).exists()


def test_an_existing_keystore_opens_with_the_passphrase_it_was_made_with(tmp_path, monkeypatch):
    home = tmp_path / "home"
    with monkeypatch.context() as patch:          # a keystore made before the rule existed
        patch.setenv("COMITY_INSECURE_FAST_KDF", "1")
        patch.setattr(keystore, "MIN_PASSPHRASE_CHARS", 1)
        Comity.at(home).create_identity("old.timer", "x")
    member = Member("old.timer", home, passphrase="x")
    assert member.json("whoami")["handle"] == "old.timer"
