"""Helpers for the attachment tests (tests/test_cli_attachments.py and the attachment attacks in
tests/adversary/): a small network made with the real commands, and a sender whose client
writes any attachment name it likes into the signed manifest.

The honest ``comity send`` names an attachment after its file, made safe
(client/filenames.py). A lying sender runs the same command with that step replaced: the
names come from ``SENT_NAMES`` (a JSON list, one per ``--attach``, in order), so a test
can send names no file system would hold (400 bytes of "é") or that hide their extension.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from ..e2e_support import COMITY, COMMAND_TIMEOUT, Member, Result

NETWORK = "attachnet"

#: ``comity`` with the sender's name sanitiser replaced by "whatever SENT_NAMES says next"
_LYING_CLIENT = """\
import json, os, sys
import client.attachments
names = json.loads(os.environ["SENT_NAMES"])
client.attachments.disk_name = lambda name: names.pop(0)
from client.cli import main
main()
"""


def send_with_names(sender: Member, to: str, files: list[Path], names: list[str],
                    subject: str = "annexes", network: str = NETWORK) -> str:
    """Send ``files`` to ``to`` with the manifest naming them ``names``; returns the message id."""
    args = ["send", "--network", network, "--to", to, "--subject", subject, "--body", "see annexes"]
    for path in files:
        args += ["--attach", str(path)]
    done = subprocess.run([sys.executable, "-c", _LYING_CLIENT, *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT,
                          env=sender.env(SENT_NAMES=json.dumps(names)))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def run_with_umask(member: Member, umask: int, *args: str) -> Result:
    """A ``comity`` command started with ``umask`` (0: every permission bit the program asks for)."""
    done = subprocess.run(["sh", "-c", f'umask {umask:03o} && exec "$@"', "sh", *COMITY, *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=COMMAND_TIMEOUT, env=member.env())
    return Result(list(args), done.returncode, done.stdout, done.stderr)


def mode(path: Path) -> int:
    return os.lstat(path).st_mode & 0o777


def run_with_file_limit(member: Member, max_file_bytes: int, *args: str) -> Result:
    """A ``comity`` command that the kernel stops (SIGXFSZ) if it makes any file larger than
    ``max_file_bytes``: how a test proves that nothing fills the disk, even for a moment."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    done = subprocess.run(COMITY + list(args), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=COMMAND_TIMEOUT, env=member.env(), preexec_fn=limit)
    return Result(list(args), done.returncode, done.stdout, done.stderr)
