"""Write tests/vectors/invite/{codes,enrollment}.json.

Fixed secrets and seeds (no os.urandom), deterministic Ed25519 and ML-KEM key
derivation from seeds: byte-identical on every run. Each case declares what
must happen: ``"expect": "success"`` or the ``reason`` of the InviteError.

    python tests/vectors/invite/generate.py [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from keys.encoding import b64e  # noqa: E402
from keys.hpke import EncryptionKey, make_key_record  # noqa: E402
from keys.identity import IdentityKey  # noqa: E402
from keys.invite import (Invite, _mac_input, _mac_key, _seal, _str8,  # noqa: E402
                         enrollment_mac, invite_id)

T0 = 1767225600  # 2026-01-01T00:00:00Z


def seed(label: str, size: int = 32) -> bytes:
    out = b""
    while len(out) < size:
        out += hashlib.sha256(b"comity test seed " + label.encode() + bytes([len(out)])).digest()
    return out[:size]


RELAY = IdentityKey.from_seed(seed("relay"))
NETWORK_HASH = hashlib.sha256(b"comity test genesis entry").digest()


def invite(handle: str, role: str, url: str, label: str) -> Invite:
    return Invite(url, RELAY.public.fingerprint(), "ejn-pilot", NETWORK_HASH, handle, role,
                  seed("invite secret " + label))


def decoded(inv: Invite) -> dict:
    return {"relay_url": inv.relay_url, "relay_fingerprint": inv.relay_fingerprint.hex(),
            "network": inv.network, "network_hash": b64e(inv.network_hash),
            "handle": inv.handle, "role": inv.role, "secret": b64e(inv.secret),
            "invite_id": b64e(inv.invite_id)}


def raw_code(inv: Invite, **override) -> str:
    """A code with a valid checksum over fields the encoder itself would refuse."""
    f = {"url": inv.relay_url, "network": inv.network, "handle": inv.handle, "role": inv.role}
    f.update(override)
    extra = f.pop("extra", b"")
    body = inv.relay_fingerprint + inv.network_hash + inv.secret + b"".join(
        _str8(f[k]) for k in ("url", "network", "handle", "role")) + extra
    return _seal(body[:f.pop("cut")] if "cut" in f else body)


def code_cases() -> list[dict]:
    maria = invite("maria.lopez", "member", "https://relay.ejn.example:8443/comity", "maria")
    admin = invite("sg.admin", "admin", "http://127.0.0.1:8787", "admin")
    ipv6 = invite("jean-paul.coi", "member", "https://[2001:db8::7]/", "ipv6")
    code = maria.to_code()
    text = code[len("comity-invite-1."):]
    mid = len(code) // 2
    swap = code[:mid] + ("B" if code[mid] != "B" else "C") + code[mid + 1:]
    # With len % 4 in (2, 3) the last character carries 4 or 2 unused bits, all zero in the
    # canonical spelling; the next letter of the alphabet sets the lowest one.
    assert len(text) % 4 in (2, 3)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    noncanon = code[:-1] + alphabet[alphabet.index(code[-1]) + 1]
    cut_to_bad_length = (len(text) - 1) % 4 or 4   # leaves len % 4 == 1: never base64
    c = []

    def case(description, text_, expect, inv=None):
        c.append({"description": description, "code": text_, "expect": expect,
                  **({"decoded": decoded(inv)} if inv else {})})

    case("member invite, https relay with port and path", code, "success", maria)
    case("admin invite, local http relay", admin.to_code(), "success", admin)
    case("member invite, relay on an IPv6 literal", ipv6.to_code(), "success", ipv6)
    case("code wrapped over lines by a mail client", " " + code[:70] + "\r\n  " + code[70:140]
         + "\n" + code[140:] + "\n", "success", maria)
    case("one character changed", swap, "mistyped")
    case("two neighbouring characters swapped",
         code[:mid] + code[mid + 1] + code[mid] + code[mid + 2:], "mistyped")
    case("truncated by 4 characters", code[:-4], "mistyped")
    case("truncated by 1 character", code[:-1], "mistyped")
    case("truncated to a length base64 cannot have", code[:-cut_to_bad_length], "mistyped")
    case("nothing after the prefix", "comity-invite-1.", "mistyped")
    case("last character spelled non-canonically (unused bits set)", noncanon, "mistyped")
    case("prefix misspelt", "comity-invit-1." + text, "wrong-prefix")
    case("prefix in capitals", "COMITY-INVITE-1." + text, "wrong-prefix")
    case("not an invite at all", "https://relay.ejn.example/", "wrong-prefix")
    case("version that is not a number", "comity-invite-v1." + text, "wrong-prefix")
    case("newer invite format", "comity-invite-2." + text, "unsupported-version")
    case("standard base64 '+' in place of '-'", code[:mid] + "+" + code[mid + 1:],
         "bad-encoding")
    case("padding appended", code + "==", "bad-encoding")
    case("valid checksum, handle in capitals", raw_code(maria, handle="Maria.Lopez"),
         "bad-field")
    case("valid checksum, unknown role", raw_code(maria, role="owner"), "bad-field")
    case("valid checksum, ftp relay URL", raw_code(maria, url="ftp://relay.ejn.example/"),
         "bad-field")
    case("valid checksum, relay URL with a password",
         raw_code(maria, url="https://u:p@relay.ejn.example/"), "bad-field")
    case("valid checksum, relay URL without host", raw_code(maria, url="https:///comity"),
         "bad-field")
    case("valid checksum, relay URL with a query",
         raw_code(maria, url="https://relay.ejn.example/?a=1"), "bad-field")
    case("valid checksum, trailing bytes", raw_code(maria, extra=b"\x00"), "bad-field")
    case("valid checksum, fields cut short", raw_code(maria, cut=100), "bad-field")
    case("valid checksum, network name not UTF-8",
         _seal(maria.relay_fingerprint + maria.network_hash + maria.secret
               + _str8(maria.relay_url) + b"\x02\xff\xfe" + _str8("maria.lopez")
               + _str8("member")), "bad-field")
    return c


def enrollment_doc() -> dict:
    inv = invite("maria.lopez", "member", "https://relay.ejn.example:8443/comity", "maria")
    me = IdentityKey.from_seed(seed("maria identity"))
    enc = EncryptionKey(seed("maria encryption", 96))
    record = make_key_record(me, enc.public, version=1, created=T0, not_after=T0 + 90 * 86400)
    # What a relay would substitute: its own, self-consistent keys.
    evil = IdentityKey.from_seed(seed("relay-made identity"))
    evil_enc = EncryptionKey(seed("relay-made encryption", 96))
    evil_record = make_key_record(evil, evil_enc.public, version=1, created=T0,
                                  not_after=T0 + 90 * 86400)
    mine_evil_record = make_key_record(me, evil_enc.public, version=1, created=T0,
                                       not_after=T0 + 90 * 86400)
    stranger_record = make_key_record(evil, enc.public, version=1, created=T0,
                                      not_after=T0 + 90 * 86400)
    mac = enrollment_mac(inv.secret, inv.network_hash, inv.handle, me.public.b64(), record)
    good = {"invite_id": b64e(inv.invite_id), "network": b64e(inv.network_hash),
            "handle": inv.handle, "identity_key": me.public.b64(), "encryption_key": record,
            "mac": b64e(mac)}
    relay_mac = hmac.new(invite_id(inv.secret), _mac_input(
        inv.network_hash, inv.handle, evil.public.b64(), evil_record), hashlib.sha256).digest()
    mac_stranger = enrollment_mac(inv.secret, inv.network_hash, inv.handle, me.public.b64(),
                                  stranger_record)
    cases = []

    def case(description, request, expect):
        cases.append({"description": description, "request": request, "expect": expect})

    case("request made with the invite's secret", good, "success")
    case("relay substitutes identity and encryption keys, keeps the MAC",
         good | {"identity_key": evil.public.b64(), "encryption_key": evil_record}, "bad-mac")
    case("relay substitutes only the encryption key record",
         good | {"encryption_key": mine_evil_record}, "bad-mac")
    case("relay substitutes keys and MACs them under the invite id it knows",
         good | {"identity_key": evil.public.b64(), "encryption_key": evil_record,
                 "mac": b64e(relay_mac)}, "bad-mac")
    case("MAC flipped in one bit", good | {"mac": b64e(bytes([mac[0] ^ 1]) + mac[1:])},
         "bad-mac")
    case("answers another invite", good | {"invite_id": b64e(invite_id(seed("other")))},
         "wrong-invite")
    case("for another network", good | {"network": b64e(bytes(32))}, "wrong-network")
    case("for another handle", good | {"handle": "mario.lopez"}, "wrong-handle")
    case("MAC valid but the key record is signed by another identity",
         good | {"encryption_key": stranger_record, "mac": b64e(mac_stranger)},
         "bad-key-record")
    case("unknown field", good | {"display_name": "Maria"}, "bad-request")
    case("MAC missing", {k: v for k, v in good.items() if k != "mac"}, "bad-request")
    case("MAC of the wrong length", good | {"mac": b64e(mac[:16])}, "bad-request")
    case("identity key not base64url", good | {"identity_key": "not a key"}, "bad-request")
    return {"invite_code": inv.to_code(), "decoded": decoded(inv),
            "enrollee_identity_seed": seed("maria identity").hex(),
            "mac_key_hex": _mac_key(inv.secret).hex(),
            "mac_input": _mac_input(inv.network_hash, inv.handle, me.public.b64(),
                                    record).decode("utf-8"),
            "mac": b64e(mac), "cases": cases}


def write(path: pathlib.Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=True) + "\n",
                    encoding="utf-8")


def main(out: pathlib.Path = HERE) -> None:
    origin = "generated by tests/vectors/invite/generate.py (keys.invite, fixed secrets)"
    write(out / "codes.json", {"origin": origin, "cases": code_cases()})
    write(out / "enrollment.json", {"origin": origin, **enrollment_doc()})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=HERE)
    main(parser.parse_args().out)
