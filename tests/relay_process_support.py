"""Run the real ``comity-relay`` as a child process, and talk to it over HTTP.

Helpers for tests/test_relay_process.py; not tests themselves.

``RelayProcess`` starts ``comity-relay serve --port 0 --data-dir DIR``, reads
its stdout until ``listening on URL`` (with a deadline, never a fixed sleep)
and collects stdout and stderr on threads, so a chatty access log can never
fill a pipe and stall the relay. ``close()`` kills it whatever happened.

``Network`` builds a network's signed records with the ``keys`` API (genesis,
add-member entries, sealed envelopes) and drives the relay's HTTP API the way
a client would.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from keys.encoding import b64d, b64e
from keys.envelope import seal
from keys.hpke import EncryptionKey, make_key_record
from keys.identity import IdentityKey, IdentityPublicKey
from keys.log import LogVerifier, default_policy, entry_hash, make_entry, make_genesis, member_record
from relay.auth import AUTH_PURPOSE, auth_statement
from relay.relaykey import RELAY_KEY_FILE

ROOT = Path(__file__).resolve().parents[1]
#: how long a relay may take to start (imports, key creation, database) on a loaded CI box
START_TIMEOUT = 20.0
#: how long a stopping relay may take (SHUTDOWN_GRACE is 10 s; tests never need it all)
STOP_TIMEOUT = 15.0


def relay_command() -> list[str]:
    """The installed ``comity-relay`` script, or the same entry point through this Python."""
    script = shutil.which("comity-relay")
    if script:
        return [script]
    return [sys.executable, "-c", "from relay.cli import main; main()"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any COMITY_RELAY_* setting the developer may have exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMITY_RELAY_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class _Lines:
    """Lines of one child stream, gathered by a thread; wait for one with a deadline."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> re.Match | None:
        """The first line from index ``start`` matching ``pattern``; None at EOF or timeout."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        index = start
        with self._cond:
            while True:
                while index < len(self.lines):
                    match = regex.search(self.lines[index])
                    if match:
                        return match
                    index += 1
                remaining = deadline - time.monotonic()
                if self.closed or remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


class RelayProcess:
    """``comity-relay serve --port 0 --data-dir DATA_DIR ARGS...`` in a child process."""

    def __init__(self, data_dir: Path | None, *args: str, env: dict[str, str] | None = None,
                 cwd: Path | None = None, port: str | None = "0",
                 preexec_fn=None) -> None:
        argv = [*relay_command(), "serve"]
        if port is not None:
            argv += ["--port", port]
        if data_dir is not None:
            argv += ["--data-dir", str(data_dir)]
        # Its own process group: kill() reaches the workers of --workers N too.
        self.proc = subprocess.Popen(
            [*argv, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env or clean_env(), cwd=cwd, process_group=0,
            preexec_fn=preexec_fn)                # e.g. a lower file-handle limit
        self.stdout = _Lines(self.proc.stdout)
        self.stderr = _Lines(self.proc.stderr)
        self.url: str | None = None
        self.fingerprint: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def wait_ready(self, timeout: float = START_TIMEOUT) -> "RelayProcess":
        match = self.stdout.wait_for(r"^listening on (https?://\S+)$", timeout)
        if match is None:
            self.close()
            raise AssertionError(f"the relay did not start:\n{self.output()}")
        self.url = match.group(1)
        fp = self.stdout.wait_for(r"^relay fingerprint ([0-9a-f ]+)$", timeout)
        if fp is None:
            self.close()
            raise AssertionError(f"the relay printed no fingerprint:\n{self.output()}")
        self.fingerprint = fp.group(1)
        return self

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"the relay did not exit:\n{self.output()}") from None
        self.stdout.join(5)
        self.stderr.join(5)
        return status

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def workers(self) -> list[int]:
        """Process ids of the workers (``--workers N``); empty for a single process."""
        try:
            return [int(pid) for pid in
                    Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()]
        except OSError:
            return []

    def kill(self) -> None:
        """SIGKILL now, to every process of the relay: no drain, no cleanup, exactly like a
        power cut."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass                                  # the whole group is gone already
        self.proc.wait(STOP_TIMEOUT)

    def close(self) -> None:
        """Kill the process if it still runs, and reap it. Safe to call twice."""
        try:
            self.kill()
        finally:
            self.stdout.join(1)
            self.stderr.join(1)

    def output(self) -> str:
        return f"--- stdout ---\n{self.stdout.text}\n--- stderr ---\n{self.stderr.text}"


def mint_token(data_dir: Path, network: str) -> str:
    """``comity-relay token --network NETWORK --data-dir DATA_DIR``: the printed token."""
    done = subprocess.run([*relay_command(), "token", "--network", network, "--data-dir",
                           str(data_dir)], capture_output=True, text=True, env=clean_env(),
                          timeout=START_TIMEOUT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout        # the token alone on stdout; hints on stderr
    return lines[0]


# -- a network and its members, built with the keys API -----------------------------------------

@dataclass
class Person:
    handle: str
    identity: IdentityKey = field(default_factory=IdentityKey.generate)
    encryption: EncryptionKey = field(default_factory=EncryptionKey.generate)
    token: str | None = None

    def record(self, now: int, role: str) -> dict:
        key_record = make_key_record(self.identity, self.encryption.public, version=1,
                                     created=now, not_after=now + 90 * 86400)
        return member_record(self.identity.public, key_record, handle=self.handle,
                             name=self.handle.title(), role=role)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def relay_key_of(data_dir: Path) -> IdentityPublicKey:
    """The public key of the relay serving ``data_dir`` (which its genesis must name)."""
    seed = bytes.fromhex((data_dir / RELAY_KEY_FILE).read_text(encoding="ascii").strip())
    return IdentityKey.from_seed(seed).public


class Network:
    """A network with one admin (the first handle) and members; its log kept locally."""

    def __init__(self, name: str, admin: str, *members: str, relay_key: IdentityPublicKey) -> None:
        self.name = name
        self.now = int(time.time())
        self.people = {handle: Person(handle) for handle in (admin, *members)}
        self.admin = self.people[admin]
        self.genesis = make_genesis(self.admin.identity, name, self.admin.record(self.now, "admin"),
                                    default_policy(), self.now, relay_key=relay_key)
        self.genesis_hash = entry_hash(self.genesis)
        self.entries = [self.genesis]
        for handle in members:
            self.entries.append(make_entry(
                self.entries[-1], len(self.entries), "add-member",
                {"member": self.people[handle].record(self.now, "member")}, self.now,
                [self.admin.identity]))
        verifier = LogVerifier(self.genesis_hash)
        verifier.extend(self.entries)
        self.roster = verifier.roster

    def seal(self, sender: str, recipients: list[str], body: str) -> dict:
        envelope, _ = seal(self.people[sender].identity, sender, self.roster, recipients,
                           {"type": "information", "subject": "process test"}, body,
                           created=self.now)
        return envelope

    async def create(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        """POST the genesis with ``token``, then append every add-member entry as the admin."""
        async with session.post(f"{url}/v1/networks",
                                json={"token": token, "genesis": self.genesis}) as r:
            assert r.status == 201, await r.text()
        await self.login(session, url, self.admin.handle)
        for entry in self.entries[1:]:
            async with session.post(f"{url}/v1/networks/{self.name}/log", json={"entry": entry},
                                    headers=self.admin.auth) as r:
                assert r.status == 201, await r.text()

    async def login(self, session: aiohttp.ClientSession, url: str, handle: str) -> Person:
        """Challenge, signature by the identity key, bearer token."""
        person = self.people[handle]
        async with session.get(f"{url}/v1/relay") as r:
            relay_key = b64d((await r.json())["relay_key"])
        async with session.post(f"{url}/v1/networks/{self.name}/auth/challenge",
                                json={"handle": handle}) as r:
            assert r.status == 200, await r.text()
            challenge = (await r.json())["challenge"]
        statement = auth_statement(b64d(challenge), handle, self.genesis_hash, relay_key)
        async with session.post(f"{url}/v1/networks/{self.name}/auth/token", json={
                "handle": handle, "challenge": challenge,
                "signature": person.identity.sign_b64(AUTH_PURPOSE, statement)}) as r:
            assert r.status == 200, await r.text()
            person.token = (await r.json())["token"]
        return person

    async def mailbox(self, session: aiohttp.ClientSession, url: str, handle: str) -> list[str]:
        """Every message id waiting for ``handle``, in cursor order (all pages)."""
        ids, after = [], 0
        while True:
            async with session.get(f"{url}/v1/networks/{self.name}/mailbox",
                                   params={"after": str(after)},
                                   headers=self.people[handle].auth) as r:
                assert r.status == 200, await r.text()
                page = await r.json()
            if not page["messages"]:
                return ids
            ids += [m["id"] for m in page["messages"]]
            after = page["next"]

    def genesis_b64(self) -> str:
        return b64e(self.genesis_hash)
