"""Networks and their membership logs.

POST /v1/networks                      create a network from a genesis entry and a creation token
                                       (the genesis must name this relay's key)
GET  /v1/networks/{network}/log        entries since=SEQ (members, or holders of a pending invite),
                                       with the head they end at, signed by the relay key
POST /v1/networks/{network}/log        append one entry (verified by the same rules as clients)
"""

from __future__ import annotations

import hashlib

from aiohttp import web

from keys.encoding import b64e, canonical
from keys.errors import KeysError, LogError
from keys.identity import IdentityPublicKey, format_fingerprint
from keys.log import LogVerifier, entry_hash
from keys.log_head import make_log_head

from ..constants import MAX_LOG_PAGE
from ..context import RELAY, NetworkState
from ..errors import RelayError
from ..httputil import ID_PATTERN, json_response, path_name, query_int, read_json


def creation_token_hash(token: str) -> str:
    """What the database keeps of a creation token (the token itself is shown once)."""
    return b64e(hashlib.sha256(b"comity/v1/creation-token\x00" + token.encode("utf-8")).digest())


async def create_network(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    body = await read_json(request, {"token", "genesis"})
    genesis, token = body["genesis"], body["token"]
    if not isinstance(token, str) or not 16 <= len(token) <= 128:
        raise RelayError("bad-creation-token")
    if not isinstance(genesis, dict) or genesis.get("kind") != "genesis":
        raise RelayError("bad-entry", "the body must carry a genesis entry")
    try:
        genesis_hash = entry_hash(genesis)
        verifier = LogVerifier(genesis_hash)
        verifier.append(genesis)
    except LogError as exc:
        raise RelayError("bad-entry", f"{exc.message} ({exc.reason})") from None
    except KeysError as exc:
        raise RelayError("bad-entry", exc.message) from None
    _require_own_key(relay, verifier.roster.relay_key)
    name = verifier.roster.network
    # create_network consumes the token in the same transaction: a refused
    # creation leaves the token usable, a successful one uses it up.
    network = await relay.store.create_network(
        name, b64e(genesis_hash), canonical(genesis).decode("utf-8"), relay.now(),
        token_hash=creation_token_hash(token))
    admin = next(iter(verifier.roster.admins()))
    await relay.audit("network-created", name, admin, genesis_hash=network.genesis_hash)
    return json_response({"network": name, "genesis_hash": network.genesis_hash,
                          "relay_key": relay.key.public.b64()}, status=201)


def _require_own_key(relay, named: IdentityPublicKey) -> None:
    """A log naming another relay key would make every client refuse this relay: say so now.

    Only the newest: naming a key the operator is retiring would lock the network out again.
    """
    if named != relay.key.public:
        raise RelayError("wrong-relay-key", "the entry names relay key "
                         f"{format_fingerprint(named.fingerprint())}, but this relay's newest key is "
                         f"{format_fingerprint(relay.key.public.fingerprint())}")


async def _log_reader(request: web.Request, network: str) -> NetworkState:
    """Members read the log with their token; an enrollee with its pending invite id."""
    relay = request.app[RELAY]
    invite_id = request.headers.get("Comity-Invite")
    if invite_id is not None and "Authorization" not in request.headers:
        if not ID_PATTERN.fullmatch(invite_id):
            raise RelayError("no-invite")
        invite = await relay.store.get_invite(network, invite_id)   # raises NoInvite
        if invite.expires_at <= relay.now():
            raise RelayError("no-invite")
        return await relay.network(network)
    state, _ = await relay.member(request, network)
    return state


async def get_log(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    state = await _log_reader(request, network)
    since = query_int(request, "since", 0, 0, 2**53)
    limit = query_int(request, "limit", MAX_LOG_PAGE, 1, MAX_LOG_PAGE)
    roster = state.roster
    head = roster.head()
    # Never past the head we sign: another worker may have appended since we read the log.
    rows = [row for row in await relay.store.log_entries(network, since, limit)
            if row.seq <= roster.seq]
    # Entries are stored as canonical JSON text: splice them without re-parsing.
    entries = b",".join(row.entry.encode("utf-8") for row in rows)
    more = bool(rows) and rows[-1].seq < head["seq"]
    # A signed, dated head: a relay hiding newer entries must sign a fresh head that omits
    # them, which the entries' own times later contradict (keys/log_head.py).
    signed = make_log_head(relay.key_for(state), network=state.genesis_hash, seq=roster.seq,
                           head_hash=roster.head_hash, time=relay.now())
    body = (b'{"entries":[' + entries + b'],"head":' + canonical(head)
            + b',"signed_head":' + canonical(signed)
            + b',"more":' + (b"true" if more else b"false") + b"}")
    return web.Response(body=body, content_type="application/json")


async def append_log(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    state, member = await relay.member(request, network)
    body = await read_json(request, {"entry"})
    entry = body["entry"]
    if not isinstance(entry, dict):
        raise RelayError("bad-entry", "entry must be a JSON object")
    if entry.get("kind") == "set-relay-key" and isinstance(entry.get("body"), dict):
        try:
            named = IdentityPublicKey.from_b64(entry["body"].get("relay_key"))
        except KeysError:
            named = None            # malformed: the log verifier refuses it with its reason
        if named is not None:
            _require_own_key(relay, named)
    seq, digest = await relay.append_log(state, entry)
    await _after_append(relay, state, entry, member.handle)
    return json_response({"seq": seq, "hash": digest}, status=201)


async def _after_append(relay, state: NetworkState, entry: dict, by: str) -> None:
    kind, body = entry["kind"], entry["body"]
    handle = body.get("handle") or body.get("member", {}).get("handle")
    await relay.audit(f"log-{kind}", state.name, by, seq=entry["seq"], subject=handle)
    if kind == "add-member":
        # The invite for that handle has been answered.
        await relay.store.delete_invites_for_handle(state.name, handle)
    if kind in ("remove-member", "rotate-identity-key"):
        relay.hub.publish(state.name, handle, {"type": "revoked"})
