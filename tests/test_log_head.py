"""The log head a relay signs (keys.log_head): shape, signature, freshness, withholding."""

from __future__ import annotations

import pytest

from keys.constants import CLOCK_SKEW, HEAD_MAX_AGE
from keys.encoding import canonical
from keys.errors import LogHeadError, SignatureError
from keys.identity import IdentityKey, IdentityPublicKey
from keys.log_head import check_fresh, make_log_head, verify_log_head, withheld

from .conftest import load_vectors

VECTORS = load_vectors("log_head/heads.json")
RELAY = IdentityKey.from_seed(bytes(range(32)))
T0 = 1_767_225_600


def head(seq=7, time=T0):
    return make_log_head(RELAY, network=bytes(32), seq=seq, head_hash=b"\x01" * 32, time=time)


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["description"])
def test_log_head_vectors(case):
    relay = IdentityPublicKey.from_b64(VECTORS["relay_public_key"])
    try:
        verify_log_head(case["record"], relay)
        outcome = "success"
    except (LogHeadError, SignatureError) as exc:
        assert exc.reason
        outcome = exc.reason
    assert outcome == case["expect"]


def test_signing_input_is_pinned():
    record = VECTORS["cases"][0]["record"]
    unsigned = {k: v for k, v in record.items() if k != "sig"}
    assert (b"comity/v1/log-head\x00" + canonical(unsigned)).hex() == VECTORS["signing_input_hex"]


@pytest.mark.parametrize("age, reason", [
    (0, None), (HEAD_MAX_AGE + CLOCK_SKEW, None), (HEAD_MAX_AGE + CLOCK_SKEW + 1, "stale"),
    (-CLOCK_SKEW, None), (-CLOCK_SKEW - 1, "future"),
])
def test_freshness_allows_the_maximum_age_and_the_clock_skew(age, reason):
    if reason is None:
        check_fresh(head(), T0 + age)
        return
    with pytest.raises(LogHeadError) as info:
        check_fresh(head(), T0 + age)
    assert info.value.reason == reason


def test_a_head_contradicted_by_the_next_entrys_time_proves_withholding():
    signed = head(seq=7, time=T0)
    assert withheld(signed, {"seq": 8, "time": T0 - CLOCK_SKEW - 1})
    assert not withheld(signed, {"seq": 8, "time": T0 - CLOCK_SKEW})     # within clock error
    assert not withheld(signed, {"seq": 9, "time": 0})                   # not the next entry
