"""Write tests/vectors/envelope/open.json: envelopes to open, and what must happen.

Every key comes from a fixed seed, and every message id, content key and AEAD
nonce is fixed, so the signed payloads, nonces and ciphertexts are the same on
every run. The wrapped keys are not: HPKE draws a fresh ephemeral key inside
pyca/cryptography on every seal, and the library offers no way to fix it. So,
unlike the other generators, this one writes the file once and refuses to
overwrite it (``--force`` regenerates, with new wrapped keys); the test then
checks that (1) re-sealing from the recorded inputs reproduces every
deterministic field, and (2) opening each stored envelope succeeds or fails
exactly as its ``expect`` says.

    python tests/vectors/envelope/generate.py [--force]
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from keys.encoding import b64d, b64e, canonical  # noqa: E402
from keys.envelope import _encrypt, _seal_from_parts, header_view  # noqa: E402
from tests.envelope_support import (identity, key_spec, member, roster,  # noqa: E402
                                    roster_spec, seed)

OUT = HERE / "open.json"
CREATED = 1_767_225_600  # 2026-01-01T00:00:00Z
HEADERS = {
    "type": "request", "subject": "Commission rogatoire 2026/114 — audition de témoin",
    "reference": "PR-2026-114", "priority": "urgent",
    "legal_basis": "Convention du 29 mai 2000, art. 10", "deadline": 1_769_904_000,
    "language": "fr", "handling": "restricted",
}
BODY = "Madame, Monsieur,\n\nNous sollicitons l'audition du témoin désigné ci-après.\n"
MANIFEST = [{
    "name": "demande-114.pdf", "media_type": "application/pdf", "size": 48_213,
    "blob": "Ejz7mC3xD0YgM2aQ1yq3bA", "key": b64e(seed("attachment key")),
    "hash": b64e(hashlib.sha256(b"attachment ciphertext").digest()),
    "ciphertext_size": 48_213 + 24 + 17,
}]

HANDLES = ["alice", "bob", "carol", "dave", "erin", "mallory"]
R3 = roster([member("alice", role="admin"), member("bob"), member("carol"), member("dave"),
             member("erin", added_seq=2)], seq=3)
R4 = roster([*(m for h, m in R3.members.items() if h != "bob"),
             member("bob", key_version=2)], seq=4)          # bob rotated his key at seq 4
R5 = roster([*(m for h, m in R4.members.items() if h != "erin"),
             member("erin", added_seq=2, removed_seq=5)], seq=5)  # erin removed at seq 5
ROSTERS = {r.seq: r for r in (R3, R4, R5)}


def sealed(label: str, *, sender: str = "alice", recipients=("bob", "carol"), seq: int = 4,
           at=None):
    inputs = {
        "sender": sender, "roster_seq": seq, "recipients": list(recipients),
        "headers": HEADERS, "body": BODY, "manifest": MANIFEST, "created": CREATED,
        "message_id": b64e(seed(f"{label} id", 16)), "content_key": b64e(seed(f"{label} key")),
        "nonce": b64e(seed(f"{label} nonce", 24)),
    }
    envelope, signed = _seal_from_parts(
        identity(sender), sender, at or ROSTERS[seq], list(recipients), HEADERS, BODY, MANIFEST,
        created=CREATED, message_id=b64d(inputs["message_id"]),
        content_key=b64d(inputs["content_key"]), nonce=b64d(inputs["nonce"]))
    return envelope, signed, inputs


def crafted(label: str, payload: dict, *, signer: str, view: dict | None = None,
            wrap_for=("bob", "carol"), seq: int = 4) -> dict:
    """An envelope built around an arbitrary payload, skipping seal's checks."""
    signed = {"payload": payload, "sig": identity(signer).sign_b64("message", payload)}
    wrap_to = {h: (ROSTERS[seq].members[h].encryption_key_version,
                   ROSTERS[seq].members[h].encryption_key) for h in wrap_for}
    return _encrypt(view or header_view(payload), canonical(signed), wrap_to,
                    [e["blob"] for e in payload["manifest"]], seed(f"{label} key"),
                    seed(f"{label} nonce", 24))


def flip(text: str, bit: int) -> str:
    raw = bytearray(b64d(text))
    raw[bit // 8] ^= 1 << (bit % 8)
    return b64e(bytes(raw))


def case(description, envelope, expect, opener="bob", versions=(1, 2), **extra):
    return {"description": description, "envelope": envelope, "expect": expect,
            "opener": opener, "decryption_key_versions": list(versions), **extra}


def main() -> None:
    if OUT.exists() and "--force" not in sys.argv[1:]:
        sys.exit(f"{OUT.name} exists; its HPKE wraps are random, so it is written once "
                 "(--force to regenerate)")
    env, signed, inputs = sealed("base")
    payload = signed["payload"]
    old_env, old_signed, old_inputs = sealed("old-key", seq=3)
    cases = [
        case("alice to bob and carol, opened by bob (key v2)", env, "success",
             signed_payload=signed, seal=inputs),
        case("the same message opened by carol", env, "success", opener="carol",
             versions=[1], signed_payload=signed, seal=inputs),
        case("sealed at seq 3 to bob's key v1, opened after he rotated to v2", old_env,
             "success", signed_payload=old_signed, seal=old_inputs),
        case("bob destroyed key v1 after the grace period", old_env, "decryption-failed",
             versions=[2]),
    ]
    tampered = copy.deepcopy(env)
    tampered["ciphertext"] = flip(env["ciphertext"], 100)
    cases.append(case("one ciphertext bit flipped", tampered, "decryption-failed"))
    tampered = copy.deepcopy(env)
    tampered["nonce"] = flip(env["nonce"], 7)
    cases.append(case("one nonce bit flipped", tampered, "decryption-failed"))
    tampered = copy.deepcopy(env)
    tampered["created"] += 1
    cases.append(case("the relay changed the created time", tampered, "decryption-failed"))
    tampered = copy.deepcopy(env)
    tampered["recipients"] = ["bob"]
    del tampered["wrapped"]["carol"]
    cases.append(case("the relay dropped carol from the recipients", tampered,
                      "decryption-failed"))
    tampered = copy.deepcopy(env)
    tampered["wrapped"]["bob"]["sealed"] = flip(env["wrapped"]["bob"]["sealed"], 9000)
    cases.append(case("one bit of bob's wrapped key flipped", tampered, "decryption-failed"))
    tampered = copy.deepcopy(env)
    tampered["wrapped"]["bob"] = env["wrapped"]["carol"]
    cases.append(case("carol's wrapped key relabelled as bob's", tampered,
                      "decryption-failed"))
    cases.append(case("dave is not a recipient", env, "not-a-recipient", opener="dave",
                      versions=[1]))
    cases.append(case(
        "bob re-encrypts alice's signed message to dave", crafted(
            "forward", payload, signer="alice", wrap_for=["dave"],
            view={**header_view(payload), "recipients": ["dave"]}),
        "not-a-recipient", opener="dave", versions=[1]))
    cases.append(case(
        "the signed created time differs from the envelope's",
        crafted("created", {**payload, "created": CREATED - 60}, signer="alice",
                view=header_view(payload)), "bad-envelope"))
    cases.append(case("an unknown field in the envelope", {**env, "priority": "urgent"},
                      "bad-envelope"))
    cases.append(case("the relay dropped the blob ids", {**env, "blobs": []}, "bad-envelope"))
    forked = dataclasses.replace(R4, head_hash=hashlib.sha256(b"forked head 4").digest())
    fork_env, _, _ = sealed("fork", at=forked)
    cases.append(case("alice's log differs from bob's at seq 4", fork_env, "fork"))
    cases.append(case("mallory is not a member", crafted(
        "mallory", {**payload, "sender": "mallory"}, signer="mallory"), "unknown-sender"))
    cases.append(case("erin was removed at seq 5 and names that head", crafted(
        "erin", {**payload, "sender": "erin", "roster_head": R5.head()}, signer="erin"),
        "removed-member"))
    cases.append(case("mallory signs a message as alice", crafted(
        "impostor", payload, signer="mallory"), "bad-signature"))

    doc = {
        "origin": "generated once by tests/vectors/envelope/generate.py (keys.envelope, fixed "
                  "seeds, ids, content keys and nonces); HPKE wrapping is randomized by the "
                  "library, so the wrapped keys differ per run and the file is not regenerated: "
                  "tests re-seal the 'seal' inputs, compare every field but 'wrapped', and open "
                  "each envelope as 'expect' says",
        "network": {"genesis_hash": b64e(R3.genesis_hash)},
        "keys": key_spec(HANDLES, {"bob": 2}),
        "rosters": {str(s): roster_spec(r) for s, r in ROSTERS.items()},
        "cases": cases,
    }
    OUT.write_text(json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=True) + "\n",
                   encoding="utf-8")


if __name__ == "__main__":
    main()
