"""``comity watch``: stay connected, collect and acknowledge mail as it arrives.

One task per network holds the relay's push WebSocket open. Every event (and
every reconnection, after a relay restart or a dropped network) triggers a
catch-up: collect what is waiting, verify, store, acknowledge, then run the
``--exec`` command once for each new message. Reconnection backs off
exponentially up to ``MAX_BACKOFF``.

At most once for ``--exec``: a message collected by the watcher is stored
with ``exec: pending`` in the same transaction as the message itself. Before
the command starts, the row is marked ``running`` (synced to disk); when the
command exits 0 it is marked ``done``. A command that exits non-zero said it
did not do its work: it is marked ``pending`` again and retried at the next
catch-up or idle tick. A watcher killed while a command ran cannot know
whether it finished: at the next start the row is marked ``interrupted`` and
reported, never run again. A replayed message is recognised before it is
stored (client/intake.py), so it never gets a second ``pending``. A stop
(SIGTERM, Ctrl-C) waits for a command already started, so that it is marked
done rather than interrupted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Callable

import aiohttp

from .api import Comity
from .errors import ClientError, NotAMember, RelayRefused, RelayUnreachable

log = logging.getLogger("comity.watch")

#: seconds between reconnection attempts grow from 1 to this
MAX_BACKOFF = 60
#: how often the watcher checks key ages and destroys expired old keys (seconds)
MAINTENANCE_INTERVAL = 3600
#: with no event for this long, the watcher retries a failed --exec command (seconds)
EXEC_RETRY = 30
#: a command that exits non-zero this many times for one message is not run for it again
MAX_EXEC_ATTEMPTS = 5


class Watcher:
    def __init__(self, client: Comity, *, exec_cmd: str | None, ack: bool = True,
                 say: Callable[[str], None] = lambda text: log.info(text)):
        self.client = client
        self.exec_cmd = exec_cmd
        self.ack = ack
        self.say = say
        self._lock = asyncio.Lock()            # one catch-up at a time: shared state and logs
        self._last_maintenance = 0.0
        self.processed = 0

    async def once(self, stop: asyncio.Event | None = None) -> int:
        """Process what is waiting in every network, then return.

        ``stop`` (set by SIGTERM) ends it after the network being processed.
        """
        self._report_interrupted()
        for name in self._networks():
            if stop is not None and stop.is_set():
                break
            await self._catch_up(name)
        return self.processed

    async def run(self, stop: asyncio.Event) -> int:
        names = self._networks()
        if not names:
            raise ClientError("you are not a member of any network yet")
        self._report_interrupted()
        tasks = [asyncio.create_task(self._follow(name, stop)) for name in names]
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks + [stopper]:
            task.cancel()
        await asyncio.gather(*tasks, stopper, return_exceptions=True)
        for task in done:
            if task is not stopper and task.exception():
                raise task.exception()
        return self.processed

    def _networks(self) -> list[str]:
        return [r.name for r in self.client.state.networks()]

    async def _follow(self, network: str, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                await self._catch_up(network)
                row, relay = self.client.relay_for(network)
                ws = await relay.events(network, self.client.handle)
                if failures:
                    self.say(f"reconnected to {network}")
                failures = 0
                async with ws:
                    while True:
                        try:
                            frame = await ws.receive(timeout=EXEC_RETRY)
                        except asyncio.TimeoutError:
                            await self._idle(network)     # retry a failed --exec, key upkeep
                            continue
                        if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                                          aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
                        if frame.type != aiohttp.WSMsgType.TEXT:
                            continue
                        event = _event(frame.data)
                        if event.get("type") == "revoked":
                            await self._check_membership(network)
                        if event.get("type") in ("message", "status", "hello"):
                            await self._catch_up(network)
                # The socket closed: the relay restarted or the network dropped.
                self.say(f"lost {network}: the relay closed the connection; reconnecting")
            except (RelayUnreachable, ConnectionError, asyncio.TimeoutError) as exc:
                if failures == 0:
                    self.say(f"lost {network}: {getattr(exc, 'message', exc)}; reconnecting")
            except RelayRefused as exc:
                if exc.code in ("not-a-member", "bad-signature"):
                    raise
                self.say(f"{network}: {exc.message}; retrying")
            except NotAMember:
                row = self.client.state.network(network)
                if row is not None and row.status == "pending":
                    pass                     # enrollment not approved yet: keep waiting
                else:
                    raise
            failures += 1
            delay = min(MAX_BACKOFF, 2 ** min(failures - 1, 6)) * (0.5 + random.random() / 2)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass

    async def _check_membership(self, network: str) -> None:
        """A ``revoked`` event is unsigned, so only a hint: the verified log decides.

        ``connect`` replays the log and raises NotAMember if it says we were removed or
        our key replaced (the watcher then stops); otherwise we keep watching.
        """
        async with self._lock:
            await self.client.connect(network)
        self.say(f"{network}: the relay said you were removed, but the verified membership log "
                 "says you are a member: still watching")

    async def _idle(self, network: str) -> None:
        async with self._lock:
            await self._run_pending_execs()
            await self._maintain(network)

    async def _catch_up(self, network: str) -> None:
        async with self._lock:
            try:
                new = await self.client._collect(network, ack=self.ack,
                                                 exec_pending=self.exec_cmd is not None)
            finally:
                self._tell_notices()
            for message in new:
                state = "verified" if message["verified"] else f"NOT verified ({message.get('reason')})"
                self.say(f"{network}: {message['id']} from {message['from']}: {message.get('subject')!r} [{state}]")
            self.processed += len(new)
            await self._run_pending_execs()
            await self._maintain(network)

    def _tell_notices(self) -> None:
        """A watcher runs for days: its warnings are said as they come, not when it stops."""
        for text in self.client.notices:
            self.say(f"warning: {text}")
        self.client.notices.clear()

    def _report_interrupted(self) -> None:
        """Commands that were running when a watcher died: reported, never run a second time."""
        for network, message_id, at, flags, record in list(self.client.state.rows("message", flags="in")):
            if record.get("exec") == "running":
                record["exec"] = "interrupted"
                self.client.state.update("message", network, message_id, record, flags=flags)
                self.say(f"--exec for {message_id} was interrupted by a stop or crash; it is not run "
                         "again (check your case system)")

    async def _run_pending_execs(self) -> None:
        if self.exec_cmd is None:
            return
        for network, message_id, at, flags, record in list(self.client.state.rows("message", flags="in")):
            if record.get("exec") != "pending":
                continue
            run = asyncio.ensure_future(self._exec(network, message_id, flags, record))
            try:
                # A stop (SIGTERM) lets a started command finish and be marked done: cancelled
                # half-way, it would be left "running" and reported as interrupted.
                status = await asyncio.shield(run)
            except asyncio.CancelledError:
                await run
                raise
            if status != 0:
                # One failing message must not hold back the others: go on with them.
                if record["exec"] == "failed":
                    self.say(f"--exec failed for {message_id} (exit status {status}) "
                             f"{MAX_EXEC_ATTEMPTS} times: not run again")
                else:
                    self.say(f"--exec failed for {message_id} (exit status {status}); will retry")

    async def _exec(self, network: str, message_id: str, flags: str, record: dict) -> int:
        payload = json.dumps(self.client.read(message_id, network=network),
                             ensure_ascii=False).encode("utf-8")
        record["exec"] = "running"            # on disk before the command can do anything
        self.client.state.update("message", network, message_id, record, flags=flags)
        process = await asyncio.create_subprocess_shell(self.exec_cmd, stdin=asyncio.subprocess.PIPE)
        await process.communicate(payload)
        failures = record.get("exec_failures", 0) + (process.returncode != 0)
        record["exec_failures"] = failures
        record["exec"] = ("done" if process.returncode == 0
                          else "failed" if failures >= MAX_EXEC_ATTEMPTS else "pending")
        self.client.state.update("message", network, message_id, record, flags=flags)
        return process.returncode

    async def _maintain(self, network: str) -> None:
        """Rotate an encryption key past the network's maximum age; destroy expired old keys."""
        now = self.client.now()
        if now - self._last_maintenance < MAINTENANCE_INTERVAL:
            return
        self._last_maintenance = now
        policy = self.client._verifiers[network].roster.policy
        state = self.client.key_age_state(policy.key_max_age)
        if state == "due":
            result = await self.client.rotate()
            self.say(f"rotated the encryption key to version {result['version']} (older than the policy allows)")
        elif state == "warn":
            self.say("the encryption key is close to the network's maximum age: it will rotate soon")
        destroyed = self.client.destroy_expired_keys()
        if destroyed:
            self.say(f"destroyed old encryption key version(s) {', '.join(map(str, destroyed))}")


def _event(text: str) -> dict:
    """A push event; anything that is not a JSON object is no event (the relay's word is a hint)."""
    try:
        event = json.loads(text)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}
