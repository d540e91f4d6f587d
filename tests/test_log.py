"""The membership log and its verifier (keys.log)."""

from __future__ import annotations

import copy
import importlib.util
import re

import pytest
from hypothesis import assume, given, settings, strategies as st

from keys import constants as C
from keys.encoding import b64d, b64e, canonical
from keys.errors import LogError
from keys.hpke import make_key_record
from keys.identity import IdentityPublicKey
from keys.log import (ADMIN_KINDS, MAX_SIGNATURES, POLICY_BOUNDS, LogVerifier, default_policy,
                      entry_hash, make_entry, member_record, parse_policy, signed_content)

from .conftest import VECTORS, load_vectors

_spec = importlib.util.spec_from_file_location("log_vectors", VECTORS / "log" / "generate.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)
Scenario, roster_json, identity = gen.Scenario, gen.roster_json, gen.identity
encryption = gen.encryption


def verified(s: Scenario, upto: int | None = None) -> LogVerifier:
    verifier = LogVerifier(s.genesis_hash)
    verifier.extend(s.entries[:upto])
    return verifier


def state(verifier: LogVerifier) -> dict:
    """Everything a verifier knows, minus its cache: to compare two verifiers."""
    return {k: v for k, v in vars(verifier).items() if k != "_current"}


def refused(s: Scenario, reason: str, pinned: bytes | None = None) -> LogError:
    """All entries but the last verify; the last is refused with ``reason``, changing nothing."""
    verifier = LogVerifier(pinned or s.genesis_hash)
    verifier.extend(s.entries[:-1])
    fresh = LogVerifier(pinned or s.genesis_hash)
    fresh.extend(s.entries[:-1])
    with pytest.raises(LogError) as info:
        verifier.append(s.entries[-1])
    assert info.value.reason == reason, info.value.message
    assert state(verifier) == state(fresh)
    return info.value


def base() -> Scenario:
    s = Scenario()
    s.add("bob")
    return s


# -- vectors ------------------------------------------------------------------

def test_valid_log_vector():
    doc = load_vectors("log/valid.json")
    kinds = {e["kind"] for e in doc["entries"]}
    assert kinds == {"genesis", *ADMIN_KINDS, "rotate-encryption-key", "rotate-identity-key"}
    verifier = LogVerifier(b64d(doc["genesis_hash"]))
    verifier.extend(doc["entries"])
    assert [b64e(verifier.hash_at(n)) for n in range(verifier.seq + 1)] == doc["hashes"]
    for expected in doc["rosters"]:
        assert roster_json(verifier.roster_at(expected["seq"])) == expected


@pytest.mark.parametrize("case", load_vectors("log/refusals.json")["cases"],
                         ids=lambda c: f'{c["expect"]}: {c["description"]}')
def test_refusal_vectors(case):
    pinned = b64d(case["genesis_hash"])
    verifier, fresh = LogVerifier(pinned), LogVerifier(pinned)
    verifier.extend(case["entries"][:-1])
    fresh.extend(case["entries"][:-1])
    with pytest.raises(LogError) as info:
        verifier.append(case["entries"][-1])
    assert info.value.reason == case["expect"]
    assert state(verifier) == state(fresh)      # atomic: the refused entry changed nothing


def test_refusal_vectors_cover_every_reason():
    reasons = {c["expect"] for c in load_vectors("log/refusals.json")["cases"]}
    assert reasons >= {"bad-signature", "wrong-signer", "duplicate-handle", "duplicate-key", "gap",
                       "fork", "duplicate-entry", "removed-member", "last-admin", "bad-entry",
                       "unknown-member", "bad-time"}


# -- roster derivation ----------------------------------------------------------

def test_roster_follows_every_kind():
    s = gen.valid_log()
    roster = verified(s).roster
    assert roster.seq == len(s.entries) - 1 and roster.network == "ejn-demo"
    assert roster.genesis_hash == s.genesis_hash == entry_hash(s.entries[0])
    assert set(roster.active()) == {"alice", "bob", "carol", "erin"}
    assert set(roster.admins()) == {"alice"}
    assert roster.member("dave").removed_seq == 9 and not roster.member("dave").is_admin
    assert roster.policy.retention == 14 * C.DAY and roster.policy.max_recipients == 50
    assert roster.by_identity(s.keys["bob"].public).handle == "bob"
    assert roster.by_identity(identity("bob#0").public) is None   # replaced key


def test_every_encryption_key_version_is_kept():
    s = base()
    s.rotate_encryption("bob")
    s.rotate_identity("bob", "alice")
    bob = verified(s).roster.member("bob")
    assert sorted(bob.encryption_keys) == [1, 2, 3]
    assert bob.encryption_key == bob.encryption_keys[3] and bob.encryption_key_version == 3
    assert len(set(bob.encryption_keys.values())) == 3


def test_roster_at_matches_a_replay_and_stays_frozen():
    s = gen.valid_log()
    verifier = verified(s, upto=8)
    early = verifier.roster_at(5)
    verifier.extend(s.entries[8:])
    assert verifier.roster_at(5) == early
    for seq in range(len(s.entries)):
        assert roster_json(verifier.roster_at(seq)) == roster_json(verified(s, seq + 1).roster)
        assert verifier.hash_at(seq) == entry_hash(s.entries[seq])


def test_roster_at_and_extend_do_no_repeated_work(monkeypatch):
    s = gen.valid_log()
    verifier = verified(s, upto=6)
    calls = []
    original = IdentityPublicKey.verify_raw
    monkeypatch.setattr(IdentityPublicKey, "verify_raw",
                        lambda self, m, sig: calls.append(1) or original(self, m, sig))
    for seq in range(verifier.seq + 1):
        verifier.roster_at(seq)
    assert calls == []                          # rosters come from stored state, not a replay
    new = s.entries[6:]
    verifier.extend(new)
    key_records = sum(1 for e in new for part in (e["body"], e["body"].get("member", {}))
                      if "encryption_key" in part)
    assert len(calls) == sum(len(e["signatures"]) for e in new) + key_records


def test_unknown_seq():
    verifier = LogVerifier(Scenario().genesis_hash)
    for query in (lambda: verifier.roster, lambda: verifier.hash_at(0)):
        with pytest.raises(LogError) as info:
            query()
        assert info.value.reason == "unknown-seq"
    assert verifier.seq == -1
    with pytest.raises(ValueError):
        LogVerifier(b"short")


# -- refusals -------------------------------------------------------------------

def test_bad_signature():
    s = base()
    gen.flip_signature(s.add("dave"))
    refused(s, "bad-signature")
    s = base()
    entry = s.remove("bob")
    entry["signatures"][0]["sig"] = s.keys["alice"].sign_b64("message", signed_content(entry))
    refused(s, "bad-signature")                 # right key and content, wrong purpose


def test_wrong_signer():
    s = base(); s.add("dave", by="bob")
    assert "only an admin" in refused(s, "wrong-signer").message
    s = base(); s.new_identity("dave")
    s.entry("add-member", {"member": s.record("dave")}, "alice", "bob")
    refused(s, "wrong-signer")                  # an admin co-signing does not excuse a member
    s = base(); s.rotate_encryption("alice", by="bob")
    assert "only its own" in refused(s, "wrong-signer").message
    s = base(); s.rotate_identity("bob")
    refused(s, "wrong-signer")                  # no admin
    s = base(); s.rotate_identity("bob", "alice", new_signs=False)
    refused(s, "wrong-signer")                  # no proof of possession of the new key
    s = base(); old = s.keys["bob"]; s.rotate_identity("bob", "alice")
    s.entries[-1]["signatures"] = [x for x in s.entries[-1]["signatures"]
                                   if x["key"] != old.public.b64()]
    refused(s, "wrong-signer")                  # no signature by the current key
    s = base(); s.set_policy(by=identity("outsider"))
    refused(s, "wrong-signer")
    s = base(); old = s.keys["alice"]; s.rotate_identity("alice"); s.add("dave", by=old)
    assert "replaced" in refused(s, "wrong-signer").message
    s = Scenario(); genesis = s.entries[0]
    s.entries[0] = make_entry(None, 0, "genesis", genesis["body"], genesis["time"], [identity("x")])
    refused(s, "wrong-signer")


def test_a_rotation_request_is_checked_without_the_admin_signature():
    s = base(); s.rotate_identity("bob")        # signed by bob's old and new keys only
    verifier = verified(s, upto=-1)
    before = state(verifier)
    assert verifier.check_rotation_request(s.entries[-1]) == s.keys["bob"].public
    assert state(verifier) == before            # a check, not an append
    s = base(); s.rotate_identity("bob", new_signs=False)
    with pytest.raises(LogError) as info:
        verified(s, upto=-1).check_rotation_request(s.entries[-1])
    assert info.value.reason == "wrong-signer"  # the new key must still prove possession
    s = base(); stale = s.rotate_identity("bob"); s.entries.pop(); s.set_policy()
    verifier = verified(s)
    with pytest.raises(LogError) as info:
        verifier.check_rotation_request(stale)
    assert info.value.reason == "fork"          # it no longer follows the head
    with pytest.raises(LogError) as info:
        verifier.check_rotation_request(s.entries[-1])
    assert info.value.reason == "bad-entry"     # not a rotation at all

# -- the relay key ------------------------------------------------------------------

def test_the_roster_names_the_relay_key_in_force_at_each_seq():
    s = base()
    first = s.relay_key.public
    s.set_relay_key("relay#1")                  # seq 2
    s.add("carol")                              # seq 3
    verifier = verified(s)
    assert [verifier.roster_at(n).relay_key for n in range(4)] == [first, first] + [s.relay_key.public] * 2


def test_a_relay_key_vouches_only_until_the_entry_that_replaced_it():
    s = base()
    first = s.relay_key.public
    named_at = s.time
    s.set_relay_key("relay#1")                 # seq 2, one minute later
    replaced_at = s.time
    verifier = verified(s)
    assert verifier.check_relay_key(first, named_at - 10**6) == 0     # no lower bound
    assert verifier.check_relay_key(first, replaced_at) == 0          # the same second still counts
    with pytest.raises(LogError) as info:
        verifier.check_relay_key(first, replaced_at + 1)
    assert info.value.reason == "retired-relay-key" and "replaced at log entry 2" in info.value.message
    # The new key counts from before the entry too: the relay may start using it first.
    assert verifier.check_relay_key(s.relay_key.public, named_at) == 2
    with pytest.raises(LogError) as info:
        verifier.check_relay_key(gen.relay("never named").public, named_at)
    assert info.value.reason == "unknown-relay-key"


def test_an_admin_rotates_its_identity_without_a_second_admin():
    s = base()
    s.rotate_identity("alice")
    s.rotate_identity("bob", "alice")           # signed by alice's new key
    roster = verified(s).roster
    assert roster.member("alice").identity_key == s.keys["alice"].public


def test_duplicate_handle_and_key():
    s = base(); s.add("bob")
    refused(s, "duplicate-handle")
    s = base(); s.remove("bob"); s.add("bob")
    assert "never reused" in refused(s, "duplicate-handle").message
    s = base(); s.keys["dave"] = s.keys["bob"]; s.versions["dave"] = 0
    s.entry("add-member", {"member": s.record("dave")}, "alice")
    refused(s, "duplicate-key")
    s = base(); s.add("dave")
    body = {"handle": "dave", "identity_key": s.keys["bob"].public.b64(),
            "encryption_key": s.key_record("bob", version=2)}
    s.entry("rotate-identity-key", body, "dave", "bob", "alice")
    refused(s, "duplicate-key")                 # rotating onto another member's key


def test_gap_fork_and_duplicate():
    s = base(); s.entry("remove-member", {"handle": "bob"}, "alice", seq=3)
    refused(s, "gap")
    s = base(); s.entries.append(make_entry(s.entries[0], 2, "set-role",
                                            {"handle": "bob", "role": "admin"}, s.time,
                                            [s.keys["alice"]]))
    refused(s, "fork")
    s = base(); s.entries.append(dict(s.entries[1], time=s.time + 1))
    refused(s, "fork")                          # a different entry 1
    s = base(); s.entries.append(s.entries[1])
    refused(s, "duplicate-entry")
    s = Scenario()
    error = refused(s, "fork", pinned=entry_hash(Scenario(network="other-net").entries[0]))
    assert "fingerprint" in error.message


def test_removed_member():
    s = base(); s.remove("bob"); s.rotate_encryption("bob")
    refused(s, "removed-member")
    s = base(); s.add("carol", "admin"); s.remove("carol"); s.set_policy(by="carol")
    assert "can sign nothing" in refused(s, "removed-member").message
    s = base(); s.remove("bob"); s.remove("bob")
    refused(s, "removed-member")


def test_last_admin():
    s = base(); s.remove("alice")
    assert "last admin" in refused(s, "last-admin").message
    s = base(); s.set_role("alice", "member")
    refused(s, "last-admin")
    s = base(); s.set_role("bob", "admin"); s.set_role("alice", "member", by="bob")
    s.remove("alice", by="bob")                 # fine while another admin remains
    assert set(verified(s).roster.admins()) == {"bob"}


def test_unknown_member_and_bad_time():
    for build in (lambda s: s.remove("zed"), lambda s: s.set_role("zed", "admin"),
                  lambda s: s.rotate_encryption("zed", by="alice")):
        s = base(); s.versions["zed"] = 0; s.keys["zed"] = identity("zed")
        build(s)
        refused(s, "unknown-member")
    s = base(); s.entry("remove-member", {"handle": "bob"}, "alice", time=gen.T0 - 1)
    refused(s, "bad-time")


def _bad_member(s: Scenario, **change) -> None:
    s.new_identity("dave")
    s.entry("add-member", {"member": {**s.record("dave"), **change}}, "alice")


def _bad_frame(s: Scenario, **change) -> None:
    entry = s.remove("bob")
    entry.update(change)


BAD_ENTRIES = {
    "unknown entry field": lambda s: _bad_frame(s, note="x"),
    "missing entry field": lambda s: s.remove("bob").pop("time"),
    "seq is a boolean": lambda s: _bad_frame(s, seq=True),
    "unknown kind": lambda s: s.entry("promote", {"handle": "bob"}, "alice"),
    "second genesis": lambda s: s.entry("genesis", s.entries[0]["body"], "alice"),
    "prev is not text": lambda s: _bad_frame(s, prev=7),
    "negative time": lambda s: _bad_frame(s, time=-1),
    "body is a list": lambda s: s.entry("remove-member", ["bob"], "alice"),
    "no signatures": lambda s: _bad_frame(s, signatures=[]),
    "too many signatures": lambda s: s.entry(
        "remove-member", {"handle": "bob"}, *[identity(f"x{i}") for i in range(MAX_SIGNATURES + 1)]
    ),
    "signatures out of order": lambda s: s.entry(
        "remove-member", {"handle": "bob"}, "alice", "bob")["signatures"].reverse(),
    "signature key not base64url": lambda s: s.remove("bob")["signatures"][0].update(key="+/"),
    "signature is a number": lambda s: s.remove("bob")["signatures"][0].update(sig=5),
    "key record signature is a number": lambda s: s.entry("rotate-encryption-key", {
        "handle": "bob", "encryption_key": {**s.key_record("bob"), "sig": 5}}, "bob"),
    "float in body": lambda s: s.entries.append(dict(s.entries[-1], seq=2, body={"x": 1.5})),
    "member record unknown field": lambda s: _bad_member(s, email="d@example.org"),
    "handle with trailing newline": lambda s: _bad_member(s, handle="dave\n"),
    "handle too short": lambda s: _bad_member(s, handle="dv"),
    "empty name": lambda s: _bad_member(s, name=""),
    "name with a direction override": lambda s: _bad_member(s, name="Dave \u202eztrO"),
    "lower-case country": lambda s: _bad_member(s, country="es"),
    "three-letter country": lambda s: _bad_member(s, country="ESP"),
    "unknown role": lambda s: _bad_member(s, role="owner"),
    "identity key too short": lambda s: _bad_member(s, identity_key=b64e(b"\x01" * 31)),
    "key record signed by another key": lambda s: _bad_member(
        s, encryption_key=s.key_record("bob")),
    "key version not raised": lambda s: s.rotate_encryption("bob", version=1),
    "key reused under a new version": lambda s: s.entry("rotate-encryption-key", {
        "handle": "bob", "encryption_key": make_key_record(
            s.keys["bob"], verified(s).roster.member("bob").encryption_key,
            version=2, created=s.time, not_after=s.time + C.DAY)}, "bob"),
    "key record already expired": lambda s: s.rotate_encryption("bob", not_after=s.time + 1),
    "policy field missing": lambda s: s.entry("set-policy", {"policy": {"retention": C.DAY}},
                                              "alice"),
    "policy value too low": lambda s: s.set_policy(retention=C.MINUTE),
    "policy above ceiling": lambda s: s.set_policy(max_attachments=C.MAX_ATTACHMENTS + 1),
    "policy value is text": lambda s: s.set_policy(max_recipients="10"),
}


@pytest.mark.parametrize("build", BAD_ENTRIES.values(), ids=BAD_ENTRIES.keys())
def test_bad_entry(build):
    s = base()
    build(s)
    refused(s, "bad-entry")


def test_bad_genesis():
    for change in ({"role": "member"}, {"handle": "Alice"}):
        s = Scenario()
        body = s.entries[0]["body"]
        body["admin"] = {**body["admin"], **change}
        s.entries[0] = make_entry(None, 0, "genesis", body, gen.T0, [s.keys["alice"]])
        refused(s, "bad-entry")


def test_policy_round_trip():
    assert parse_policy(default_policy()).max_recipients == C.DEFAULT_MAX_RECIPIENTS
    assert set(default_policy()) == set(POLICY_BOUNDS)


# -- property: admin kinds need admins --------------------------------------------

def _property_base() -> tuple[Scenario, dict]:
    s = base()
    for handle, role in (("carol", "admin"), ("dave", "member"), ("erin", "admin"),
                         ("frank", "admin")):
        s.add(handle, role)
    s.set_role("carol", "member")               # a former admin
    s.remove("erin")                            # a removed admin
    old_alice = s.keys["alice"]
    s.rotate_identity("alice")                  # an admin's replaced key
    signers = {"bob": (s.keys["bob"], "wrong-signer"), "carol": (s.keys["carol"], "wrong-signer"),
               "dave": (s.keys["dave"], "wrong-signer"), "erin": (s.keys["erin"], "removed-member"),
               "alice-old": (old_alice, "wrong-signer")}
    return s, signers


PROP, NON_ADMINS = _property_base()
ACTIVE = ["alice", "bob", "carol", "dave", "frank"]


def _new_member(handle: str) -> dict:
    key = identity("prop " + handle)
    record = make_key_record(key, encryption("prop " + handle).public, version=1,
                             created=PROP.time, not_after=PROP.time + 90 * C.DAY)
    return member_record(key.public, record, handle=handle, name="New Member")


BODIES = {
    "add-member": st.from_regex(C.HANDLE_PATTERN, fullmatch=True)
    .filter(lambda h: re.fullmatch(C.HANDLE_PATTERN, h) and h not in PROP.keys)
    .map(lambda h: {"member": _new_member(h)}),
    "remove-member": st.sampled_from(ACTIVE).map(lambda h: {"handle": h}),
    "set-role": st.builds(lambda h, r: {"handle": h, "role": r},
                          st.sampled_from(ACTIVE), st.sampled_from(C.ROLES)),
    "set-policy": st.fixed_dictionaries(
        {name: st.integers(low, min(high, 2**40)) for name, (low, high) in POLICY_BOUNDS.items()}
    ).map(lambda p: {"policy": p}),
    "set-relay-key": st.integers(0, 10**6).map(
        lambda i: {"relay_key": gen.relay(f"prop {i}").public.b64()}),
}


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(ADMIN_KINDS), signer=st.sampled_from(sorted(NON_ADMINS)),
       cosign=st.booleans(), delay=st.integers(0, C.DAY), data=st.data())
def test_admin_kinds_refuse_non_admin_signers(kind, signer, cosign, delay, data):
    body = data.draw(BODIES[kind])
    key, reason = NON_ADMINS[signer]
    seq, time = len(PROP.entries), PROP.time + delay
    verifier = verified(PROP)
    head = verifier.roster
    signers = [key, PROP.keys["frank"]] if cosign else [key]
    with pytest.raises(LogError) as info:
        verifier.append(make_entry(PROP.entries[-1], seq, kind, body, time, signers))
    assert info.value.reason == reason
    assert verifier.roster is head and verifier.seq == seq - 1
    # the same entry signed by an admin passes: the signer alone was at fault
    verifier.append(make_entry(PROP.entries[-1], seq, kind, body, time, [PROP.keys["alice"]]))
    assert verifier.seq == seq


# -- property: any change to a valid entry is refused, and only with LogError ----------

VALID = gen.valid_log().entries
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=6)


def _paths(value, path=()):
    yield path
    children = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, child in children:
        yield from _paths(child, path + (key,))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_change_to_a_valid_entry_is_refused(data):
    seq = data.draw(st.integers(0, len(VALID) - 1))
    entry = copy.deepcopy(VALID[seq])
    *parents, last = data.draw(st.sampled_from(list(_paths(entry))[1:]))
    target = entry
    for key in parents:
        target = target[key]
    if isinstance(target, dict) and data.draw(st.booleans()):
        del target[last]
    else:
        target[last] = data.draw(JSON)
    assume(canonical(entry) != canonical(VALID[seq]))
    verifier = LogVerifier(entry_hash(VALID[0]))
    verifier.extend(VALID[:seq])
    with pytest.raises(LogError):
        verifier.append(entry)
