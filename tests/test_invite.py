"""Invite codes, invite ids and the enrollment MAC (keys.invite)."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

import keys.invite as invite_module
from keys.encoding import b64d, b64e, canonical
from keys.errors import InviteError
from keys.hpke import EncryptionKey, make_key_record
from keys.identity import IdentityKey
from keys.invite import (MISTYPED, Invite, check_enrollment_request, check_relay_url,
                         enrollment_mac, invite_id, make_enrollment_request,
                         verify_enrollment_mac, verify_enrollment_request)

from .conftest import VECTORS, load_vectors

CODES = load_vectors("invite/codes.json")
ENROLL = load_vectors("invite/enrollment.json")
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _decoded(inv: Invite) -> dict:
    return {"relay_url": inv.relay_url, "relay_fingerprint": inv.relay_fingerprint.hex(),
            "network": inv.network, "network_hash": b64e(inv.network_hash),
            "handle": inv.handle, "role": inv.role, "secret": b64e(inv.secret),
            "invite_id": b64e(inv.invite_id)}


@pytest.mark.parametrize("case", CODES["cases"], ids=lambda c: c["description"])
def test_code_vectors(case):
    if case["expect"] != "success":
        with pytest.raises(InviteError) as info:
            Invite.from_code(case["code"])
        assert info.value.reason == case["expect"]
        if case["expect"] == "mistyped":
            assert str(info.value) == MISTYPED
        return
    inv = Invite.from_code(case["code"])
    assert _decoded(inv) == case["decoded"]
    assert inv.to_code() == "".join(case["code"].split())
    assert inv.to_code().startswith("comity-invite-1.")


@pytest.mark.parametrize("case", ENROLL["cases"], ids=lambda c: c["description"])
def test_enrollment_vectors(case):
    inv = Invite.from_code(ENROLL["invite_code"])
    if case["expect"] == "success":
        identity, encryption = verify_enrollment_request(case["request"], inv)
        assert identity.b64() == case["request"]["identity_key"]
        assert encryption.b64() == case["request"]["encryption_key"]["public_key"]
        return
    with pytest.raises(InviteError) as info:
        verify_enrollment_request(case["request"], inv)
    assert info.value.reason == case["expect"]


def test_enrollment_mac_vector_derivation():
    inv = Invite.from_code(ENROLL["invite_code"])
    assert _decoded(inv) == ENROLL["decoded"]
    good = ENROLL["cases"][0]["request"]
    # invite_id and the MAC key come from the same secret under unrelated labels.
    assert b64e(hashlib.sha256(b"comity/v1/invite-id\x00" + inv.secret).digest()) == \
        good["invite_id"] == ENROLL["decoded"]["invite_id"]
    assert ENROLL["mac_key_hex"] != b64d(good["invite_id"]).hex()
    message = canonical({"network": good["network"], "handle": good["handle"],
                         "identity_key": good["identity_key"],
                         "encryption_key": good["encryption_key"]})
    assert message.decode() == ENROLL["mac_input"]
    expected = hmac.new(bytes.fromhex(ENROLL["mac_key_hex"]), message, hashlib.sha256).digest()
    assert b64e(expected) == ENROLL["mac"] == good["mac"]
    assert enrollment_mac(inv.secret, inv.network_hash, inv.handle, good["identity_key"],
                          good["encryption_key"]) == expected
    enrollee = IdentityKey.from_seed(bytes.fromhex(ENROLL["enrollee_identity_seed"]))
    assert make_enrollment_request(inv, enrollee, good["encryption_key"]) == good


@pytest.mark.parametrize("relative", ["codes.json", "enrollment.json"])
def test_generator_is_deterministic(tmp_path, relative):
    script = VECTORS / "invite" / "generate.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True)
    assert (tmp_path / relative).read_bytes() == (VECTORS / "invite" / relative).read_bytes()


# -- invites -------------------------------------------------------------------------

def _invite(**changes) -> Invite:
    fields = dict(relay_url="https://relay.example.org/comity", relay_fingerprint=b"\x07" * 20,
                  network="iberred", network_hash=b"\x08" * 32, handle="ana.fiscalia",
                  role="member", secret=b"\x09" * 32)
    fields.update(changes)
    return Invite(**fields)


def test_create_draws_a_fresh_secret_and_round_trips():
    a = Invite.create(relay_url="https://r.example", relay_fingerprint=b"\x01" * 20,
                      network="refco", network_hash=b"\x02" * 32, handle="luis.mp", role="admin")
    b = Invite.create(relay_url="https://r.example", relay_fingerprint=b"\x01" * 20,
                      network="refco", network_hash=b"\x02" * 32, handle="luis.mp", role="admin")
    assert a.secret != b.secret and len(a.secret) == 32
    assert Invite.from_code(a.to_code()) == a
    code = a.to_code()
    assert " " not in code and all(c in B64URL + ".-" for c in code[len("comity-invite-1."):])


def test_secret_never_in_repr_str_or_errors():
    inv = _invite(secret=bytes(range(32)))
    text = repr(inv) + str(inv)
    for shown in (inv.secret.hex(), b64e(inv.secret), repr(inv.secret)[2:-1]):
        assert shown not in text
    assert "ana.fiscalia" in text and "0707 0707" in text
    code = inv.to_code()
    for broken in (code[:-3], code[:40] + "+" + code[41:], "comity-invite-9." + code[16:]):
        with pytest.raises(InviteError) as info:
            Invite.from_code(broken)
        assert code[16:40] not in str(info.value)


@pytest.mark.parametrize("url", [
    "https://relay.example", "http://127.0.0.1:8787", "https://[::1]:8443/x",
    "https://relay.example/comity/v1/",
])
def test_good_relay_urls(url):
    assert check_relay_url(url) == url
    assert Invite.from_code(_invite(relay_url=url).to_code()).relay_url == url


@pytest.mark.parametrize("url", [
    "", "relay.example", "ftp://relay.example", "HTTPS://relay.example", "https://",
    "https:///path", "https://user:pw@relay.example", "https://user@relay.example",
    "https://relay.example:99999", "https://relay.example:port", "https://relay.example/?q=1",
    "https://relay.example/#top", "https://relay example", "https://tribunal.é",
    "javascript:alert(1)", "https://relay.example/" + "a" * 255, "https://relay.ex\\ample",
    None, 7,
])
def test_bad_relay_urls(url):
    with pytest.raises(InviteError) as info:
        _invite(relay_url=url)
    assert info.value.reason == "bad-field"


@pytest.mark.parametrize("changes", [
    {"handle": "Ana"}, {"handle": "ab"}, {"handle": "ana.fiscalia\n"}, {"handle": "-ana"},
    {"role": "owner"}, {"role": "Admin"}, {"network": "Iber Red"}, {"network": "x"},
    {"relay_fingerprint": b"\x07" * 32}, {"network_hash": b"\x08" * 20},
    {"secret": b"\x09" * 16}, {"secret": "9" * 32},
])
def test_bad_invite_fields(changes):
    with pytest.raises(InviteError) as info:
        _invite(**changes)
    assert info.value.reason == "bad-field"


def test_not_text_is_refused():
    with pytest.raises(InviteError) as info:
        Invite.from_code(_invite().to_code().encode())
    assert info.value.reason == "bad-encoding"


def _every_single_substitution(code: str):
    others = B64URL + ".=+/ \t\u00e9\u200b0"
    for i, original in enumerate(code):
        for c in others:
            if c != original:
                yield code[:i] + c + code[i + 1:]


def test_every_single_character_substitution_is_refused():
    """Exhaustive over one code: each position, each base64url letter and a few others."""
    code = CODES["cases"][0]["code"]
    for changed in _every_single_substitution(code):
        with pytest.raises(InviteError):
            Invite.from_code(changed)


handles = st.from_regex(r"[a-z0-9][a-z0-9.-]{1,30}[a-z0-9]", fullmatch=True)


@given(handle=handles, network=handles, role=st.sampled_from(["admin", "member"]),
       secret=st.binary(min_size=32, max_size=32), fp=st.binary(min_size=20, max_size=20),
       path=st.from_regex(r"(/[a-z0-9]{0,20}){0,3}", fullmatch=True), data=st.data())
def test_any_single_character_change_is_refused(handle, network, role, secret, fp, path, data):
    inv = Invite(f"https://relay.example{path}", fp, network, b"\x05" * 32, handle, role, secret)
    code = inv.to_code()
    assert Invite.from_code(code) == inv
    i = data.draw(st.integers(0, len(code) - 1), label="position")
    c = data.draw(st.characters(codec="utf-8").filter(lambda ch: ch != code[i]), label="char")
    # strict base64url (keys.encoding.b64d) gives every byte string one spelling, so even a
    # change confined to the last character's unused bits is refused, not silently accepted
    with pytest.raises(InviteError):
        Invite.from_code(code[:i] + c + code[i + 1:])


# -- enrollment ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def enrollee():
    identity = IdentityKey.from_seed(b"\x11" * 32)
    record = make_key_record(identity, EncryptionKey(b"\x12" * 96).public, version=1,
                             created=1000, not_after=2000)
    return identity, record


def test_request_round_trip_and_relay_side_check(enrollee):
    identity, record = enrollee
    inv = _invite()
    request = make_enrollment_request(inv, identity, record)
    assert set(request) == {"invite_id", "network", "handle", "identity_key", "encryption_key",
                            "mac"}
    assert check_enrollment_request(request) is request            # what the relay can check
    assert request["invite_id"] == b64e(invite_id(inv.secret))
    got_identity, got_encryption = verify_enrollment_request(request, inv)
    assert got_identity == identity.public
    with pytest.raises(InviteError) as info:
        verify_enrollment_request(request, _invite(secret=b"\x0a" * 32))
    assert info.value.reason == "wrong-invite"


def test_mac_binds_every_input(enrollee):
    identity, record = enrollee
    args = dict(secret=b"\x09" * 32, network_hash=b"\x08" * 32, handle="ana.fiscalia",
                identity_key_b64=identity.public.b64(), encryption_key_record=record)
    mac = enrollment_mac(**args)
    verify_enrollment_mac(**args, mac=mac)
    for name, other in [("secret", b"\x0a" * 32), ("network_hash", b"\x00" * 32),
                        ("handle", "ana.fiscalia2"), ("identity_key_b64", b64e(b"\x00" * 32)),
                        ("encryption_key_record", {**record, "version": 2})]:
        with pytest.raises(InviteError) as info:
            verify_enrollment_mac(**{**args, name: other}, mac=mac)
        assert info.value.reason == "bad-mac", name
    with pytest.raises(InviteError):
        verify_enrollment_mac(**args, mac=mac[:31])
    with pytest.raises(InviteError):
        verify_enrollment_mac(**args, mac=b64e(mac))             # text is not a MAC


def test_mac_is_compared_in_constant_time(enrollee, monkeypatch):
    identity, record = enrollee
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(invite_module.hmac, "compare_digest",
                        lambda a, b: calls.append((a, b)) or real(a, b))
    args = (b"\x09" * 32, b"\x08" * 32, "ana.fiscalia", identity.public.b64(), record)
    verify_enrollment_mac(*args, enrollment_mac(*args))
    assert len(calls) == 1 and len(calls[0][0]) == 32


def test_mac_key_is_not_the_invite_id(enrollee):
    """The relay knows invite_id; a MAC keyed with it must not verify."""
    identity, record = enrollee
    secret = b"\x09" * 32
    args = (b"\x08" * 32, "ana.fiscalia", identity.public.b64(), record)
    forged = hmac.new(invite_id(secret), canonical({
        "network": b64e(args[0]), "handle": args[1], "identity_key": args[2],
        "encryption_key": args[3]}), hashlib.sha256).digest()
    with pytest.raises(InviteError):
        verify_enrollment_mac(secret, *args, forged)


def test_enrollee_cannot_send_a_key_record_it_did_not_sign(enrollee):
    _, record = enrollee
    with pytest.raises(InviteError) as info:
        make_enrollment_request(_invite(), IdentityKey.from_seed(b"\x13" * 32), record)
    assert info.value.reason == "bad-key-record"


@pytest.mark.parametrize("secret", [b"", b"\x00" * 31, "x" * 32, None])
def test_bad_secrets(secret):
    with pytest.raises(InviteError):
        invite_id(secret)
