"""Helpers for the end-to-end CLI tests (tests/test_cli_e2e.py, tests/test_cli_evidence_e2e.py);
not tests themselves.

Everything runs as a user would run it: ``comity-relay serve --port 0`` as a
child process (its URL read from its stdout, with a deadline; ``restart``
brings it back on the same port and data), and every
member a ``comity`` child process with its own ``COMITY_HOME`` and
``COMITY_PASSPHRASE``. ``COMITY_INSECURE_FAST_KDF=1`` makes argon2id cheap;
nothing else is changed. The helpers never sleep for a fixed time: they wait
for an output line, a process exit or a file condition, each with a deadline.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import queue
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
PASSPHRASE = "end-to-end test passphrase"
#: a relay child may take this long to print its URL on a loaded 2-core box
RELAY_START_TIMEOUT = 30.0
#: and this long to stop after SIGTERM before it is killed
RELAY_STOP_TIMEOUT = 15.0
#: one ``comity`` command (50 MiB attachments included) finishes well within this
COMMAND_TIMEOUT = 120.0
#: how often a condition on files is checked while waiting for it
POLL_INTERVAL = 0.002


def _command(name: str, module: str) -> list[str]:
    """The installed console script, or the same entry point through this Python."""
    script = shutil.which(name)
    return [script] if script else [sys.executable, "-c", f"from {module} import main; main()"]


COMITY = _command("comity", "client.cli")
COMITY_RELAY = _command("comity-relay", "relay.cli")


def base_env(**extra: str) -> dict[str, str]:
    """This environment without any COMITY_* variable the developer may have set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMITY_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["COMITY_INSECURE_FAST_KDF"] = "1"
    env.update(extra)
    return env


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_INTERVAL)


# -- the relay ---------------------------------------------------------------------------------


class RelayProcess:
    """``comity-relay serve --port PORT --data-dir DIR`` as a child process (PORT 0: any free one)."""

    def __init__(self, data_dir: Path, log_dir: Path, port: int = 0, args: tuple[str, ...] = ()):
        self.data_dir = data_dir
        self.args = args                        # more ``serve`` options, e.g. --workers 2
        log_dir.mkdir(parents=True, exist_ok=True)
        # The access log goes to a file: a pipe nobody reads could fill and stall the relay.
        # Appended to, so that a restarted relay (``restart``) keeps the earlier records.
        self.log_path = log_dir / f"relay-{data_dir.name}.log"
        self._start(port)

    def _start(self, port: int) -> None:
        self._stderr = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            COMITY_RELAY + ["serve", "--port", str(port), "--data-dir", str(self.data_dir),
                            *self.args],
            stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL,
            env=base_env(), text=True)
        lines: queue.Queue[str | None] = queue.Queue()
        self._lines = lines
        threading.Thread(target=self._pump, args=(self.process, lines), daemon=True).start()
        self.url = self._expect(r"listening on (\S+)").group(1)
        self.fingerprint = self._expect(r"relay fingerprint (.+)").group(1).strip()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def restart(self, signum: int = signal.SIGKILL) -> None:
        """End the relay with ``signum`` (SIGKILL: a crash), then serve the same data on the same port."""
        url = self.url
        if self.process.poll() is None:
            self.process.send_signal(signum)
        self.process.wait(timeout=RELAY_STOP_TIMEOUT)
        self._stderr.close()
        self._start(self.port)
        assert self.url == url, f"the relay came back at {self.url}, not {url}"

    @staticmethod
    def _pump(process: subprocess.Popen, lines: queue.Queue) -> None:
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def _expect(self, pattern: str) -> re.Match:
        deadline = time.monotonic() + RELAY_START_TIMEOUT
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise AssertionError(f"the relay did not print {pattern!r} within {RELAY_START_TIMEOUT} s")
            if line is None:
                self.stop()
                raise AssertionError(f"the relay exited before printing {pattern!r}: see {self._stderr.name}")
            found = re.match(pattern, line)
            if found:
                return found

    def token(self, network: str) -> str:
        """A creation token, as the operator mints it with ``comity-relay token``."""
        done = subprocess.run(COMITY_RELAY + ["token", "--network", network, "--data-dir", str(self.data_dir)],
                              capture_output=True, text=True, env=base_env(), timeout=COMMAND_TIMEOUT)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    @contextlib.contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        """A second connection to the relay's database: how a test inspects or tampers with it."""
        conn = sqlite3.connect(self.data_dir / "relay.db", isolation_level=None, timeout=10)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            yield conn
        finally:
            conn.close()

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    def metric(self, name: str) -> float:
        """The sum of one counter over its labels, from ``GET /metrics``."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            text = response.read().decode("utf-8")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def requests(self, since: int = 0) -> list[dict]:
        """The access log's records (one JSON object a line on stderr) from byte ``since`` on."""
        with open(self.log_path, "rb") as fh:
            fh.seek(since)
            lines = fh.read().decode("utf-8", "replace").splitlines()
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue        # tracebacks and notes for humans
            if isinstance(record, dict) and "method" in record:
                records.append(record)
        return records

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=RELAY_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=RELAY_STOP_TIMEOUT)
        self._stderr.close()


def wait_for_upload_lock(part: Path, timeout: float) -> None:
    """Wait until no relay request is writing ``part`` (the relay flocks it while appending)."""
    def free() -> bool:
        fd = os.open(part, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)                # also releases the lock at once
        return True
    wait_until(free, timeout, f"the relay to finish writing {part.name}")


# -- members -------------------------------------------------------------------------------------


@dataclass
class Result:
    args: list[str]
    status: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error_lines(self) -> list[str]:
        return self.stderr.splitlines()


class Member:
    """One person at one machine: a COMITY_HOME, a passphrase, and the ``comity`` command."""

    def __init__(self, handle: str, home: Path, passphrase: str = PASSPHRASE):
        self.handle, self.home, self.passphrase = handle, home, passphrase

    def __repr__(self) -> str:
        return f"Member({self.handle!r})"

    def env(self, **extra: str) -> dict[str, str]:
        return base_env(COMITY_HOME=str(self.home), COMITY_PASSPHRASE=self.passphrase, **extra)

    def popen(self, *args: str, **extra_env: str) -> subprocess.Popen:
        return subprocess.Popen(COMITY + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=self.env(**extra_env), text=True)

    def spawn(self, *args: str, log: Path) -> subprocess.Popen:
        """A long-running command (``comity watch``) with stdout and stderr appended to ``log``.

        A file, not a pipe: a pipe nobody reads could fill and stall the command. In a process
        group of its own, so that ``kill_group`` can end it with whatever it started.
        """
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            return subprocess.Popen(COMITY + list(args), stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self.env(), start_new_session=True)

    def run(self, *args: str, ok: bool = True, input: str | None = None, env: dict | None = None,
            timeout: float = COMMAND_TIMEOUT) -> Result:
        done = subprocess.run(COMITY + list(args), capture_output=True, text=True, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL,
                              env=env if env is not None else self.env())
        result = Result(list(args), done.returncode, done.stdout, done.stderr)
        if ok:
            assert result.status == 0, f"comity {' '.join(args)} failed ({result.status}):\n{result.stderr}"
        return result

    def json(self, *args: str) -> Any:
        return self.run(*args, "--json").json()

    def run_on_terminal(self, *args: str, timeout: float = COMMAND_TIMEOUT,
                        prompt: str | None = None, answer: str | None = None) -> tuple[int, str]:
        """Run with stdout and stderr on a pseudo-terminal; return (status, everything shown).

        With ``prompt``, stdin is the terminal too: when ``prompt`` shows, ``answer`` is typed
        (``answer`` None: the command must not ask at all).
        """
        main, child = pty.openpty()
        try:
            process = subprocess.Popen(COMITY + list(args), stdout=child, stderr=child, env=self.env(),
                                       stdin=child if prompt else subprocess.DEVNULL,
                                       start_new_session=bool(prompt))
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
                except OSError:         # EIO: every writer closed the terminal
                    break
                if not data:
                    break
                shown += data
                if prompt and not answered and prompt in shown.decode("utf-8", "replace"):
                    assert answer is not None, f"the command asked to confirm: {shown!r}"
                    os.write(main, answer.encode("utf-8") + b"\n")
                    answered = True
            status = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=COMMAND_TIMEOUT)
            os.close(main)
        return status, shown.decode("utf-8", "replace")


def run_together(*commands: tuple[Member, list[str]]) -> list[Result]:
    """Run several members' commands at once (each its own COMITY_HOME); all must succeed."""
    started = [(member, args, member.popen(*args)) for member, args in commands]
    results = []
    try:
        for member, args, process in started:
            stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT)
            results.append(Result(list(args), process.returncode, stdout, stderr))
    finally:
        for _, _, process in started:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=COMMAND_TIMEOUT)
    for result in results:
        assert result.status == 0, f"comity {' '.join(result.args)} failed ({result.status}):\n{result.stderr}"
    return results


def create_network(relay: RelayProcess, admin: Member, network: str, **options: str) -> Result:
    args = ["network", "create", network, "--relay", relay.url, "--token", relay.token(network),
            "--handle", admin.handle]
    for name, value in options.items():
        args += [f"--{name}", value]
    return admin.run(*args)


def invite(admin: Member, network: str, handle: str, *options: str) -> str:
    result = admin.run("invite", "--network", network, "--handle", handle, *options)
    lines = result.stdout.splitlines()
    assert len(lines) == 1, f"invite printed more than the code on stdout: {result.stdout!r}"
    return lines[0]


def approve(admin: Member, network: str, member: Member, *options: str) -> Result:
    """``comity approve`` with the fingerprint ``member`` reads out (from its own ``whoami``),
    as an administrator approves after comparing it out of band."""
    fingerprint = member.json("whoami")["fingerprint"]
    return admin.run("approve", "--network", network, member.handle, "--fingerprint", fingerprint,
                     *options)


def make_network(relay_url: str, relay: RelayProcess, root: Path, handles: list[str], *,
                 admin_handle: str = "secretariat", network: str = "refco") -> dict[str, Member]:
    """A network at ``relay_url`` (the relay itself, or a proxy in front of it), made with the real
    commands: the administrator creates it and invites, each member enrolls from its own
    COMITY_HOME, the administrator approves with the fingerprint the member reads out."""
    admin = Member(admin_handle, root / "homes" / admin_handle)
    admin.run("network", "create", network, "--relay", relay_url, "--token", relay.token(network),
              "--handle", admin_handle)
    members = {admin_handle: admin}
    for handle in handles:
        member = members[handle] = Member(handle, root / "homes" / handle)
        member.run("enroll", invite(admin, network, handle))
        approve(admin, network, member)
    return members


def assert_one_error(result: Result, status: int = 1, *, contains: str = "") -> str:
    """``error: ...`` alone on stderr (maybe then one ``hint: ...``), no traceback, exit ``status``."""
    lines = result.error_lines()
    assert result.status == status, f"exit {result.status}, expected {status}: {result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    assert 1 <= len(lines) <= 2, f"expected one error line (and maybe a hint): {result.stderr!r}"
    assert lines[0].startswith("error: "), lines
    if len(lines) == 2:
        assert lines[1].startswith("hint: "), lines
    assert contains.lower() in lines[0].lower(), f"{contains!r} not in {lines[0]!r}"
    assert result.stdout == "", f"stdout should be empty on error: {result.stdout!r}"
    return lines[0]


def kill(process: subprocess.Popen) -> None:
    """SIGKILL, as a crash or a pulled plug would end a command."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=COMMAND_TIMEOUT)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a ``Member.spawn`` process and what it started (its process group), then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=COMMAND_TIMEOUT)


def random_file(path: Path, size: int) -> Path:
    """``size`` random bytes written in 1 MiB blocks (memory stays small)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        left = size
        while left:
            block = os.urandom(min(left, 1024 * 1024))
            fh.write(block)
            left -= len(block)
    return path


def same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1024 * 1024), fb.read(1024 * 1024)
            if x != y:
                return False
            if not x:
                return True
