"""Push: new-mail events on a WebSocket, so a watching client reacts at once.

Every wait is on an event with a timeout; no test sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.relay_helpers import create_network, members, relay, trio  # noqa: F401  (fixtures)

#: generous: an event normally arrives within milliseconds
EVENT_TIMEOUT = 5.0


async def connect(network, member) -> aiohttp.ClientWebSocketResponse:
    return await network.relay.session.ws_connect(network.relay.url(network.path + "/events"),
                                                  headers=member.auth())


async def next_event(ws) -> dict:
    message = await asyncio.wait_for(ws.receive(), EVENT_TIMEOUT)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return message.json()


async def test_recipient_gets_a_message_event(trio):
    ana, bob, carol = trio.admin, trio.members["bob"], trio.members["carol"]
    ws = await connect(trio, bob)
    try:
        assert await next_event(ws) == {"type": "hello", "cursor": 0}
        envelope, _ = await trio.send(ana, ["bob"])
        event = await next_event(ws)
        assert event == {"type": "message", "id": envelope["id"], "sender": "ana"}
        # The event is a hint; the mailbox has the message.
        reply = await trio.relay.get(trio.path + "/mailbox", member=bob)
        assert [m["id"] for m in reply.json()["messages"]] == [envelope["id"]]
    finally:
        await ws.close()


async def test_events_go_only_to_recipients(trio):
    ana, bob, carol = trio.admin, trio.members["bob"], trio.members["carol"]
    ws_bob, ws_carol = await connect(trio, bob), await connect(trio, carol)
    try:
        await next_event(ws_bob), await next_event(ws_carol)           # hellos
        to_bob, _ = await trio.send(ana, ["bob"])
        to_carol, _ = await trio.send(ana, ["carol"])
        # Each gets its own message first: carol never saw bob's.
        assert (await next_event(ws_bob))["id"] == to_bob["id"]
        assert (await next_event(ws_carol))["id"] == to_carol["id"]
    finally:
        await ws_bob.close()
        await ws_carol.close()


async def test_several_connections_of_one_member_all_get_events(trio):
    ana, bob = trio.admin, trio.members["bob"]
    sockets = [await connect(trio, bob) for _ in range(3)]
    try:
        for ws in sockets:
            await next_event(ws)
        envelope, _ = await trio.send(ana, ["bob"])
        for ws in sockets:
            assert (await next_event(ws))["id"] == envelope["id"]
    finally:
        for ws in sockets:
            await ws.close()


async def test_hello_carries_the_mailbox_cursor(trio):
    ana, bob = trio.admin, trio.members["bob"]
    for _ in range(2):
        await trio.send(ana, ["bob"])
    reply = await trio.relay.get(trio.path + "/mailbox", member=bob)
    newest = reply.json()["next"]
    assert newest > 0
    ws = await connect(trio, bob)
    try:
        assert await next_event(ws) == {"type": "hello", "cursor": newest}
    finally:
        await ws.close()


async def test_sender_gets_a_status_event_on_delivery(trio):
    ana, bob = trio.admin, trio.members["bob"]
    envelope, _ = await trio.send(ana, ["bob"])
    ws = await connect(trio, ana)
    try:
        await next_event(ws)
        await trio.relay.get(f"{trio.path}/messages/{envelope['id']}", member=bob)
        assert await next_event(ws) == {"type": "status", "id": envelope["id"]}
    finally:
        await ws.close()


async def test_admins_hear_of_enrollments(trio):
    ana = trio.admin
    ws = await connect(trio, ana)
    try:
        await next_event(ws)
        invite = await trio.invite("dave")
        _, reply = await trio.enroll(invite)
        assert reply.status == 202
        assert await next_event(ws) == {"type": "enrollment", "handle": "dave"}
    finally:
        await ws.close()


async def test_removed_member_gets_revoked_and_is_disconnected(trio):
    bob = trio.members["bob"]
    ws = await connect(trio, bob)
    try:
        await next_event(ws)
        await trio.remove("bob")
        assert await next_event(ws) == {"type": "revoked"}
        closing = await asyncio.wait_for(ws.receive(), EVENT_TIMEOUT)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    finally:
        await ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect(trio, bob)
    assert refused.value.status == 403


async def test_events_need_a_member_token(trio):
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await trio.relay.session.ws_connect(trio.relay.url(trio.path + "/events"))
    assert refused.value.status == 401
    reply = await trio.relay.get(trio.path + "/events")
    assert (reply.status, reply.error) == (401, "unauthenticated")


async def test_closed_socket_leaves_no_subscription(trio):
    bob = trio.members["bob"]
    ws = await connect(trio, bob)
    await next_event(ws)
    assert trio.relay.state.hub.connections() == 1
    await ws.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EVENT_TIMEOUT
    while trio.relay.state.hub.connections():
        assert loop.time() < deadline
        await asyncio.sleep(0.005)
    # Publishing to nobody is harmless.
    await trio.send(trio.admin, ["bob"])
