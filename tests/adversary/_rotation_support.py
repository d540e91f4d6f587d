"""Helpers for the approval tests (tests/adversary/test_rotation_race.py,
tests/test_cli_approval.py): a network with enrolled members, a copy of a member's
COMITY_HOME (what a thief takes), and a ``comity`` command run on a terminal that a
test answers, waiting for the prompt with a deadline (never a fixed sleep).
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import time
from pathlib import Path

from tests.e2e_support import (COMITY, COMMAND_TIMEOUT, Member, RelayProcess, approve,
                               create_network, invite)

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
    main, child = pty.openpty()
    try:
        process = subprocess.Popen(COMITY + list(args), stdin=child, stdout=child, stderr=child,
                                   env=member.env(), start_new_session=True)
    finally:
        os.close(child)
    shown, answered = bytearray(), False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                data = os.read(main, 65536)
            except OSError:             # EIO: the command exited and closed the terminal
                break
            if not data:
                break
            shown += data
            if not answered and PROMPT in shown.decode("utf-8", "replace"):
                assert answer is not None, f"the command asked to confirm: {shown!r}"
                os.write(main, answer.encode("utf-8") + b"\n")
                answered = True
        status = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=COMMAND_TIMEOUT)
        os.close(main)
    return status, shown.decode("utf-8", "replace").replace("\r\n", "\n")
