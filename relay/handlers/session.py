"""Authentication by identity key.

POST /v1/networks/{network}/auth/challenge  {"handle"}                         -> {"challenge", "expires"}
POST /v1/networks/{network}/auth/token      {"handle", "challenge", "signature"} -> {"token", "expires"}

The signature is by the member's identity key, purpose ``auth``, over
``{"challenge", "handle", "network": genesis hash, "relay": relay public key}``, the
relay key being any of those the relay holds (two during a key rotation).
Challenges are derived, not stored (relay/auth.py), so issuing one costs an
HMAC and spends no per-address budget. A token request that fails spends the
client address's anonymous budget and, while some is left, is audited; one
with a valid signature spends the member's own budget instead, so a flood of
failures from the member's address never keeps the member out.
"""

from __future__ import annotations

from aiohttp import web

from keys.errors import KeysError

from ..auth import AUTH_PURPOSE, auth_statement
from ..context import RELAY, Relay
from ..errors import RelayError
from ..httputil import NAME_PATTERN, field_str, json_response, path_name, read_json


async def challenge(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    body = await read_json(request, {"handle"})
    handle = field_str(body, "handle", NAME_PATTERN)
    await relay.network(network)                     # 404 for an unknown network
    value, expires = relay.auth.issue_challenge(network, handle)
    return json_response({"challenge": value, "expires": expires})


async def token(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    body = await read_json(request, {"handle", "challenge", "signature"})
    handle = field_str(body, "handle", NAME_PATTERN)
    text = field_str(body, "challenge")
    state = await relay.network(network)
    member = state.roster.member(handle)
    try:
        found = relay.auth.check_challenge(network, handle, text)
        if member is None or not member.active:
            raise RelayError("not-a-member")
        _verify_signed_for_us(relay, member, found.raw, handle, state.genesis_hash,
                              body["signature"])
    except (RelayError, KeysError) as exc:
        await _refuse(relay, request, network, handle, text, exc)
    # A replay is a failure like any other: checked before the member's budget is spent, so
    # that someone who saw a signed request cannot spend that budget by sending it again.
    if await relay.store.challenge_used(network, handle, found.text):
        await _refuse(relay, request, network, handle, text, RelayError("bad-challenge"))
    # A fresh valid signature: the member's own budget, which nobody else can spend, pays.
    if not relay.member_limiter.allow((network, handle)):
        relay.metrics.inc("comity_rate_limited_total")
        raise RelayError("rate-limited", headers={"Retry-After": "1"})
    if not await relay.store.use_challenge(network, handle, found.text, found.expires):
        # Another request with the same challenge got there first (maybe at another worker).
        await _refuse(relay, request, network, handle, text, RelayError("bad-challenge"))
    issued, expires = relay.auth.issue_token(network, handle, member.identity_key.fingerprint())
    return json_response({"token": issued, "expires": expires})


def _verify_signed_for_us(relay: Relay, member, challenge: bytes, handle: str,
                          genesis_hash: bytes, signature) -> None:
    """The member signed the challenge for a key this relay holds (raises KeysError if not).

    During a rotation the relay holds two keys: members pinned to the old one and an
    administrator naming the new one both log in. At most two checks per request.
    """
    held = relay.keys.held()
    for key in held:
        statement = auth_statement(challenge, handle, genesis_hash, key.public.raw)
        try:
            member.identity_key.verify(AUTH_PURPOSE, statement, signature)
            return
        except KeysError:
            if key is held[-1]:
                raise


async def _refuse(relay: Relay, request: web.Request, network: str, handle: str, text: str,
                  exc: RelayError | KeysError) -> None:
    """Raise the refusal of a failed token request, audited while the address has budget."""
    relay.metrics.inc("comity_auth_failures_total")
    # Failures only spend the anonymous budget: past it, one address gets 429 and writes no
    # more audit rows, however many free challenges it asked for.
    if not relay.anon_limiter.allow(request.remote):
        relay.metrics.inc("comity_rate_limited_total")
        raise RelayError("rate-limited", headers={"Retry-After": "1"}) from None
    if relay.auth.challenge_shaped(text):
        await relay.audit("auth-failed", network, handle,
                          reason=exc.code if isinstance(exc, RelayError) else "bad-signature")
    if isinstance(exc, RelayError):
        raise exc
    raise RelayError("bad-signature") from None
