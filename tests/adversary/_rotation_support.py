"""Helpers for the approval tests (tests/adversary/test_rotation_race.py,
tests/test_cli_approval.py): a network with enrolled members, a copy of a member's
COMITY_HOME (what a thief takes), and a ``comity`` command run on a terminal that a
test answers, waiting for the prompt with a deadline (never a fixed sleep).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.e2e_support import COMMAND_TIMEOUT, Member, RelayProcess, approve, create_network, invite

#: what ``comity approve`` / ``approve-rotation`` ask on a terminal (client/confirm.py)
PROMPT = "sign it?"


def network_with(relay: RelayProcess, root: Path, network: str, *handles: str) -> tuple[Member, dict]:
    """An administrator and the given members, enrolled and approved with their fingerprints."""
    admin = Member("secretariat", root / "homes" / "secretariat")
    create_network(relay, admin, network)
    members = {}
    for handle in handles:
        member = members[handle] = Member(handle, root / "homes" / handle)
        member.run("enroll", invite(admin, network, handle))
        approve(admin, network, member)
    return admin, members


def stolen_copy(member: Member, home: Path) -> Member:
    """Someone else with a copy of ``member``'s COMITY_HOME and passphrase: the old keys."""
    shutil.copytree(member.home, home)
    return Member(member.handle, home, member.passphrase)


def identity_fingerprint(member: Member) -> str:
    return member.json("whoami")["fingerprint"]


def run_answering(member: Member, *args: str, answer: str | None,
                  timeout: float = COMMAND_TIMEOUT) -> tuple[int, str]:
    """Run ``comity ARGS`` with stdin, stdout and stderr on a pseudo-terminal. When the
    confirmation prompt shows, type ``answer`` (None: the command must not ask). Returns
    (exit status, everything the terminal showed)."""
    status, shown = member.run_on_terminal(*args, timeout=timeout, prompt=PROMPT, answer=answer)
    return status, shown.replace("\r\n", "\n")
