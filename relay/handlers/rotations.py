"""Identity rotations waiting for an administrator.

POST /v1/networks/{network}/rotations   a member posts its rotate-identity-key entry, signed
                                        by its old and new keys (the admin signature missing)
GET  /v1/networks/{network}/rotations   administrators list them, to countersign and append

The relay only keeps the entries; an administrator's client checks one, adds its
signature and appends it to the log like any other entry. Every request is kept
under its id (the entry hash of the entry as received), none replaces another: a
thief holding a member's old key can add a request but not swap out the member's,
and administrators see competing requests side by side. A request is good for one
log position; once the log moves on it no longer chains and is dropped (the
member signs again). Before keeping it the relay checks, with the same rules as
every client (``LogVerifier.check_rotation_request``), everything but the missing
admin signature, so the admins' list holds no garbage and no rotation a member's
current key did not sign.
"""

from __future__ import annotations

from aiohttp import web

from keys.encoding import b64e, canonical, parse
from keys.errors import KeysError, LogError
from keys.log import entry_hash
from keys.roster import Member

from ..constants import MAX_PENDING_ROTATIONS_PER_MEMBER
from ..context import RELAY, NetworkState
from ..errors import RelayError
from ..httputil import json_response, path_name, read_json

#: verifier reasons meaning "not the next entry any more": sign again against the new head
_STALE = {"gap", "fork", "duplicate-entry"}


def _check_rotation(state: NetworkState, member: Member, entry) -> None:
    """Refuse (``bad-entry``, ``log-conflict``) what an admin's client would refuse anyway."""
    body = entry.get("body") if isinstance(entry, dict) else None
    if not isinstance(body, dict) or body.get("handle") != member.handle:
        raise RelayError("bad-entry", "send a rotate-identity-key log entry for your own handle")
    try:
        state.verifier.check_rotation_request(entry)
    except LogError as exc:
        if exc.reason in _STALE:
            raise RelayError("log-conflict", "the rotation does not follow the current log "
                                             "head: fetch the log and sign it again") from None
        raise RelayError("bad-entry", f"the rotation does not verify: {exc.message}") from None
    except KeysError as exc:
        raise RelayError("bad-entry", f"the rotation does not verify: {exc.message}") from None


async def submit(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    state, member = await relay.member(request, network)
    entry = (await read_json(request, {"entry"}))["entry"]
    _check_rotation(state, member, entry)
    rotation_id = b64e(entry_hash(entry))
    created = await relay.store.put_pending_rotation(
        network, rotation_id, member.handle, entry["seq"], canonical(entry).decode("utf-8"),
        relay.now(), per_member=MAX_PENDING_ROTATIONS_PER_MEMBER)
    if created:
        relay.notify_admins(state, {"type": "rotation", "handle": member.handle})
    return json_response({"status": "pending", "id": rotation_id}, status=202)


async def listing(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    await relay.admin(request, network)
    rows = await relay.store.pending_rotations(network)
    return json_response({"rotations": [{"id": r.rotation_id, "handle": r.handle,
                                         "entry": parse(r.entry), "submitted_at": r.submitted_at}
                                        for r in rows]})
