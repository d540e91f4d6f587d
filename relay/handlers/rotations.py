"""Identity rotations waiting for an administrator.

POST /v1/networks/{network}/rotations   a member posts its rotate-identity-key entry, signed
                                        by its old and new keys (the admin signature missing)
GET  /v1/networks/{network}/rotations   administrators list them, to countersign and append

The relay only keeps the entry; the administrator's client checks it, adds
its signature and appends it to the log like any other entry. If the log has
moved on meanwhile the entry no longer chains, and the member signs again.
"""

from __future__ import annotations

from aiohttp import web

from keys.encoding import canonical, parse

from ..errors import RelayError
from ..httputil import json_response, path_name, read_json


async def submit(request: web.Request) -> web.Response:
    relay = request.app["relay"]
    network = path_name(request)
    state, member = await relay.member(request, network)
    entry = (await read_json(request, {"entry"}))["entry"]
    if (not isinstance(entry, dict) or entry.get("kind") != "rotate-identity-key"
            or not isinstance(entry.get("body"), dict) or entry["body"].get("handle") != member.handle):
        raise RelayError("bad-entry", "send your own rotate-identity-key entry")
    if not isinstance(entry.get("signatures"), list) or len(entry["signatures"]) > 8:
        raise RelayError("bad-entry", "the entry's signatures are malformed")
    await relay.store.put_pending_rotation(network, member.handle, canonical(entry).decode("utf-8"), relay.now())
    for admin in state.roster.admins():
        relay.hub.publish(network, admin, {"type": "rotation", "handle": member.handle})
    return json_response({"status": "pending"}, status=202)


async def listing(request: web.Request) -> web.Response:
    relay = request.app["relay"]
    network = path_name(request)
    await relay.admin(request, network)
    rows = await relay.store.pending_rotations(network)
    return json_response({"rotations": [{"handle": h, "entry": parse(e), "submitted_at": t} for h, e, t in rows]})
