"""Bearer tokens (relay.auth.Authenticator) without the HTTP layer: the verified-token cache."""

from __future__ import annotations

import os

import pytest

from relay.auth import MAX_CACHED_TOKENS, Authenticator
from relay.errors import RelayError


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now


def test_a_cached_token_still_expires():
    clock = Clock()
    auth = Authenticator(os.urandom(32), clock=clock)
    token, expires = auth.issue_token("refco", "ana", b"\x01" * 20)
    assert auth.check_token(token).handle == "ana"
    assert auth.check_token(token).handle == "ana"          # second time from the cache
    clock.now = expires + 1
    with pytest.raises(RelayError) as caught:
        auth.check_token(token)
    assert caught.value.code == "bad-token"


def test_a_forged_token_is_never_cached():
    auth = Authenticator(os.urandom(32), clock=Clock())
    token, _ = auth.issue_token("refco", "ana", b"\x01" * 20)
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    for _ in range(2):
        with pytest.raises(RelayError):
            auth.check_token(forged)
    other = Authenticator(os.urandom(32), clock=Clock())
    with pytest.raises(RelayError):
        other.check_token(token)                             # another relay's secret


def test_the_cache_is_bounded():
    auth = Authenticator(os.urandom(32), clock=Clock())
    for i in range(MAX_CACHED_TOKENS + 5):
        auth.check_token(auth.issue_token("refco", f"member-{i}", b"\x01" * 20)[0])
    assert len(auth._verified) <= MAX_CACHED_TOKENS
