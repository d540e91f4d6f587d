"""Authentication by identity key.

POST /v1/networks/{network}/auth/challenge  {"handle"}                         -> {"challenge", "expires"}
POST /v1/networks/{network}/auth/token      {"handle", "challenge", "signature"} -> {"token", "expires"}

The signature is by the member's identity key, purpose ``auth``, over
``{"challenge", "handle", "network": genesis hash, "relay": relay public key}``.
"""

from __future__ import annotations

import os

from aiohttp import web

from keys.encoding import b64d, b64e
from keys.errors import KeysError

from ..auth import AUTH_PURPOSE, CHALLENGE_BYTES, auth_statement
from ..constants import CHALLENGE_TTL, MAX_CHALLENGES_PER_MEMBER, MAX_OUTSTANDING_CHALLENGES
from ..errors import RelayError
from ..httputil import NAME_PATTERN, field_str, json_response, path_name, read_json
from ..context import RELAY


async def challenge(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    body = await read_json(request, {"handle"})
    handle = field_str(body, "handle", NAME_PATTERN)
    await relay.network(network)                     # 404 for an unknown network
    value, expires = b64e(os.urandom(CHALLENGE_BYTES)), relay.now() + CHALLENGE_TTL
    await relay.store.add_challenge(network, handle, value, expires,
                                    per_member=MAX_CHALLENGES_PER_MEMBER,
                                    total=MAX_OUTSTANDING_CHALLENGES)
    return json_response({"challenge": value, "expires": expires})


async def token(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    body = await read_json(request, {"handle", "challenge", "signature"})
    handle = field_str(body, "handle", NAME_PATTERN)
    try:
        value = b64d(field_str(body, "challenge"), length=CHALLENGE_BYTES)
    except KeysError:
        raise RelayError("bad-challenge") from None
    state = await relay.network(network)
    member = state.roster.member(handle)
    statement = auth_statement(value, handle, state.genesis_hash, relay.key.public.raw)
    try:
        # One use, even if what follows fails; a replayed or stale challenge is audited too.
        if not await relay.store.take_challenge(network, handle, b64e(value), relay.now()):
            raise RelayError("bad-challenge")
        if member is None or not member.active:
            raise RelayError("not-a-member")
        member.identity_key.verify(AUTH_PURPOSE, statement, body["signature"])
    except (RelayError, KeysError) as exc:
        relay.metrics.inc("comity_auth_failures_total")
        await relay.audit("auth-failed", network, handle,
                          reason=exc.code if isinstance(exc, RelayError) else "bad-signature")
        if isinstance(exc, RelayError):
            raise
        raise RelayError("bad-signature") from None
    issued, expires = relay.auth.issue_token(network, handle, member.identity_key.fingerprint())
    return json_response({"token": issued, "expires": expires})
