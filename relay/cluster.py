"""What one relay process shares with its sibling workers (``--workers N``).

With ``workers = 1`` the relay is one process and a ``Cluster`` of size one
costs nothing. With more, ``relay.supervisor`` forks N workers that share the
database file (SQLite serialises their writes), the data folder and the
listening port; everything else a worker holds in memory is either a cache it
must keep fresh or an event its siblings must see. This module carries both:

* **Log epochs.** A shared memory page with one 8-byte counter per worker.
  A worker bumps its own counter after it commits a membership log entry and
  before it answers; every worker compares the page with the copy its cached
  logs were read at before it trusts them. So a member removed through one
  worker is refused by every worker from the moment the removal was answered
  (no lock: each counter has one writer, and a torn read only looks like a
  change, which costs a reload).
* **Messages.** One Unix datagram socket pair per worker: any worker sends to
  worker i's inbox, worker i reads it. Push events (a recipient's WebSocket may
  be held by any worker) and metrics requests and replies travel this way as
  small JSON datagrams. Events published in one turn of the event loop leave
  in one datagram per sibling.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import mmap
import socket
import struct
from typing import Any, Callable

log = logging.getLogger("comity.relay")

#: bytes of one worker's epoch counter in the shared page
_SLOT = 8
#: largest datagram a worker sends (Linux allows about 200 KiB on a Unix socket)
MAX_DATAGRAM = 64 * 1024
#: socket buffer asked for on each inbox, so bursts of events do not block a sender
SOCKET_BUFFER = 4 * 1024 * 1024
#: datagrams waiting for a full sibling inbox before new ones are dropped (events are hints)
MAX_BACKLOG = 10_000
#: seconds a gather (a /metrics scrape) waits for the siblings' answers
GATHER_TIMEOUT = 2.0


class Cluster:
    """This process's place among the relay's workers."""

    def __init__(self, index: int, size: int, epochs: mmap.mmap,
                 inbox: socket.socket | None = None, peers: dict[int, socket.socket] | None = None):
        self.index, self.size = index, size
        self._epochs = epochs
        self._inbox = inbox
        self._peers = peers or {}
        self._outgoing: dict[int, list] = {}
        self._backlog: dict[int, collections.deque[bytes]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handlers: dict[str, Callable[[dict], Any]] = {}
        self._requests = itertools.count(1)
        self._waiting: dict[int, tuple[asyncio.Future, list]] = {}

    @classmethod
    def single(cls) -> "Cluster":
        """The one process of a relay without workers."""
        return cls(0, 1, mmap.mmap(-1, _SLOT))

    @classmethod
    def create(cls, size: int) -> list["Cluster"]:
        """Before forking: one Cluster per worker, sharing the epoch page and the sockets.

        Worker i keeps ``clusters[i]`` (``forget_others`` closes what it does not need).
        """
        epochs = mmap.mmap(-1, _SLOT * size)      # anonymous and MAP_SHARED: survives fork
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(size)]
        for inbox, sender in pairs:
            for sock in (inbox, sender):
                sock.setblocking(False)
            inbox.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        return [cls(i, size, epochs, pairs[i][0], {j: pairs[j][1] for j in range(size) if j != i})
                for i in range(size)]

    def sockets(self) -> list[socket.socket]:
        """Every socket this worker uses (the supervisor keeps them all open)."""
        return ([self._inbox] if self._inbox else []) + list(self._peers.values())

    @property
    def primary(self) -> bool:
        """Worker 0 runs the background sweep, so it runs once per relay."""
        return self.index == 0

    def __repr__(self) -> str:
        return f"Cluster(worker {self.index} of {self.size})"

    # -- log epochs ---------------------------------------------------------------------------

    def log_epoch(self) -> bytes:
        """An opaque value that changes whenever any worker commits a log entry."""
        return self._epochs[:]

    def bump_log_epoch(self) -> None:
        """Call after committing a log entry and before answering the request."""
        offset = self.index * _SLOT
        (value,) = struct.unpack_from("<Q", self._epochs, offset)
        struct.pack_into("<Q", self._epochs, offset, value + 1)

    # -- messages between workers -------------------------------------------------------------

    def start(self, handlers: dict[str, Callable[[dict], Any]]) -> None:
        """Read the inbox on the running loop; ``handlers[kind](message)`` for each message."""
        self._loop = asyncio.get_running_loop()
        self._handlers = dict(handlers, **{"reply": self._on_reply})
        if self._inbox is not None:
            self._loop.add_reader(self._inbox.fileno(), self._read_inbox)

    def stop(self) -> None:
        if self._loop is not None and self._inbox is not None:
            self._loop.remove_reader(self._inbox.fileno())
            for index in self._backlog:
                self._loop.remove_writer(self._peers[index].fileno())
            self._backlog.clear()
        self._loop = None

    def broadcast(self, message: dict) -> None:
        """Send ``message`` to every sibling, with whatever else this loop turn sends."""
        for index in self._peers:
            self.send(index, message)

    def send(self, index: int, message: dict) -> None:
        if self._loop is None:
            return
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing.setdefault(index, []).append(message)

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, {}
        for index, messages in outgoing.items():
            batch, size = [], 2
            for message in messages:
                text = json.dumps(message, separators=(",", ":"))
                if batch and size + len(text) + 1 > MAX_DATAGRAM:
                    self._send_datagram(index, "[" + ",".join(batch) + "]")
                    batch, size = [], 2
                batch.append(text)
                size += len(text) + 1
            if batch:
                self._send_datagram(index, "[" + ",".join(batch) + "]")

    def _send_datagram(self, index: int, text: str) -> None:
        data, waiting = text.encode("utf-8"), self._backlog.get(index)
        if waiting is None:
            try:
                self._peers[index].send(data)
                return
            except BlockingIOError:           # the sibling's inbox is full: queue, send when it reads
                waiting = self._backlog[index] = collections.deque()
                self._loop.add_writer(self._peers[index].fileno(), self._drain_backlog, index)
            except OSError as exc:            # the sibling is gone; it catches up when restarted
                log.debug("cannot reach worker %d: %s", index, exc)
                return
        if len(waiting) >= MAX_BACKLOG:
            log.warning("worker %d is not reading its inbox: an event was dropped", index)
            return
        waiting.append(data)

    def _drain_backlog(self, index: int) -> None:
        waiting = self._backlog[index]
        while waiting:
            try:
                self._peers[index].send(waiting[0])
            except BlockingIOError:
                return
            except OSError:
                pass
            waiting.popleft()
        del self._backlog[index]
        self._loop.remove_writer(self._peers[index].fileno())

    def _read_inbox(self) -> None:
        for _ in range(256):                  # then let the loop serve requests again
            try:
                data = self._inbox.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            try:
                messages = json.loads(data)
            except ValueError:
                log.error("worker %d: unreadable message from a sibling", self.index)
                continue
            for message in messages:
                handler = self._handlers.get(message.get("kind"))
                if handler is None:
                    log.error("worker %d: unknown message %r", self.index, message.get("kind"))
                    continue
                try:
                    handler(message)
                except Exception:
                    log.exception("worker %d: handling %s failed", self.index, message.get("kind"))

    # -- asking every worker (a /metrics scrape) ---------------------------------------------

    async def gather(self, kind: str, mine: Any) -> list[Any]:
        """Ask every sibling for its ``kind`` answer (see ``answer``); ``mine`` first.

        Siblings that do not answer within GATHER_TIMEOUT are left out.
        """
        if not self._peers or self._loop is None:
            return [mine]
        request_id = next(self._requests)
        future = self._loop.create_future()
        answers: list = [mine]
        self._waiting[request_id] = (future, answers)
        self.broadcast({"kind": kind, "from": self.index, "id": request_id})
        try:
            await asyncio.wait_for(future, GATHER_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("worker %d: %d sibling(s) did not answer a %s request", self.index,
                        self.size - len(answers), kind)
        finally:
            self._waiting.pop(request_id, None)
        return answers

    def answer(self, request: dict, value: Any) -> None:
        """Reply to a ``gather`` request received from a sibling."""
        self.send(request["from"], {"kind": "reply", "id": request["id"], "value": value})

    def _on_reply(self, message: dict) -> None:
        waiting = self._waiting.get(message.get("id"))
        if waiting is None:
            return                            # too late: the request timed out
        future, answers = waiting
        answers.append(message["value"])
        if len(answers) == self.size and not future.done():
            future.set_result(None)
