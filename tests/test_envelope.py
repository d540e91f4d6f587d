"""Message envelopes (keys.envelope): seal, open, and every refusal."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys import envelope as env_mod
from keys.encoding import b64d, b64e, canonical
from keys.envelope import (OpenedMessage, check_envelope_shape, envelope_hash, header_view,
                           normalise_headers, payload_hash, seal)
from keys.constants import CLOCK_SKEW, DAY, ROTATION_WINDOW
from keys.errors import DecryptionError, EnvelopeError, ForkError, KeysError, LogError
from keys.identity import IdentityKey
from keys.log import LogVerifier
from keys.receipts import make_relay_receipt

from .conftest import VECTORS as VECTORS_DIR, load_vectors
from .envelope_support import (DEFAULT_POLICY, decryption_keys, encryption_key, identity, member,
                               roster, roster_from_spec)

CREATED = 1_767_225_600
HEADERS = {"type": "request", "subject": "Entraide 2026/7"}
HANDLES = ["alice", "bob", "carol", "dave", "erin", "frank"]
ROSTER = roster([member("alice", role="admin"), *(member(h) for h in HANDLES[1:]),
                 member("gone", removed_seq=2)], seq=3)
KEYS = {h: {1: encryption_key(h, 1)} for h in [*HANDLES, "gone"]}


def roster_at(seq: int):
    if seq != ROSTER.seq:
        raise LogError(f"no roster at seq {seq} yet")
    return ROSTER


def seal_(recipients=("bob", "carol"), *, sender="alice", headers=HEADERS, body="Bonjour",
          manifest=(), r=ROSTER, created=CREATED):
    return seal(identity(sender), sender, r, list(recipients), headers, body, manifest,
                created=created)


def open_(envelope, opener="bob", **kw):
    kw.setdefault("decryption_keys", KEYS[opener])
    kw.setdefault("roster_at", roster_at)
    return env_mod.open(envelope, recipient_handle=opener, **kw)


def refused(reason, envelope, opener="bob", **kw):
    with pytest.raises(KeysError) as info:
        open_(envelope, opener, **kw)
    assert info.value.reason == reason, info.value
    return info.value


def attachment(blob="blob-1", size=10):
    return {"name": "piece.pdf", "media_type": "application/pdf", "size": size, "blob": blob,
            "key": b64e(bytes(32)), "hash": b64e(bytes(32)), "ciphertext_size": size + 41}


# -- vectors ------------------------------------------------------------------

VECTORS = load_vectors("envelope/open.json")


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["description"])
def test_open_vectors(case):
    keys = VECTORS["keys"]
    rosters = {int(s): roster_from_spec(spec, keys, VECTORS["network"]["genesis_hash"])
               for s, spec in VECTORS["rosters"].items()}
    kwargs = dict(recipient_handle=case["opener"], roster_at=rosters.__getitem__,
                  decryption_keys=decryption_keys(keys, case["opener"],
                                                  case["decryption_key_versions"]))
    if case["expect"] == "success":
        opened = env_mod.open(case["envelope"], **kwargs)
        assert opened.signed_payload == case["signed_payload"]
        assert opened.sender.handle == case["signed_payload"]["payload"]["sender"]
        return
    with pytest.raises(KeysError) as info:
        env_mod.open(case["envelope"], **kwargs)
    assert info.value.reason == case["expect"]
    if case["expect"] == "fork":
        assert isinstance(info.value, ForkError)
    elif case["expect"] == "decryption-failed":
        assert isinstance(info.value, DecryptionError)
    else:
        assert isinstance(info.value, EnvelopeError)


@pytest.mark.parametrize("case", [c for c in VECTORS["cases"] if "seal" in c],
                         ids=lambda c: c["description"])
def test_seal_vectors_reproduce_every_deterministic_field(case):
    """Re-seal from the recorded inputs: all but the (randomized) HPKE wraps must match."""
    s, keys = case["seal"], VECTORS["keys"]
    r = roster_from_spec(VECTORS["rosters"][str(s["roster_seq"])], keys,
                         VECTORS["network"]["genesis_hash"])
    envelope, signed = env_mod._seal_from_parts(
        identity(s["sender"]), s["sender"], r, s["recipients"], s["headers"], s["body"],
        s["manifest"], created=s["created"], message_id=b64d(s["message_id"]),
        content_key=b64d(s["content_key"]), nonce=b64d(s["nonce"]))
    assert signed == case["signed_payload"]
    stored = case["envelope"]
    assert {k: v for k, v in envelope.items() if k != "wrapped"} == \
        {k: v for k, v in stored.items() if k != "wrapped"}
    assert {h: w["key_version"] for h, w in envelope["wrapped"].items()} == \
        {h: w["key_version"] for h, w in stored["wrapped"].items()}


def test_vectors_cover_every_refusal():
    expected = {"success", "decryption-failed", "not-a-recipient", "bad-envelope", "fork",
                "unknown-sender", "removed-member", "bad-signature"}
    assert {c["expect"] for c in VECTORS["cases"]} == expected


# -- sealing ------------------------------------------------------------------

def test_round_trip_and_format():
    envelope, signed = seal_(["carol", "bob"], manifest=[attachment()])
    assert envelope["recipients"] == ["bob", "carol"]
    assert envelope["blobs"] == ["blob-1"]
    assert set(envelope["wrapped"]) == {"bob", "carol"}
    assert header_view(envelope) == header_view(signed["payload"])
    assert signed["payload"]["roster_head"] == ROSTER.head()
    assert signed["payload"]["network"] == b64e(ROSTER.genesis_hash)
    assert len(b64d(envelope["id"])) == 16 and len(b64d(envelope["nonce"])) == 24
    # Omitted optional headers are filled in: every payload carries all nine.
    assert signed["payload"]["headers"] == {
        "type": "request", "subject": "Entraide 2026/7", "priority": "routine",
        "reference": None, "legal_basis": None, "deadline": None, "in_reply_to": None,
        "language": None, "handling": None}
    for opener in ("bob", "carol"):
        opened = open_(envelope, opener)
        assert opened.signed_payload == signed
        assert opened.sender.handle == "alice" and opened.key_version == 1
        assert opened.body == "Bonjour" and opened.id == envelope["id"]
        assert opened.manifest == [attachment()]
    check_envelope_shape(envelope, DEFAULT_POLICY)


def test_hashes_for_receipts():
    envelope, signed = seal_()
    opened = open_(envelope)
    assert envelope_hash(envelope) == hashlib.sha256(canonical(envelope)).digest()
    assert opened.envelope_hash() == envelope_hash(envelope)
    assert opened.payload_hash() == payload_hash(signed) == \
        hashlib.sha256(canonical(signed)).digest()


def test_fresh_randomness_per_message():
    a, _ = seal_()
    b, _ = seal_()
    assert a["id"] != b["id"] and a["nonce"] != b["nonce"] and a["ciphertext"] != b["ciphertext"]


def test_repr_shows_no_content():
    opened = open_(seal_(body="secret body")[0])
    assert "secret" not in repr(opened) and "Entraide" not in repr(opened)
    assert isinstance(opened, OpenedMessage)


def test_sender_may_address_itself():
    envelope, _ = seal_(["alice", "bob"])
    assert open_(envelope, "alice").sender.handle == "alice"


@pytest.mark.parametrize("recipients, reason", [
    ([], "bad-envelope"),
    (["bob", "bob"], "bad-envelope"),
    (["bob", "zoe"], "not-a-member"),
    (["bob", "gone"], "not-a-member"),
])
def test_seal_refuses_bad_recipient_lists(recipients, reason):
    with pytest.raises(EnvelopeError) as info:
        seal_(recipients)
    assert info.value.reason == reason


@pytest.mark.parametrize("created", ["now", -1, 1.5, True])
def test_seal_refuses_a_bad_created_time(created):
    with pytest.raises(EnvelopeError) as info:
        seal_(created=created)
    assert info.value.reason == "bad-envelope"


def test_seal_refuses_a_single_string_as_recipients():
    with pytest.raises(TypeError):
        seal(identity("alice"), "alice", ROSTER, "bob", HEADERS, "x", created=CREATED)


@pytest.mark.parametrize("sender, key_of", [("gone", "gone"), ("zoe", "zoe"), ("alice", "bob")])
def test_seal_refuses_a_sender_that_is_not_an_active_member(sender, key_of):
    with pytest.raises(EnvelopeError) as info:
        seal(identity(key_of), sender, ROSTER, ["bob"], HEADERS, "x", created=CREATED)
    assert info.value.reason == "not-a-member"


def test_seal_applies_the_network_policy():
    small = dataclasses.replace(ROSTER, policy=dataclasses.replace(
        DEFAULT_POLICY, max_recipients=2, max_attachments=1, max_attachment_bytes=100,
        max_message_bytes=2000))
    for kwargs in ({"recipients": ["bob", "carol", "dave"]},
                   {"manifest": [attachment("a"), attachment("b")]},
                   {"manifest": [attachment(size=101)]},
                   {"body": "x" * 2000}):
        with pytest.raises(EnvelopeError) as info:
            seal_(r=small, **kwargs)
        assert info.value.reason == "too-large"
    seal_(r=small, manifest=[attachment(size=100)], body="x" * 500)


def test_seal_refuses_an_expired_encryption_key():
    r = roster([member("alice"), member("bob", not_after=CREATED - 1)])
    with pytest.raises(EnvelopeError) as info:
        seal_(["bob"], r=r)
    assert info.value.reason == "expired-key"


@pytest.mark.parametrize("headers", [
    {"subject": "no type"},
    {"type": "request"},
    {"type": "order", "subject": "x"},
    {"type": "request", "subject": ""},
    {"type": "request", "subject": "x" * 301},
    {"type": "request", "subject": "line\nbreak"},
    {"type": "request", "subject": "\x1b[31mred"},
    {"type": "request", "subject": "evil\u202etxt.exe"},
    {"type": "request", "subject": "x", "priority": "high"},
    {"type": "request", "subject": "x", "priority": None},
    {"type": "request", "subject": "x", "reference": ""},
    {"type": "request", "subject": "x", "reference": 7},
    {"type": "request", "subject": "x", "deadline": -1},
    {"type": "request", "subject": "x", "deadline": True},
    {"type": "request", "subject": "x", "deadline": "tomorrow"},
    {"type": "request", "subject": "x", "in_reply_to": "not-an-id"},
    {"type": "request", "subject": "x", "language": "french!"},
    {"type": "reply", "subject": "x"},
    {"type": "receipt", "subject": "x"},
    {"type": "request", "subject": "x", "colour": "red"},
    ["type", "subject"],
])
def test_seal_refuses_bad_headers(headers):
    with pytest.raises(EnvelopeError) as info:
        seal_(headers=headers)
    assert info.value.reason == "bad-envelope"


def test_full_headers_are_kept():
    full = {"type": "reply", "subject": "Réponse", "reference": "R-1", "priority": "urgent",
            "legal_basis": "art. 10", "deadline": CREATED + 86_400,
            "in_reply_to": b64e(bytes(16)), "language": "pt-BR", "handling": "restricted"}
    assert normalise_headers(full) == full
    assert open_(seal_(headers=full)[0]).headers == full


@pytest.mark.parametrize("change", [
    {"name": "../../etc/passwd"}, {"name": ".."}, {"name": "a\\b"}, {"name": ""},
    {"name": "x\x00.pdf"}, {"media_type": "pdf"}, {"size": -1}, {"size": 1.5},
    {"blob": "has space"}, {"blob": "x" * 129}, {"key": b64e(bytes(31))},
    {"hash": "not b64!"}, {"ciphertext_size": 5}, {"extra": 1},
])
def test_seal_refuses_bad_manifest_entries(change):
    with pytest.raises(EnvelopeError) as info:
        seal_(manifest=[{**attachment(), **change}])
    assert info.value.reason == "bad-envelope"


def test_seal_refuses_duplicate_blobs():
    with pytest.raises(EnvelopeError):
        seal_(manifest=[attachment("b"), attachment("b")])


# -- opening: one test per refusal ---------------------------------------------

def resealed(payload_change=None, view_change=None, signer="alice", wrap_for=("bob", "carol"),
             plaintext=None):
    """Build an envelope around a modified payload, signed by ``signer`` (seal skipped)."""
    _, signed = seal_()
    payload = {**signed["payload"], **(payload_change or {})}
    signed = {"payload": payload, "sig": identity(signer).sign_b64("message", payload)}
    view = {**header_view(payload), **(view_change or {})}
    wrap_to = {h: (1, KEYS[h][1].public) for h in wrap_for}
    return env_mod._encrypt(view, plaintext or canonical(signed), wrap_to,
                            [e["blob"] for e in payload["manifest"]], bytes(32), bytes(24))


def test_open_refuses_a_non_recipient():
    refused("not-a-recipient", seal_()[0], "dave")


def test_open_refuses_a_message_forwarded_to_someone_else():
    envelope = resealed(view_change={"recipients": ["dave"]}, wrap_for=["dave"])
    refused("not-a-recipient", envelope, "dave")


@pytest.mark.parametrize("field, value", [
    ("id", b64e(b"\x01" * 16)), ("network", b64e(b"\x02" * 32)), ("sender", "carol"),
    ("created", CREATED + 1), ("recipients", ["bob", "carol", "dave"]),
])
def test_open_refuses_a_payload_that_differs_from_its_envelope(field, value):
    wrap_for = ["bob", "carol", "dave"] if field == "recipients" else ["bob", "carol"]
    refused("bad-envelope", resealed(view_change={field: value}, wrap_for=wrap_for))


def test_open_refuses_garbage_and_non_canonical_plaintexts():
    refused("bad-envelope", resealed(plaintext=b"not json"))
    refused("bad-envelope", resealed(plaintext=b'{"payload": 1, "sig": "x"}'))
    _, signed = seal_()
    spaced = canonical(signed).replace(b'{"payload":', b'{ "payload":', 1)
    refused("bad-envelope", resealed(plaintext=spaced))


def test_open_refuses_a_fork():
    forked = dataclasses.replace(ROSTER, head_hash=hashlib.sha256(b"other").digest())
    envelope, _ = seal_(r=forked)
    assert isinstance(refused("fork", envelope), ForkError)


def test_open_refuses_another_network():
    other = dataclasses.replace(ROSTER, genesis_hash=hashlib.sha256(b"other").digest())
    refused("bad-envelope", seal_(r=other)[0])


def test_open_refuses_an_unknown_sender():
    refused("unknown-sender", resealed({"sender": "mallory"}, signer="mallory"))


def test_open_refuses_a_removed_sender():
    refused("removed-member", resealed({"sender": "gone"}, signer="gone"))


def test_open_refuses_a_sender_removed_after_the_head_it_named():
    envelope, _ = seal_()
    later = roster([member("alice", removed_seq=4), *(member(h) for h in HANDLES[1:])], seq=4)
    refused("removed-member", envelope, latest=later)
    assert open_(envelope, latest=ROSTER).sender.handle == "alice"


def test_open_refuses_a_signature_by_another_key():
    refused("bad-signature", resealed(signer="mallory"))
    refused("bad-signature", resealed(signer="carol"))


def test_open_refuses_a_destroyed_key_version():
    refused("decryption-failed", seal_()[0], decryption_keys={2: KEYS["bob"][1]})


def test_wrap_info_bytes():
    assert env_mod._wrap_info("AAAA", "bob", "net", 2) == (
        b'comity/v1/wrap\x00{"id":"AAAA","key_version":2,"network":"net","recipient":"bob"}')


def test_a_wrap_made_for_another_message_recipient_or_version_is_refused():
    envelope = resealed()  # content key is 32 zero bytes
    eid, net = envelope["id"], envelope["network"]
    bob = KEYS["bob"][1].public
    for info_args in [(eid, "bob", net, 1),  # control: the right info opens
                      (b64e(b"\x09" * 16), "bob", net, 1), (eid, "carol", net, 1),
                      (eid, "bob", b64e(b"\x09" * 32), 1), (eid, "bob", net, 2)]:
        e = copy.deepcopy(envelope)
        e["wrapped"]["bob"]["sealed"] = b64e(bob.seal(bytes(32), env_mod._wrap_info(*info_args)))
        if info_args == (eid, "bob", net, 1):
            assert open_(e).sender.handle == "alice"
        else:
            refused("decryption-failed", e)


def test_open_lets_a_missing_roster_error_through():
    future = dataclasses.replace(ROSTER, seq=9)
    with pytest.raises(LogError):
        open_(seal_(r=future)[0])


# -- the relay's shape check ---------------------------------------------------

SHAPE_CHANGES = [
    ("extra field", lambda e: e.update(extra=1)),
    ("missing field", lambda e: e.pop("blobs")),
    ("version 2", lambda e: e.update(v=2)),
    ("version true", lambda e: e.update(v=True)),
    ("short id", lambda e: e.update(id=b64e(bytes(15)))),
    ("padded id", lambda e: e.update(id=e["id"] + "==")),
    ("bad sender", lambda e: e.update(sender="Alice")),
    ("unsorted recipients", lambda e: e.update(recipients=["carol", "bob"])),
    ("no recipients", lambda e: e.update(recipients=[], wrapped={})),
    ("float created", lambda e: e.update(created=1.5)),
    ("negative created", lambda e: e.update(created=-1)),
    ("short nonce", lambda e: e.update(nonce=b64e(bytes(12)))),
    ("empty ciphertext", lambda e: e.update(ciphertext="")),
    ("wrap missing", lambda e: e["wrapped"].pop("carol")),
    ("wrap extra", lambda e: e["wrapped"].update(dave=e["wrapped"]["bob"])),
    ("wrap version 0", lambda e: e["wrapped"]["bob"].update(key_version=0)),
    ("wrap short", lambda e: e["wrapped"]["bob"].update(sealed=b64e(bytes(100)))),
    ("wrap extra field", lambda e: e["wrapped"]["bob"].update(x=1)),
    ("blobs not a list", lambda e: e.update(blobs="b")),
    ("duplicate blobs", lambda e: e.update(blobs=["b", "b"])),
]


@pytest.mark.parametrize("change", [c for _, c in SHAPE_CHANGES],
                         ids=[n for n, _ in SHAPE_CHANGES])
def test_shape_check_refuses(change):
    envelope = copy.deepcopy(seal_()[0])
    change(envelope)
    with pytest.raises(EnvelopeError) as info:
        check_envelope_shape(envelope)
    assert info.value.reason == "bad-envelope"
    refused("bad-envelope", envelope)


def test_shape_check_applies_policy_limits():
    envelope, _ = seal_(["bob", "carol", "dave"], body="x" * 3000)
    check_envelope_shape(envelope)
    for change in ({"max_recipients": 2}, {"max_message_bytes": 1000}):
        with pytest.raises(EnvelopeError) as info:
            check_envelope_shape(envelope, dataclasses.replace(DEFAULT_POLICY, **change))
        assert info.value.reason == "too-large"
    with pytest.raises(EnvelopeError):
        check_envelope_shape("not an object")


# -- tampering: every bit ------------------------------------------------------

SMALL, _ = seal_(["bob"], headers={"type": "information", "subject": "s"}, body="")


def flipped(envelope, path, bit):
    e = copy.deepcopy(envelope)
    holder = e
    for key in path[:-1]:
        holder = holder[key]
    raw = bytearray(b64d(holder[path[-1]]))
    raw[bit // 8] ^= 1 << (bit % 8)
    holder[path[-1]] = b64e(bytes(raw))
    return e


@pytest.mark.parametrize("path", [("nonce",), ("ciphertext",), ("wrapped", "bob", "sealed")],
                         ids="/".join)
def test_every_single_bit_flip_is_rejected(path):
    holder = SMALL
    for key in path:
        holder = holder[key]
    bits = len(b64d(holder)) * 8
    assert bits > 0
    for bit in range(bits):
        with pytest.raises(DecryptionError):
            open_(flipped(SMALL, path, bit))


@pytest.mark.parametrize("field, value, reason", [
    ("v", 2, "bad-envelope"),
    ("id", b64e(b"\x07" * 16), "decryption-failed"),
    ("network", b64e(b"\x07" * 32), "decryption-failed"),
    ("sender", "carol", "decryption-failed"),
    ("created", CREATED - 1, "decryption-failed"),
    ("blobs", ["smuggled"], "bad-envelope"),
])
def test_every_header_change_is_rejected(field, value, reason):
    refused(reason, {**SMALL, field: value})


def test_relabelled_recipients_or_key_versions_are_rejected():
    e = copy.deepcopy(SMALL)
    e["recipients"] = ["bob", "carol"]
    e["wrapped"]["carol"] = e["wrapped"]["bob"]
    refused("decryption-failed", e)
    e = copy.deepcopy(SMALL)
    e["wrapped"]["bob"]["key_version"] = 2
    refused("decryption-failed", e, decryption_keys={1: KEYS["bob"][1], 2: KEYS["bob"][1]})


# -- property: round trip --------------------------------------------------------

_line = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Cf")), min_size=1, max_size=40)
_optional_line = st.none() | _line


@st.composite
def headers_strategy(draw):
    kind = draw(st.sampled_from(["request", "reply", "information", "receipt"]))
    headers = {"type": kind, "subject": draw(_line)}
    optional = {
        "priority": st.sampled_from(["routine", "urgent"]), "reference": _optional_line,
        "legal_basis": _optional_line, "handling": _optional_line,
        "deadline": st.none() | st.integers(0, 2**40),
        "language": st.none() | st.sampled_from(["en", "fr", "es", "pt-BR", "zh-Hant-TW"]),
        "in_reply_to": st.none() | st.binary(min_size=16, max_size=16).map(b64e),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            headers[name] = draw(strategy)
    if kind in ("reply", "receipt") and headers.get("in_reply_to") is None:
        headers["in_reply_to"] = b64e(draw(st.binary(min_size=16, max_size=16)))
    return headers


_entry = st.builds(
    lambda name, media, size, key, digest, extra: {
        "name": name, "media_type": media, "size": size, "blob": "",
        "key": b64e(key), "hash": b64e(digest), "ciphertext_size": size + extra},
    _line.filter(lambda s: s not in (".", "..") and "/" not in s and "\\" not in s),
    st.sampled_from(["application/pdf", "image/png", "text/plain", "application/vnd.ms-excel"]),
    st.integers(0, 2**36), st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32), st.integers(0, 10_000))


@given(body=st.text(max_size=300), headers=headers_strategy(),
       recipients=st.sets(st.sampled_from(HANDLES), min_size=1, max_size=5),
       manifest=st.lists(_entry, max_size=3))
def test_round_trip_property(body, headers, recipients, manifest):
    manifest = [{**e, "blob": f"blob-{i}"} for i, e in enumerate(manifest)]
    envelope, signed = seal_(sorted(recipients, reverse=True), headers=headers, body=body,
                             manifest=manifest)
    assert envelope["recipients"] == sorted(recipients)
    assert signed["payload"]["headers"] == normalise_headers(headers)
    check_envelope_shape(envelope, DEFAULT_POLICY)
    for handle in recipients:
        opened = open_(envelope, handle)
        assert opened.signed_payload == signed
        assert opened.body == body and opened.manifest == manifest
    outsider = next((h for h in HANDLES if h not in recipients), None)
    if outsider:
        refused("not-a-recipient", envelope, outsider)


def test_message_ids_never_start_with_a_dash_or_underscore():
    # Ids are typed as command-line arguments, where "-x..." would read as an option.
    from keys.envelope import new_message_id
    assert all(b64e(new_message_id())[0].isalnum() for _ in range(2000))


# -- a recipient whose log is newer than the sender's head (steps 14-16) -------------------------

_gen_spec = importlib.util.spec_from_file_location("log_vectors", VECTORS_DIR / "log" / "generate.py")
loggen = importlib.util.module_from_spec(_gen_spec)
_gen_spec.loader.exec_module(loggen)
RELAY = IdentityKey.from_seed(hashlib.sha256(b"envelope test relay").digest())


class NewerLog:
    """A real membership log (alice admin, bob, carol) the test extends after sealing."""

    def __init__(self):
        self.s = loggen.Scenario()
        self.s.add("bob")
        self.s.add("carol")
        self.bob_keys = {1: self.encryption("bob", 1)}
        self.alice_key = self.s.keys["alice"]

    def encryption(self, handle, version):
        # the private key Scenario derived for this handle, identity and version
        return loggen.encryption(f"{handle}#{self.s.keys[handle].public.b64()}#{version}")

    def verifier(self):
        v = LogVerifier(self.s.genesis_hash)
        v.extend(self.s.entries)
        return v

    def seal(self, *, head=None, created=None, signer=None, wrap_version=None):
        """alice -> bob, carol against the roster at ``head`` (default: now)."""
        v = self.verifier()
        r = v.roster_at(v.seq if head is None else head)
        envelope, signed = seal(signer or self.s.keys["alice"], "alice", r, ["bob", "carol"],
                                HEADERS, "Bonjour", created=created or self.s.time)
        return envelope

    def open(self, envelope, *, acceptance=None, now=None, opener="bob"):
        v = self.verifier()
        return env_mod.open(envelope, recipient_handle=opener, decryption_keys=self.bob_keys,
                            roster_at=v.roster_at, latest=v.roster, acceptance=acceptance,
                            relay_key=RELAY.public, now=now)

    def refused(self, reason, envelope, **kw):
        with pytest.raises(EnvelopeError) as info:
            self.open(envelope, **kw)
        assert info.value.reason == reason, info.value
        return info.value

    def accepted(self, envelope, *, time, log_seq, key=RELAY, **changes):
        fields = dict(network=envelope["network"], message_id=envelope["id"],
                      envelope_hash=envelope_hash(envelope), sender="alice", time=time,
                      recipients=envelope["recipients"], log_seq=log_seq)
        return make_relay_receipt(key, "submission-accepted", **{**fields, **changes})


def test_a_signature_by_a_replaced_identity_key_needs_the_relays_acceptance_before_it():
    log = NewerLog()
    old = log.s.keys["alice"]
    sent_at = log.s.time
    envelope = log.seal(signer=old, created=sent_at)             # head 2, alice's key then
    rotated = log.s.rotate_identity("alice")                      # entry 3: the key is replaced
    log.refused("superseded-key", envelope)                       # no acceptance at all
    ok = log.accepted(envelope, time=sent_at, log_seq=2)
    assert log.open(envelope, acceptance=ok).acceptance == ok     # accepted before entry 3
    assert log.open(envelope, acceptance=ok, now=sent_at + DAY).sender.handle == "alice"
    for bad in (log.accepted(envelope, time=sent_at, log_seq=3),         # the relay had entry 3
                log.accepted(envelope, time=rotated["time"] + CLOCK_SKEW + 1, log_seq=2),
                log.accepted(envelope, time=sent_at, log_seq=2, key=IdentityKey.generate()),
                log.accepted(envelope, time=sent_at, log_seq=2, message_id="A" * 22),
                log.accepted(envelope, time=sent_at, log_seq=2, envelope_hash=bytes(32)),
                {k: v for k, v in ok.items() if k != "log_seq"}):
        log.refused("superseded-key", envelope, acceptance=bad)
    # An honest relay keeps an envelope for the retention period, not longer.
    retention = log.verifier().roster.policy.retention
    log.refused("superseded-key", envelope, acceptance=ok,
                now=sent_at + retention + CLOCK_SKEW + 1)


def test_a_sender_removed_after_its_head_counts_only_if_accepted_before():
    log = NewerLog()
    envelope = log.seal(created=log.s.time)
    log.s.add("dave", role="admin")                          # 3: another admin removes alice
    log.s.remove("alice", by="dave")                         # 4
    log.refused("removed-member", envelope)
    log.refused("removed-member", envelope, acceptance=log.accepted(envelope, time=log.s.time,
                                                                     log_seq=4))
    before = log.accepted(envelope, time=log.s.time - 2 * 60, log_seq=2)
    assert log.open(envelope, acceptance=before).sender.handle == "alice"


def test_content_wrapped_to_a_retired_key_opens_only_inside_the_window():
    log = NewerLog()
    head = log.verifier().seq
    rotation = log.s.rotate_encryption("bob")                 # 3: bob's key version 2
    log.bob_keys[2] = log.encryption("bob", 2)
    t_r = rotation["time"]
    # Sealed before the rotation entry (a legitimate race): opens, nothing to report.
    early = log.open(log.seal(head=head, created=t_r - 60))
    assert early.key_version == 1 and early.stale == ()
    # Sealed against the old head after the rotation, inside the window: opens, reported.
    inside = log.open(log.seal(head=head, created=t_r + ROTATION_WINDOW))
    assert [c.as_json() for c in inside.stale] == [
        {"seq": 3, "time": t_r, "handle": "bob", "change": "encryption-key"}]
    # Past the window by the sender's clock, or by the relay's acceptance: refused.
    late = log.seal(head=head, created=t_r + ROTATION_WINDOW + 1)
    log.refused("retired-key", late)
    held = log.seal(head=head, created=t_r + 60)
    log.refused("retired-key", held, acceptance=log.accepted(
        held, time=t_r + ROTATION_WINDOW + 1, log_seq=3))
    # A head at or after the rotation and still the old key: no honest sealer does that.
    log.s.set_policy(retention=40 * DAY)                       # 4: the log moves on
    log.refused("retired-key", _wrapped_to_version_1(log, head=3))
    # The current key opens whatever the head.
    assert log.open(log.seal(created=log.s.time)).key_version == 2


def test_a_recipient_removed_before_sealing_is_reported_not_refused():
    log = NewerLog()
    head = log.verifier().seq
    removal = log.s.remove("carol")                            # 3
    later = log.open(log.seal(head=head, created=removal["time"] + 30))
    assert [(c.seq, c.handle, c.what) for c in later.stale] == [(3, "carol", "removed")]
    before = log.open(log.seal(head=head, created=removal["time"] - 30))
    assert before.stale == ()
    # The relay's acceptance says it had the entry: reported even if the clocks say otherwise.
    envelope = log.seal(head=head, created=removal["time"] - 30)
    seen = log.open(envelope, acceptance=log.accepted(envelope, time=removal["time"] - 30,
                                                      log_seq=3))
    assert [c.handle for c in seen.stale] == ["carol"]


def _wrapped_to_version_1(log, *, head):
    """alice's message whose payload names ``head`` but is wrapped to bob's version 1."""
    v = log.verifier()
    r = v.roster_at(head)
    payload = {"v": 1, "id": b64e(b"\x07" * 16), "network": b64e(r.genesis_hash),
               "sender": "alice", "recipients": ["bob", "carol"], "created": log.s.time,
               "roster_head": r.head(), "headers": normalise_headers(HEADERS), "body": "x",
               "manifest": []}
    signed = {"payload": payload, "sig": log.s.keys["alice"].sign_b64("message", payload)}
    wrap_to = {"bob": (1, log.bob_keys[1].public), "carol": (1, log.encryption("carol", 1).public)}
    return env_mod._encrypt(header_view(payload), canonical(signed), wrap_to, [], bytes(32),
                            bytes(24))
