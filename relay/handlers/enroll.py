"""Invites and enrollment.

POST /v1/networks/{network}/invites       admin registers {"invite_id", "handle", "role", "expires"}
POST /v1/networks/{network}/enrollments   enrollee submits its request (no token: the invite id is the key)
GET  /v1/networks/{network}/enrollments   admins list pending enrollments

The relay keeps only the invite id (a hash of the invite secret). It cannot
check the enrollment MAC, and cannot forge one: the admin checks it before
signing the add-member entry.
"""

from __future__ import annotations

from aiohttp import web

from keys.constants import ROLES
from keys.encoding import b64e, canonical, parse
from keys.errors import InviteError, KeysError
from keys.hpke import verify_key_record
from keys.identity import IdentityPublicKey
from keys.invite import check_enrollment_request

from ..constants import INVITE_TTL
from ..errors import RelayError
from ..httputil import ID_PATTERN, NAME_PATTERN, field_int, field_str, json_response, path_name, read_json
from ..context import RELAY


async def add_invite(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    state, admin = await relay.admin(request, network)
    body = await read_json(request, {"invite_id", "handle", "role"}, {"expires"})
    invite_id = field_str(body, "invite_id", ID_PATTERN)
    handle = field_str(body, "handle", NAME_PATTERN)
    role = field_str(body, "role")
    if role not in ROLES:
        raise RelayError("bad-request", f"role must be one of {', '.join(ROLES)}")
    if state.roster.member(handle) is not None:
        raise RelayError("conflict", f"the handle {handle} is already taken in this network")
    now = relay.now()
    expires = field_int(body, "expires", now + 60, now + INVITE_TTL) if "expires" in body else now + INVITE_TTL
    await relay.store.add_invite(network, invite_id, handle, role, admin.handle, expires)
    await relay.audit("invite-created", network, admin.handle, invitee=handle, role=role)
    return json_response({"invite_id": invite_id, "expires": expires}, status=201)


async def submit_enrollment(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    body = await read_json(request, {"request"})
    try:
        enrollment = check_enrollment_request(body["request"])
    except InviteError as exc:
        raise RelayError("bad-request", exc.message) from None
    try:
        # The admin checks this too; refusing it here keeps garbage out of the admins' list.
        identity = IdentityPublicKey.from_b64(enrollment["identity_key"])
        record = enrollment["encryption_key"]
        verify_key_record(record, identity)
    except KeysError:
        raise RelayError("bad-record", "the encryption key record is not validly signed by "
                                       "the enrollee's identity key") from None
    if record["not_after"] <= relay.now():
        raise RelayError("bad-record", "the encryption key record has expired: generate a new key")
    state = await relay.network(network)
    if enrollment["network"] != b64e(state.genesis_hash):
        raise RelayError("bad-request", "the enrollment request names another network")
    invite = await relay.store.get_invite(network, enrollment["invite_id"])
    if invite.handle != enrollment["handle"]:
        raise RelayError("bad-request", "the enrollment request is for another handle than the invite")
    await relay.store.add_enrollment(network, enrollment["invite_id"],
                                     canonical(enrollment).decode("utf-8"), relay.now())
    relay.notify_admins(state, {"type": "enrollment", "handle": invite.handle})
    return json_response({"status": "pending"}, status=202)


async def list_enrollments(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    await relay.admin(request, network)
    rows = await relay.store.list_enrollments(network, relay.now())
    return json_response({"enrollments": [
        {"invite_id": r.invite.invite_id, "handle": r.invite.handle, "role": r.invite.role,
         "invited_by": r.invite.created_by, "expires": r.invite.expires_at,
         "submitted_at": r.submitted_at, "request": parse(r.request)}
        for r in rows]})
