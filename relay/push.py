"""New-mail events pushed to members over a WebSocket.

``GET /v1/networks/{network}/events`` (bearer token in the ``Authorization``
header) upgrades to a WebSocket. The relay sends JSON text frames:

* ``{"type": "hello", "cursor": N}``: the member's newest mailbox cursor at
  connect time, so a client that was offline knows to catch up first;
* ``{"type": "message", "id": ID, "sender": HANDLE}``: a new envelope for this member
  (list the mailbox after your last cursor to get it);
* ``{"type": "status", "id": ID}``: new evidence about a message this member sent;
* ``{"type": "enrollment", "handle": HANDLE}``: (admins) a new enrollment request;
* ``{"type": "rotation", "handle": HANDLE}``: (admins) an identity rotation to countersign;
* ``{"type": "revoked"}``: the member was removed or its identity key replaced; the
  socket closes.

Events are hints, not storage: the mailbox is the truth, and a client that
missed events catches up by listing the mailbox after its last cursor.

With several workers a member's socket may be held by any of them, so each
event published is also sent to the sibling workers (relay/cluster.py), which
deliver it to the sockets they hold.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

#: events queued per connection before a slow consumer is dropped
MAX_QUEUED_EVENTS = 1000


class Subscription:
    def __init__(self, hub: "PushHub", key: tuple[str, str]):
        self._hub, self.key = hub, key
        self.queue: asyncio.Queue[dict] = asyncio.Queue(MAX_QUEUED_EVENTS)
        self.overflowed = False

    def deliver(self, event: dict) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # The client reconnects and catches up from the mailbox: nothing is lost.
            self.overflowed = True

    def close(self) -> None:
        self._hub._remove(self)


class PushHub:
    def __init__(self, cluster=None) -> None:
        self._subs: dict[tuple[str, str], set[Subscription]] = defaultdict(set)
        self._cluster = cluster if cluster is not None and cluster.size > 1 else None

    def subscribe(self, network: str, handle: str) -> Subscription:
        sub = Subscription(self, (network, handle))
        self._subs[sub.key].add(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.key]

    def publish(self, network: str, handle: str, event: dict) -> None:
        """Deliver ``event`` to ``handle``'s sockets, whichever worker holds them."""
        self.deliver(network, handle, event)
        if self._cluster is not None:
            self._cluster.broadcast({"kind": "push", "network": network, "handle": handle,
                                     "event": event})

    def deliver(self, network: str, handle: str, event: dict) -> None:
        """Deliver ``event`` to the sockets this process holds."""
        for sub in tuple(self._subs.get((network, handle), ())):
            sub.deliver(event)

    def on_sibling_event(self, message: dict) -> None:
        """An event published by another worker (relay/cluster.py)."""
        self.deliver(message["network"], message["handle"], message["event"])

    def count(self, network: str, handle: str) -> int:
        """Sockets this process holds for ``handle`` (each worker counts its own)."""
        return len(self._subs.get((network, handle), ()))

    def connections(self) -> int:
        return sum(len(s) for s in self._subs.values())
