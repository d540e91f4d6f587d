"""CLI option handling that needs no relay: where --quiet goes, refused bodies."""

from __future__ import annotations

import subprocess


def comity(*args: str, stdin: bytes = b"", env_home: str) -> subprocess.CompletedProcess:
    env = {"PATH": __import__("os").environ["PATH"], "COMITY_HOME": env_home, "COMITY_PASSPHRASE": "x"}
    return subprocess.run(["comity", *args], input=stdin, capture_output=True, env=env, timeout=60)


def test_quiet_is_accepted_after_the_command(tmp_path):
    before = comity("--quiet", "whoami", env_home=str(tmp_path))
    after = comity("whoami", "--quiet", env_home=str(tmp_path))
    # Both fail the same way (no identity yet), neither as a usage error.
    assert before.returncode == after.returncode == 1
    assert before.stderr == after.stderr and before.stderr.startswith(b"error: no identity")


def test_empty_body_on_stdin_is_refused(tmp_path):
    result = comity("send", "--network", "refco", "--to", "bob", "--subject", "s", env_home=str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == b"error: the body is empty"
    assert b"Traceback" not in result.stderr


def test_body_that_is_not_utf8_is_refused(tmp_path):
    result = comity("send", "--network", "refco", "--to", "bob", "--subject", "s",
                    stdin=b"\xff\xfe binary", env_home=str(tmp_path))
    assert result.returncode == 2 and b"not UTF-8" in result.stderr
