"""Write tests/vectors/receipts/{relay_receipts,acks,chains}.json.

Fixed seeds and times, and Ed25519 signatures are deterministic, so the
files are byte-identical on every run. Each case declares what must happen:
``"expect": "success"`` or the ``reason`` code of the error raised.

    python tests/vectors/receipts/generate.py [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from keys.encoding import b64e, signing_input  # noqa: E402
from keys.identity import IdentityKey  # noqa: E402
from keys.receipts import (ACK_PURPOSE, RELAY_PURPOSE, evidence_hash, make_ack,  # noqa: E402
                           make_relay_receipt)

T0 = 1767225600  # 2026-01-01T00:00:00Z


def seed(label: str) -> bytes:
    return hashlib.sha256(b"comity test seed " + label.encode()).digest()


RELAY = IdentityKey.from_seed(seed("relay"))
ROGUE = IdentityKey.from_seed(seed("rogue relay"))
BOB = IdentityKey.from_seed(seed("bob"))
CAROL = IdentityKey.from_seed(seed("carol"))
NETWORK = hashlib.sha256(b"comity test genesis entry").digest()
MESSAGE_ID = b64e(hashlib.sha256(b"comity test message id").digest()[:16])
ENVELOPE_HASH = hashlib.sha256(b"comity test envelope").digest()
PAYLOAD_HASH = hashlib.sha256(b"comity test signed payload").digest()
COMMON = {"network": NETWORK, "message_id": MESSAGE_ID, "envelope_hash": ENVELOPE_HASH,
          "sender": "alice.ministerio"}
RECIPIENTS = ["bob.parquet", "carol.fgr", "dave.mp"]
#: the relay's membership log head when it accepted the message
LOG_SEQ = 12
#: a recipient's newer log head, named in its acknowledgement
NEWER_HEAD = {"seq": 14, "hash": b64e(hashlib.sha256(b"comity test log entry 14").digest())}


def resign(key: IdentityKey, purpose: str, record: dict) -> dict:
    body = {k: v for k, v in record.items() if k != "sig"}
    return {**body, "sig": key.sign_b64(purpose, body)}


def tampered(record: dict, **changes) -> dict:
    out = copy.deepcopy(record)
    out.update(changes)
    return out


def relay_cases() -> tuple[dict, list[dict]]:
    accepted = make_relay_receipt(RELAY, "submission-accepted", **COMMON, time=T0,
                                  recipients=RECIPIENTS, log_seq=LOG_SEQ)
    rejected = make_relay_receipt(RELAY, "submission-rejected", **COMMON, time=T0,
                                  recipients=RECIPIENTS, reason="unknown-recipient")
    delivered = make_relay_receipt(RELAY, "delivered", **COMMON, time=T0 + 60,
                                   prev=evidence_hash(accepted), recipient="bob.parquet")
    lapsed = make_relay_receipt(RELAY, "not-collected", **COMMON, time=T0 + 30 * 86400,
                                prev=evidence_hash(delivered), recipient="dave.mp")
    key, fp = b64e(RELAY.public.raw), RELAY.public.fingerprint().hex()
    rogue_signed = make_relay_receipt(ROGUE, "delivered", **COMMON, time=T0 + 60,
                                      prev=evidence_hash(accepted), recipient="bob.parquet")
    no_recipients = {k: v for k, v in accepted.items() if k != "recipients"}
    c = []

    def case(description, record, expect, by="key"):
        c.append({"description": description, "record": record, "expect": expect,
                  **({"verify_with_key": key} if by == "key" else
                     {"verify_with_fingerprint": fp} if by == "fp" else
                     {"verify_with_key": b64e(ROGUE.public.raw)})})

    case("submission accepted", accepted, "success")
    case("submission accepted, checked against the pinned fingerprint", accepted, "success", "fp")
    case("submission rejected with the relay's refusal code", rejected, "success")
    case("delivered to one recipient", delivered, "success")
    case("not collected by one recipient before retention ran out", lapsed, "success")
    case("tampered: time moved after signing", tampered(delivered, time=T0 + 61),
         "bad-signature")
    case("tampered: a recipient removed after signing",
         tampered(accepted, recipients=RECIPIENTS[:2]), "bad-signature")
    case("tampered: signature bits flipped",
         tampered(accepted, sig=b64e(bytes(64 - 1) + b"\x01")), "bad-signature")
    case("signed by another relay key, checked against ours", rogue_signed, "wrong-key")
    case("signed by another relay key, checked against ours by fingerprint", rogue_signed,
         "wrong-key", "fp")
    case("another relay signs but names our relay_key",
         resign(ROGUE, RELAY_PURPOSE, delivered) | {"relay_key": key}, "bad-signature")
    case("our relay's signature made under the ack purpose",
         resign(RELAY, ACK_PURPOSE, delivered), "bad-signature")
    case("unknown field added (and signed)",
         resign(RELAY, RELAY_PURPOSE, tampered(delivered, note="x")), "unknown-field")
    case("reason on an accepted submission",
         resign(RELAY, RELAY_PURPOSE, tampered(accepted, reason="x")), "unknown-field")
    case("recipients on a delivered receipt",
         resign(RELAY, RELAY_PURPOSE, tampered(delivered, recipients=RECIPIENTS)),
         "unknown-field")
    case("accepted submission without recipients", resign(RELAY, RELAY_PURPOSE, no_recipients),
         "missing-field")
    case("unknown kind", resign(RELAY, RELAY_PURPOSE, tampered(delivered, kind="read")),
         "unknown-kind")
    case("time is a string", resign(RELAY, RELAY_PURPOSE, tampered(delivered, time=str(T0))),
         "bad-field")
    case("envelope hash of the wrong length",
         resign(RELAY, RELAY_PURPOSE, tampered(delivered, envelope_hash=b64e(bytes(31)))),
         "bad-field")
    case("submission receipt that names a prev",
         resign(RELAY, RELAY_PURPOSE, tampered(accepted, prev=b64e(bytes(32)))), "bad-field")
    case("delivered receipt without a prev",
         resign(RELAY, RELAY_PURPOSE, tampered(delivered, prev=None)), "bad-field")
    case("recipients list a handle twice",
         resign(RELAY, RELAY_PURPOSE, tampered(accepted, recipients=["bob.parquet"] * 2)),
         "bad-field")
    case("sender is not a valid handle",
         resign(RELAY, RELAY_PURPOSE, tampered(accepted, sender="Alice")), "bad-field")
    case("accepted submission without log_seq (it then proves nothing about the log)",
         resign(RELAY, RELAY_PURPOSE, {k: v for k, v in accepted.items() if k != "log_seq"}),
         "success")
    case("tampered: log_seq moved back after signing", tampered(accepted, log_seq=LOG_SEQ - 1),
         "bad-signature")
    case("log_seq is negative", resign(RELAY, RELAY_PURPOSE, tampered(accepted, log_seq=-1)),
         "bad-field")
    case("log_seq on a delivered receipt",
         resign(RELAY, RELAY_PURPOSE, tampered(delivered, log_seq=LOG_SEQ)), "unknown-field")
    doc = {"relay_public_key": key, "relay_fingerprint": fp,
           "signing_input_hex": signing_input(
               RELAY_PURPOSE, {k: v for k, v in accepted.items() if k != "sig"}).hex(),
           "evidence_hash": b64e(evidence_hash(accepted))}
    return doc, c


def ack_cases() -> list[dict]:
    accepted = make_relay_receipt(RELAY, "submission-accepted", **COMMON, time=T0,
                                  recipients=RECIPIENTS, log_seq=LOG_SEQ)
    delivered = make_relay_receipt(RELAY, "delivered", **COMMON, time=T0 + 60,
                                   prev=evidence_hash(accepted), recipient="bob.parquet")
    base = dict(COMMON, recipient="bob.parquet", time=T0 + 65, prev=evidence_hash(delivered))
    ack = make_ack(BOB, "acknowledged", **base, payload_hash=PAYLOAD_HASH)
    forked = make_ack(BOB, "rejected", **base, payload_hash=PAYLOAD_HASH, reason="fork")
    undecryptable = make_ack(BOB, "rejected", **base, reason="decryption-failed")
    bob = b64e(BOB.public.raw)
    c = []

    def case(description, record, expect, key=bob):
        c.append({"description": description, "record": record, "identity_key": key,
                  "expect": expect})

    case("acknowledged: verified and decrypted", ack, "success")
    case("rejected: the sender saw a forked membership log", forked, "success")
    case("rejected: decryption failed, so no payload hash", undecryptable, "success")
    case("rejected: not addressed to bob, found before decrypting",
         make_ack(BOB, "rejected", **base, reason="not-a-recipient"), "success")
    for reason in ("bad-signature", "unknown-sender", "not-a-recipient", "removed-member",
                   "bad-envelope", "superseded-key", "retired-key"):
        case(f"rejected: {reason}",
             make_ack(BOB, "rejected", **base, payload_hash=PAYLOAD_HASH, reason=reason),
             "success")
    newer = make_ack(BOB, "acknowledged", **base, payload_hash=PAYLOAD_HASH,
                     newer_head=NEWER_HEAD)
    case("acknowledged, naming bob's newer log head (the sender's view was stale)", newer,
         "success")
    case("rejected: retired-key, naming bob's newer log head",
         make_ack(BOB, "rejected", **base, payload_hash=PAYLOAD_HASH, reason="retired-key",
                  newer_head=NEWER_HEAD), "success")
    case("tampered: newer_head removed after signing",
         {k: v for k, v in newer.items() if k != "newer_head"}, "bad-signature")
    case("newer_head without its hash",
         resign(BOB, ACK_PURPOSE, tampered(newer, newer_head={"seq": 14})), "bad-field")
    case("newer_head with a negative seq",
         resign(BOB, ACK_PURPOSE, tampered(newer, newer_head={**NEWER_HEAD, "seq": -1})),
         "bad-field")
    case("tampered: payload hash replaced",
         tampered(ack, payload_hash=b64e(ENVELOPE_HASH)), "bad-signature")
    case("tampered: rejection turned into acknowledgement",
         tampered({k: v for k, v in forked.items() if k != "reason"}, kind="acknowledged"),
         "bad-signature")
    case("checked against carol's key", ack, "bad-signature", b64e(CAROL.public.raw))
    case("bob's signature made under the relay-receipt purpose",
         resign(BOB, RELAY_PURPOSE, ack), "bad-signature")
    case("unknown field added (and signed)",
         resign(BOB, ACK_PURPOSE, tampered(ack, comment="ok")), "unknown-field")
    case("reason on an acknowledgement",
         resign(BOB, ACK_PURPOSE, tampered(ack, reason="fork")), "unknown-field")
    case("payload hash on a decryption-failed rejection",
         resign(BOB, ACK_PURPOSE, tampered(undecryptable, payload_hash=b64e(PAYLOAD_HASH))),
         "unknown-field")
    case("acknowledgement without payload hash",
         resign(BOB, ACK_PURPOSE, {k: v for k, v in ack.items() if k != "payload_hash"}),
         "missing-field")
    case("rejection reason not in the list",
         resign(BOB, ACK_PURPOSE, tampered(forked, reason="too-busy")), "bad-field")
    case("ack without a prev", resign(BOB, ACK_PURPOSE, tampered(ack, prev=None)), "bad-field")
    case("kind 'received' is not an ack kind",
         resign(BOB, ACK_PURPOSE, tampered(ack, kind="received")), "unknown-kind")
    case("message id too short", resign(BOB, ACK_PURPOSE, tampered(ack, message_id="m1")),
         "bad-field")
    return c


def chain_doc() -> dict:
    t = T0
    rec: dict[str, dict] = {}
    rec["accepted"] = make_relay_receipt(RELAY, "submission-accepted", **COMMON, time=t,
                                         recipients=RECIPIENTS, log_seq=LOG_SEQ)
    rec["delivered-bob"] = make_relay_receipt(RELAY, "delivered", **COMMON, time=t + 60,
                                              prev=evidence_hash(rec["accepted"]),
                                              recipient="bob.parquet")
    rec["ack-bob"] = make_ack(BOB, "acknowledged", **COMMON, recipient="bob.parquet",
                              time=t + 65, prev=evidence_hash(rec["delivered-bob"]),
                              payload_hash=PAYLOAD_HASH)
    rec["delivered-carol"] = make_relay_receipt(RELAY, "delivered", **COMMON, time=t + 3600,
                                                prev=evidence_hash(rec["delivered-bob"]),
                                                recipient="carol.fgr")
    rec["ack-carol"] = make_ack(CAROL, "rejected", **COMMON, recipient="carol.fgr",
                                time=t + 3601, prev=evidence_hash(rec["delivered-carol"]),
                                payload_hash=PAYLOAD_HASH, reason="fork")
    rec["lapsed-dave"] = make_relay_receipt(RELAY, "not-collected", **COMMON,
                                            time=t + 30 * 86400,
                                            prev=evidence_hash(rec["delivered-carol"]),
                                            recipient="dave.mp")
    # Faulty evidence, each signed properly so only the chain is wrong.
    rec["second-accepted"] = make_relay_receipt(RELAY, "submission-accepted", **COMMON,
                                                time=t + 1, recipients=RECIPIENTS)
    rec["fork-dave"] = make_relay_receipt(RELAY, "delivered", **COMMON, time=t + 120,
                                          prev=evidence_hash(rec["delivered-bob"]),
                                          recipient="dave.mp")
    rec["early-carol"] = make_relay_receipt(RELAY, "delivered", **COMMON, time=t + 30,
                                            prev=evidence_hash(rec["delivered-bob"]),
                                            recipient="carol.fgr")
    rec["ack-bob-on-accepted"] = make_ack(BOB, "acknowledged", **COMMON,
                                          recipient="bob.parquet", time=t + 65,
                                          prev=evidence_hash(rec["accepted"]),
                                          payload_hash=PAYLOAD_HASH)
    rec["delivered-eve"] = make_relay_receipt(RELAY, "delivered", **COMMON, time=t + 60,
                                              prev=evidence_hash(rec["accepted"]),
                                              recipient="eve.unknown")
    rec["delivered-bob-other-envelope"] = make_relay_receipt(
        RELAY, "delivered", **dict(COMMON, envelope_hash=PAYLOAD_HASH), time=t + 60,
        prev=evidence_hash(rec["accepted"]), recipient="bob.parquet")
    rec["redelivered-bob"] = make_relay_receipt(RELAY, "delivered", **COMMON, time=t + 4000,
                                                prev=evidence_hash(rec["delivered-carol"]),
                                                recipient="bob.parquet")
    rec["rejected-submission"] = make_relay_receipt(RELAY, "submission-rejected", **COMMON,
                                                    time=t, recipients=RECIPIENTS,
                                                    reason="quota-exceeded")
    rec["delivered-after-rejection"] = make_relay_receipt(
        RELAY, "delivered", **COMMON, time=t + 60,
        prev=evidence_hash(rec["rejected-submission"]), recipient="bob.parquet")
    rec["rogue-delivered-carol"] = make_relay_receipt(
        ROGUE, "delivered", **COMMON, time=t + 3600, prev=evidence_hash(rec["delivered-bob"]),
        recipient="carol.fgr")
    full = ["accepted", "delivered-bob", "ack-bob", "delivered-carol", "ack-carol",
            "lapsed-dave"]
    cases = [
        {"description": "full evidence of one message", "records": full, "expect": "success",
         "order": full},
        {"description": "same evidence in any order", "records": full[::-1],
         "expect": "success", "order": full},
        {"description": "a submission receipt alone", "records": ["accepted"],
         "expect": "success", "order": ["accepted"]},
        {"description": "a rejected submission alone", "records": ["rejected-submission"],
         "expect": "success", "order": ["rejected-submission"]},
        {"description": "the middle relay receipt is missing",
         "records": ["accepted", "delivered-bob", "lapsed-dave"], "expect": "broken-chain"},
        {"description": "no submission receipt", "records": ["delivered-bob", "ack-bob"],
         "expect": "broken-chain"},
        {"description": "two submission receipts for one message",
         "records": ["accepted", "second-accepted"], "expect": "chain-fork"},
        {"description": "the relay forks its chain",
         "records": ["accepted", "delivered-bob", "delivered-carol", "fork-dave"],
         "expect": "chain-fork"},
        {"description": "a receipt dated before the one it follows",
         "records": ["accepted", "delivered-bob", "early-carol"], "expect": "broken-chain"},
        {"description": "an ack hung on the submission receipt, not on the delivery",
         "records": ["accepted", "ack-bob-on-accepted"], "expect": "broken-chain"},
        {"description": "delivered to someone not addressed",
         "records": ["accepted", "delivered-eve"], "expect": "chain-mismatch"},
        {"description": "a receipt about another envelope",
         "records": ["accepted", "delivered-bob-other-envelope"], "expect": "chain-mismatch"},
        {"description": "bob delivered twice",
         "records": ["accepted", "delivered-bob", "delivered-carol", "redelivered-bob"],
         "expect": "chain-fork"},
        {"description": "a delivery after a rejected submission",
         "records": ["rejected-submission", "delivered-after-rejection"],
         "expect": "broken-chain"},
        # A relay key rotation between two receipts of one message: the structure is sound;
        # whether the log names each key for its time is the signature check's (keys/evidence.py).
        {"description": "a receipt by another relay key in the chain",
         "records": ["accepted", "delivered-bob", "rogue-delivered-carol"],
         "expect": "success", "order": ["accepted", "delivered-bob", "rogue-delivered-carol"]},
    ]
    return {"records": rec,
            "evidence_hashes": {name: b64e(evidence_hash(r)) for name, r in rec.items()},
            "keys": {"relay": b64e(RELAY.public.raw), "rogue-relay": b64e(ROGUE.public.raw),
                     "bob.parquet": b64e(BOB.public.raw), "carol.fgr": b64e(CAROL.public.raw)},
            "cases": cases}


def write(path: pathlib.Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=True) + "\n",
                    encoding="utf-8")


def main(out: pathlib.Path = HERE) -> None:
    origin = "generated by tests/vectors/receipts/generate.py (keys.receipts, fixed seeds)"
    relay_doc, relay = relay_cases()
    write(out / "relay_receipts.json", {"origin": origin, **relay_doc, "cases": relay})
    write(out / "acks.json", {"origin": origin, "cases": ack_cases()})
    write(out / "chains.json", {"origin": origin, **chain_doc()})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=HERE)
    main(parser.parse_args().out)
