"""Member authentication: challenge, signature, short-lived bearer token.

1. ``POST /v1/networks/{network}/auth/challenge {"handle"}`` returns 32 random
   bytes, valid for ``CHALLENGE_TTL`` and usable once.
2. The member signs ``{"challenge", "handle", "network" (genesis hash),
   "relay" (relay public key)}`` with its identity key under purpose ``auth``
   and posts it to ``.../auth/token``. Naming the relay and the network stops
   a signature made for one relay or network being replayed at another.
3. The relay returns a bearer token: ``v1.<claims>.<mac>`` where claims is
   base64url canonical JSON ``{"n": network, "h": handle, "k": identity-key
   fingerprint, "exp": time}`` and mac is HMAC-SHA256 under a relay secret.
   Tokens are stateless, but every request re-checks that the member is still
   active with the same identity key, so removal or identity rotation stops a
   token at once.

Challenges live in the database (``auth_challenges``), so a token request may
reach another worker process than its challenge; tokens need no storage.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from keys.encoding import b64d, b64e, canonical, parse
from keys.errors import KeysError

from .constants import TOKEN_TTL
from .errors import RelayError

AUTH_PURPOSE = "auth"
CHALLENGE_BYTES = 32  # 256 bits: unguessable and never repeats in practice
TOKEN_SECRET_BYTES = 32
#: verified bearer tokens remembered to skip the HMAC and parse on the hot path
MAX_CACHED_TOKENS = 10_000


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
        return hmac.new(self._secret, b"comity/v1/token\x00" + claims_text.encode("ascii"),
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
