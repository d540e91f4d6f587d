"""Identity rotations waiting for an administrator.

POST /v1/networks/{network}/rotations   a member posts its rotate-identity-key entry, signed
                                        by its old and new keys (the admin signature missing)
GET  /v1/networks/{network}/rotations   administrators list them, to countersign and append

The relay only keeps the entry; the administrator's client checks it, adds
its signature and appends it to the log like any other entry. If the log has
moved on meanwhile the entry no longer chains, and the member signs again.
Before keeping it the relay checks what it can without the admin signature:
the entry's shape, that it follows the current head, and that the member's
current key and the new key both signed it, so the admins' list holds no
garbage and no rotation a member did not ask for.
"""

from __future__ import annotations

from aiohttp import web

from keys.encoding import b64e, canonical, parse
from keys.errors import KeysError
from keys.hpke import verify_key_record
from keys.identity import IdentityPublicKey
from keys.log import ENTRY_FIELDS, ENTRY_PURPOSE, MAX_SIGNATURES, signed_content
from keys.roster import Member

from ..context import RELAY, NetworkState
from ..errors import RelayError
from ..httputil import json_response, path_name, read_json

ROTATION_BODY_FIELDS = {"handle", "identity_key", "encryption_key"}


def _check_rotation(state: NetworkState, member: Member, entry) -> None:
    """Refuse (``bad-entry``, ``log-conflict``) what an admin's client would refuse anyway."""
    if not isinstance(entry, dict) or entry.keys() != ENTRY_FIELDS \
            or entry.get("kind") != "rotate-identity-key":
        raise RelayError("bad-entry", "send your own rotate-identity-key log entry")
    body = entry["body"]
    if not isinstance(body, dict) or body.keys() != ROTATION_BODY_FIELDS \
            or body["handle"] != member.handle:
        raise RelayError("bad-entry", "the rotation body must be handle, identity_key and "
                                      "encryption_key, for your own handle")
    verifier = state.verifier
    if entry["seq"] != verifier.seq + 1 or entry["prev"] != b64e(verifier.hash_at(verifier.seq)):
        raise RelayError("log-conflict", "the rotation does not follow the current log head: "
                                         "fetch the log and sign it again")
    signatures = entry["signatures"]
    if not isinstance(signatures, list) or not 1 <= len(signatures) <= MAX_SIGNATURES:
        raise RelayError("bad-entry", f"an entry carries 1 to {MAX_SIGNATURES} signatures")
    try:
        new = IdentityPublicKey.from_b64(body["identity_key"])
        if not isinstance(entry["time"], int) or isinstance(entry["time"], bool):
            raise RelayError("bad-entry", "time must be an integer")
        record = body["encryption_key"]
        verify_key_record(record, new)
        if record["not_after"] <= entry["time"]:
            raise RelayError("bad-entry", "the new encryption key record has expired")
        content, signers = signed_content(entry), set()
        for item in signatures:
            if not isinstance(item, dict) or item.keys() != {"key", "sig"}:
                raise RelayError("bad-entry", "a signature is {key, sig}")
            key = IdentityPublicKey.from_b64(item["key"])
            key.verify(ENTRY_PURPOSE, content, item["sig"])
            signers.add(key)
    except KeysError as exc:
        raise RelayError("bad-entry", f"the rotation does not verify: {exc.message}") from None
    if not {member.identity_key, new} <= signers:
        raise RelayError("bad-entry", "the rotation must be signed by your current identity key "
                                      "and by the new one")


async def submit(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    state, member = await relay.member(request, network)
    entry = (await read_json(request, {"entry"}))["entry"]
    _check_rotation(state, member, entry)
    await relay.store.put_pending_rotation(network, member.handle, canonical(entry).decode("utf-8"),
                                           relay.now())
    relay.notify_admins(state, {"type": "rotation", "handle": member.handle})
    return json_response({"status": "pending"}, status=202)


async def listing(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    await relay.admin(request, network)
    rows = await relay.store.pending_rotations(network)
    return json_response({"rotations": [{"handle": h, "entry": parse(e), "submitted_at": t}
                                        for h, e, t in rows]})
