"""GET /v1/networks/{network}/events: the push WebSocket (formats in relay/push.py)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import WSMsgType, web

from ..constants import MAX_PUSH_SOCKETS_PER_MEMBER, SECOND
from ..errors import RelayError
from ..httputil import path_name
from ..context import RELAY

#: a ping every so often keeps NAT and proxies from dropping an idle connection
HEARTBEAT = 30 * SECOND


async def events(request: web.Request) -> web.WebSocketResponse:
    relay = request.app[RELAY]
    network = path_name(request)
    _, member = await relay.member(request, network)   # refused before the upgrade
    if relay.hub.count(network, member.handle) >= MAX_PUSH_SOCKETS_PER_MEMBER:
        raise RelayError("too-many-sockets", headers={"Retry-After": "30"})
    # Subscribed before the upgrade's await, so sockets opened at once cannot all pass the cap.
    sub = relay.hub.subscribe(network, member.handle)
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT)
    try:
        await ws.prepare(request)
        newest = await relay.store.mailbox_head(network, member.handle)
        await ws.send_str(json.dumps({"type": "hello", "cursor": newest}))
        reader = asyncio.ensure_future(ws.receive())
        while not ws.closed:
            getter = asyncio.ensure_future(sub.queue.get())
            done, _ = await asyncio.wait({reader, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                event = getter.result()
                await ws.send_str(json.dumps(event))
                if event.get("type") == "revoked":
                    break
            else:
                getter.cancel()
            if reader in done:
                message = reader.result()
                if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                reader = asyncio.ensure_future(ws.receive())   # clients have nothing to say; ignore
            if sub.overflowed:
                break
        reader.cancel()
    finally:
        sub.close()
        if ws.prepared:
            await ws.close()
    return ws
