"""Member authentication: challenge, signature, short-lived bearer token.

1. ``POST /v1/networks/{network}/auth/challenge {"handle"}`` returns a
   challenge the relay derives rather than stores::

       challenge = b64(time || nonce || mac)              56 bytes
       time      = issue time, Unix seconds, 8 bytes big-endian
       nonce     = 16 random bytes
       mac       = HMAC-SHA256(relay secret, "comity/v1/auth-challenge\0" ||
                               time || nonce || network || "\0" || handle)

   Issuing one writes nothing, so an anonymous caller can ask for as many as
   it likes without filling anything or crowding out the member (issue 9,
   break 6: sixteen stored challenges per handle used to lock a member out).
2. The member signs ``{"challenge", "handle", "network" (genesis hash),
   "relay" (relay public key)}`` with its identity key under purpose ``auth``
   and posts it to ``.../auth/token``. Naming the relay and the network stops
   a signature made for one relay or network being replayed at another. The
   relay checks the MAC (constant time: it binds the challenge to this
   network and handle), that ``time`` is not in the future and at most
   ``CHALLENGE_TTL`` old, then the signature. Only then is the challenge
   written down (``used_challenges``, until it expires) so that it is used
   once: only a valid signature, that is a member, writes that state. With
   several workers the table is shared through the database.
3. The relay returns a bearer token: ``v1.<claims>.<mac>`` where claims is
   base64url canonical JSON ``{"n": network, "h": handle, "k": identity-key
   fingerprint, "exp": time}`` and mac is HMAC-SHA256 under a relay secret.
   Tokens are stateless, but every request re-checks that the member is still
   active with the same identity key, so removal or identity rotation stops a
   token at once.

Challenge and token MACs share the relay secret (``token.key``, one for all
workers) under different labels, so neither can stand for the other.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from dataclasses import dataclass

from keys.encoding import b64d, b64e, canonical, parse
from keys.errors import KeysError

from .constants import CHALLENGE_TTL, TOKEN_TTL
from .errors import RelayError

AUTH_PURPOSE = "auth"
TOKEN_SECRET_BYTES = 32
#: the issue time in a challenge: unsigned 64-bit big-endian seconds (no 2038 or 2106 limit)
_CHALLENGE_TIME = struct.Struct(">Q")
#: 128 random bits: two challenges issued in the same second never coincide in practice
CHALLENGE_NONCE_BYTES = 16
#: a full HMAC-SHA256: forging a challenge means forging the MAC
_CHALLENGE_MAC_BYTES = 32
CHALLENGE_BYTES = _CHALLENGE_TIME.size + CHALLENGE_NONCE_BYTES + _CHALLENGE_MAC_BYTES
#: domain separation from the token MAC, which uses the same secret
_CHALLENGE_LABEL = b"comity/v1/auth-challenge\x00"
_TOKEN_LABEL = b"comity/v1/token\x00"
#: verified bearer tokens remembered to skip the HMAC and parse on the hot path
MAX_CACHED_TOKENS = 10_000


@dataclass(frozen=True)
class Challenge:
    """A challenge whose MAC and age checked out: ``text`` as sent, valid until ``expires``."""
    text: str
    raw: bytes
    expires: int


@dataclass(frozen=True)
class TokenClaims:
    network: str
    handle: str
    key_fingerprint: bytes
    expires: int


class Authenticator:
    def __init__(self, secret: bytes, *, clock=time.time):
        if len(secret) != TOKEN_SECRET_BYTES:
            raise ValueError("token secret must be 32 bytes")
        self._secret = secret
        self._clock = clock
        #: tokens whose MAC verified -> their claims (expiry is still checked on every use)
        self._verified: dict[str, TokenClaims] = {}

    def __repr__(self) -> str:
        return "Authenticator(<secret>)"

    # -- challenges ----------------------------------------------------------

    def issue_challenge(self, network: str, handle: str) -> tuple[str, int]:
        """A fresh challenge for ``handle`` in ``network`` and when it expires."""
        return self._challenge_from_parts(network, handle, int(self._clock()),
                                          os.urandom(CHALLENGE_NONCE_BYTES))

    def _challenge_from_parts(self, network: str, handle: str, issued: int,
                              nonce: bytes) -> tuple[str, int]:
        head = _CHALLENGE_TIME.pack(issued) + nonce
        return b64e(head + self._challenge_mac(network, handle, head)), issued + CHALLENGE_TTL

    def check_challenge(self, network: str, handle: str, text: str) -> Challenge:
        """The challenge, if this relay issued it for ``handle`` in ``network`` and it has not
        expired; ``bad-challenge`` otherwise. Whether it was used already is the store's part."""
        try:
            raw = b64d(text, length=CHALLENGE_BYTES)
        except KeysError:
            raise RelayError("bad-challenge") from None
        head, mac = raw[:-_CHALLENGE_MAC_BYTES], raw[-_CHALLENGE_MAC_BYTES:]
        # Constant-time comparison: the MAC is a secret-derived value.
        if not hmac.compare_digest(mac, self._challenge_mac(network, handle, head)):
            raise RelayError("bad-challenge")
        issued = _CHALLENGE_TIME.unpack_from(head)[0]
        now = int(self._clock())
        # A time ahead of the clock means the clock was set back since: refuse rather than
        # let the challenge live longer than CHALLENGE_TTL.
        if not issued <= now <= issued + CHALLENGE_TTL:
            raise RelayError("bad-challenge")
        return Challenge(text, raw, issued + CHALLENGE_TTL)

    @staticmethod
    def challenge_shaped(text: str) -> bool:
        """Whether ``text`` has a challenge's encoding and size (a refusal of one is audited)."""
        try:
            b64d(text, length=CHALLENGE_BYTES)
        except KeysError:
            return False
        return True

    def _challenge_mac(self, network: str, handle: str, head: bytes) -> bytes:
        # time and nonce have fixed sizes and names never contain NUL (NAME_PATTERN), so the
        # input splits one way only: a challenge for one (network, handle) fits no other.
        message = (_CHALLENGE_LABEL + head + network.encode("ascii") + b"\x00"
                   + handle.encode("ascii"))
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    # -- tokens --------------------------------------------------------------

    def issue_token(self, network: str, handle: str, key_fingerprint: bytes) -> tuple[str, int]:
        expires = int(self._clock()) + TOKEN_TTL
        claims = b64e(canonical({"n": network, "h": handle, "k": b64e(key_fingerprint), "exp": expires}))
        return f"v1.{claims}.{b64e(self._mac(claims))}", expires

    def check_token(self, token: str) -> TokenClaims:
        """Check the MAC and expiry; the caller checks the member is still active."""
        cached = self._verified.get(token)
        if cached is not None:
            if cached.expires < self._clock():
                raise RelayError("bad-token", "the bearer token expired: authenticate again")
            return cached
        result = self._check_token(token)
        if len(self._verified) >= MAX_CACHED_TOKENS:
            self._verified.clear()      # simplest bound; a miss only costs one HMAC
        self._verified[token] = result
        return result

    def _check_token(self, token: str) -> TokenClaims:
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != "v1" or len(token) > 1024:
            raise RelayError("bad-token")
        _, claims_text, mac_text = parts
        try:
            mac = b64d(mac_text)
        except KeysError:
            raise RelayError("bad-token") from None
        # Constant-time comparison: the MAC is a secret-derived value.
        if not hmac.compare_digest(mac, self._mac(claims_text)):
            raise RelayError("bad-token")
        try:
            claims = parse(b64d(claims_text))
            result = TokenClaims(claims["n"], claims["h"], b64d(claims["k"]), int(claims["exp"]))
        except (KeysError, KeyError, TypeError, ValueError):
            raise RelayError("bad-token") from None
        if result.expires < self._clock():
            raise RelayError("bad-token", "the bearer token expired: authenticate again")
        return result

    def _mac(self, claims_text: str) -> bytes:
        return hmac.new(self._secret, _TOKEN_LABEL + claims_text.encode("ascii"),
                        hashlib.sha256).digest()


def auth_statement(challenge: bytes, handle: str, genesis_hash: bytes, relay_key: bytes) -> dict:
    """What the member signs under purpose ``auth``."""
    return {"challenge": b64e(challenge), "handle": handle, "network": b64e(genesis_hash),
            "relay": b64e(relay_key)}


class RateLimiter:
    """Token buckets keyed by member or client address."""

    def __init__(self, per_second: float, burst: int, *, clock=time.monotonic, max_keys: int = 100_000):
        self.per_second, self.burst = per_second, burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[object, tuple[float, float]] = {}

    def allow(self, key: object) -> bool:
        now = self._clock()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.per_second)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        if len(self._buckets) >= self._max_keys and key not in self._buckets:
            # Forget full buckets: a full bucket is the same as no bucket.
            self._buckets = {k: v for k, v in self._buckets.items() if v[0] < self.burst}
        self._buckets[key] = (tokens - 1.0, now)
        return True
