"""Evidence bundles: one file that proves what was sent, when, and who acknowledged it.

A bundle is a JSON document (format ``comity-evidence-2``) holding the
envelope the relay accepted, its content key, the sender's signed payload,
every relay receipt and acknowledgement of the message, the relay's signed
status statement (where its receipt chain ended when the bundle was made), and
the membership log from genesis. ``verify_bundle`` checks it with nothing
else: no relay, no keystore, no network. It replays the log from its own
genesis, so the *network fingerprint* it reports must be compared with the
one the reader trusts (``expected_network`` does that). Relay signatures count
only under a relay key that log names (``LogVerifier.check_relay_key``); the
content key shows that the accepted envelope holds exactly the signed
message; the status statement shows that no relay receipt was left out.

Every signature is plain Ed25519 over ``comity/v1/<purpose>\\x00`` followed by
the canonical JSON of the record without its signature. The ``signatures``
section lists, for each one, the public key (PEM), the exact signed bytes and
the signature, so an expert can check each with OpenSSL alone
(docs/evidence.md); ``verify_bundle`` confirms that this list says the same as
the records, so it adds convenience, not trust.
"""

from __future__ import annotations

import base64
import hmac
from typing import Any

from . import envelope as env
from .constants import CLOCK_SKEW
from .encoding import b64d, b64e, canonical, parse, require_fields, signing_input
from .errors import KeysError
from .evidence_report import Finding, Outcome, Report, outcomes, when  # noqa: F401  (re-exported)
from .identity import IdentityKey, IdentityPublicKey, format_fingerprint
from .log import ENTRY_PURPOSE, LogVerifier, entry_hash, signed_content
from .receipts import (ACK_PURPOSE, RELAY_KINDS, RELAY_PURPOSE, check_ack, check_relay_receipt,
                       evidence_hash, verify_chain, verify_relay_receipt)
from .relay_status import STATUS_PURPOSE, check_status, verify_status

FORMAT = "comity-evidence-2"
BUNDLE_FIELDS = {"format", "network", "message_id", "envelope", "content_key", "signed_payload",
                 "evidence", "relay_status", "log", "signatures", "exported_by", "exported_at",
                 "exporter_signature"}
#: the exporter signs the whole bundle, so no byte of it (not even unsigned metadata) can change
BUNDLE_PURPOSE = "evidence-bundle"
#: DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): 30 2a 30 05 06 03 2b 65 70 03 21 00
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


class EvidenceError(KeysError):
    """the evidence bundle does not verify"""


def public_key_pem(raw: bytes) -> str:
    body = base64.encodebytes(_ED25519_SPKI_PREFIX + raw).decode("ascii").replace("\n", "")
    return f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"


def _std_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unsigned(record: dict, name: str = "sig") -> dict:
    return {k: v for k, v in record.items() if k != name}


def signature_list(bundle: dict) -> list[dict]:
    """The OpenSSL-checkable list: one item per signature in the bundle."""
    items = []

    def add(what: str, key: bytes, purpose: str, record: dict, sig: str) -> None:
        # Standard base64 with padding here: what `openssl base64 -d -A` and `base64 -d` read.
        items.append({"what": what, "public_key_pem": public_key_pem(key),
                      "signed_data_base64": _std_b64(signing_input(purpose, record)),
                      "signature_base64": _std_b64(b64d(sig))})

    payload = bundle["signed_payload"]
    sender = bundle["_sender_key"] if "_sender_key" in bundle else None
    if sender is not None:
        add(f"message signed by {payload['payload']['sender']}", sender, env.MESSAGE_PURPOSE,
            payload["payload"], payload["sig"])
    for record in bundle["evidence"]:
        if "relay_key" in record:
            add(f"{record['kind']} receipt signed by the relay", b64d(record["relay_key"]), RELAY_PURPOSE,
                _unsigned(record), record["sig"])
        elif "_key" in record:
            ack = {k: v for k, v in record.items() if k not in ("_key", "sig")}
            add(f"{record['kind']} signed by {record['recipient']}", record["_key"], ACK_PURPOSE,
                ack, record["sig"])
    status = bundle["relay_status"]
    add(f"status of the message signed by the relay at {when(status['time'])}", b64d(status["relay_key"]),
        STATUS_PURPOSE, _unsigned(status), status["sig"])
    for entry in bundle["log"]:
        for s in entry["signatures"]:
            add(f"membership log entry {entry['seq']} ({entry['kind']})", b64d(s["key"]), ENTRY_PURPOSE,
                signed_content(entry), s["sig"])
    return items


def make_bundle(*, network: str, message_id: str, envelope: dict, content_key: bytes,
                signed_payload: dict, evidence: list[dict], relay_status: dict, log: list[dict],
                exporter: IdentityKey, exported_by: str, exported_at: int) -> dict:
    """Assemble and sign a bundle (the caller passes the log from genesis).

    ``relay_status`` is the relay's status statement of the message, signed after
    the last relay receipt in ``evidence``. Write the result as ``bundle_bytes(bundle)``:
    ``verify_bundle_bytes`` accepts only that exact canonical form, so every byte of
    the file is covered.
    """
    verifier = LogVerifier(entry_hash(log[0]))
    verifier.extend(log)
    payload = signed_payload["payload"]
    bundle = {"format": FORMAT, "network": {"name": network, "genesis_hash": b64e(entry_hash(log[0]))},
              "message_id": message_id, "envelope": envelope, "content_key": b64e(content_key),
              "signed_payload": signed_payload, "evidence": evidence, "relay_status": relay_status,
              "log": log, "exported_by": exported_by, "exported_at": exported_at}
    helper = dict(bundle, _sender_key=verifier.roster_at(payload["roster_head"]["seq"])
                  .member(payload["sender"]).identity_key.raw,
                  evidence=[_with_key(r, verifier, payload["roster_head"]["seq"]) for r in evidence])
    bundle["signatures"] = signature_list(helper)
    bundle["exporter_signature"] = exporter.sign_b64(BUNDLE_PURPOSE, bundle)
    return bundle


def bundle_bytes(bundle: dict) -> bytes:
    """The one accepted file form: canonical JSON and a final newline."""
    return canonical(bundle) + b"\n"


def verify_bundle_bytes(data: bytes, *, expected_network: bytes | None = None) -> Report:
    """Verify a bundle file: it must be exactly ``bundle_bytes`` of what it holds."""
    try:
        bundle = parse(data)
    except KeysError as exc:
        report = Report()
        report.add(False, f"the file is not an evidence bundle: {exc.message}")
        return report
    report = verify_bundle(bundle, expected_network=expected_network)
    if report.ok and bundle_bytes(bundle) != bytes(data):
        report.add(False, "the file is not in the exact form comity writes: it was edited")
    return report


def _with_key(record: dict, verifier: LogVerifier, from_seq: int) -> dict:
    """A recipient's record with the key that signed it, for the OpenSSL list: the one among the
    keys it held from ``from_seq`` on, not its latest (it may have rotated its identity since)."""
    if "relay_key" in record:
        return record
    try:
        key = _member_key_for(verifier, record["recipient"], from_seq, record)
    except KeysError:
        return record          # verify_bundle refuses such a record before it compares the list
    return {**record, "_key": key.raw}


def verify_bundle(bundle: Any, *, expected_network: bytes | None = None) -> Report:
    """Check every signature, hash and link in a bundle; never raises for bad evidence.

    When every check passes, ``report.recipients`` says per recipient what is proven
    and what is not.
    """
    report = Report()
    try:
        _verify(bundle, report, expected_network)
    except (KeysError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        report.add(False, f"the bundle is malformed or does not verify: {getattr(exc, 'message', exc)}")
    return report


def _verify(bundle: Any, report: Report, expected_network: bytes | None) -> None:
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        found = bundle.get("format") if isinstance(bundle, dict) else None
        raise EvidenceError(f"unknown bundle format {str(found)[:40]!r}: this release reads {FORMAT}"
                            + (" (the older format took the relay's key from the bundle itself, so "
                               "it proves nothing about the relay)" if found == "comity-evidence-1" else ""))
    require_fields(bundle, BUNDLE_FIELDS, what="evidence bundle", error=EvidenceError)
    log = bundle["log"]
    genesis = entry_hash(log[0])
    report.network_fingerprint = format_fingerprint(genesis[:20])
    if expected_network is not None and genesis != expected_network:
        report.add(False, "the membership log is not that of the expected network")
        return
    verifier = LogVerifier(genesis)
    verifier.extend(log)
    if bundle["network"] != {"name": verifier.roster.network, "genesis_hash": b64e(genesis)}:
        raise EvidenceError("the bundle's network does not match its membership log")
    report.add(True, f"membership log of {verifier.roster.network!r} verifies from its genesis "
                     f"(network fingerprint {report.network_fingerprint}), {len(log)} entries")

    envelope, signed = bundle["envelope"], bundle["signed_payload"]
    payload = signed["payload"]
    env.check_envelope_shape(envelope)
    env.check_payload(payload)
    digest = b64e(env.envelope_hash(envelope))
    if env.header_view(payload) != env.header_view(envelope) or envelope["id"] != bundle["message_id"]:
        raise EvidenceError("the signed payload does not belong to this envelope")
    status = _check_relay_status(bundle["relay_status"], verifier, envelope, digest)
    _check_content(envelope, bundle["content_key"], signed)
    report.add(True, "the envelope the relay accepted decrypts, with the bundle's content key, to "
                     "exactly this signed message")
    head = payload["roster_head"]
    roster = verifier.roster_at(head["seq"])
    if b64e(roster.head_hash) != head["hash"]:
        raise EvidenceError("the message names a membership log state that is not in this log (fork)")
    sender = roster.member(payload["sender"])
    if sender is None or not sender.active:
        raise EvidenceError(f"{payload['sender']} was not an active member when the message was signed")
    sender.identity_key.verify(env.MESSAGE_PURPOSE, payload, signed["sig"])
    report.add(True, f"message {payload['id']} was signed by {payload['sender']} "
                     f"(key {format_fingerprint(sender.identity_key.fingerprint())}), a member at log entry "
                     f"{head['seq']}, for {', '.join(payload['recipients'])}; subject {payload['headers']['subject']!r}")

    altered = _check_records(bundle["evidence"], verifier, envelope, digest, signed, head["seq"], report)
    chain = verify_chain(bundle["evidence"])[payload["id"]]
    relay_chain = [r for r in chain if r["kind"] in RELAY_KINDS]
    root = relay_chain[0]
    if root["kind"] == "submission-accepted" and root["recipients"] != envelope["recipients"]:
        raise EvidenceError("the relay's submission receipt names other recipients than the envelope")
    report.add(True, "the receipts form one unbroken chain from the relay's submission receipt")
    _check_chain_end(relay_chain[-1], status)
    report.add(True, f"the relay's status at {when(status['time'])} names the last of these receipts as "
                     f"its newest for this message: no relay receipt up to then is left out")

    expected = signature_list(dict(bundle, _sender_key=sender.identity_key.raw,
                                   evidence=[_with_key(r, verifier, head["seq"]) for r in bundle["evidence"]]))
    if expected != bundle["signatures"]:
        raise EvidenceError("the OpenSSL signature list does not match the records")
    report.add(True, f"the {len(expected)} signatures listed for OpenSSL match the records")

    exporter = verifier.roster.member(bundle["exported_by"])
    if exporter is None:
        raise EvidenceError(f"the exporter {bundle['exported_by']!r} is not in the membership log")
    unsigned = {k: v for k, v in bundle.items() if k != "exporter_signature"}
    _any_key_of(verifier, exporter.handle, 0, BUNDLE_PURPOSE, unsigned, bundle["exporter_signature"],
                at=bundle["exported_at"])
    report.add(True, f"the bundle as a whole is signed by its exporter, {exporter.handle}")
    report.recipients = outcomes(payload["recipients"], chain, status["time"], altered)


def _relay_key(record: dict, verifier: LogVerifier, what: str) -> IdentityPublicKey:
    """The relay key that signed ``record``, if the log names it for the record's time."""
    key = IdentityPublicKey.from_b64(record["relay_key"])
    try:
        verifier.check_relay_key(key, record["time"])
    except KeysError as exc:
        raise EvidenceError(f"the {what} is not signed by this network's relay: {exc.message}") from None
    return key


def _check_relay_status(status: Any, verifier: LogVerifier, envelope: dict, digest: str) -> dict:
    """The relay's status statement: signed by the network's relay, about this envelope, and
    naming a log head the bundle's log reaches (a log cut short would hide a key rotation)."""
    check_status(status)
    verify_status(status, _relay_key(status, verifier, "relay's status statement"))
    if (status["message_id"], status["network"], status["sender"], status["envelope_hash"]) != \
            (envelope["id"], envelope["network"], envelope["sender"], digest):
        raise EvidenceError("the relay's status statement is about another message or envelope")
    head = status["log_head"]
    if head["seq"] > verifier.seq or b64e(verifier.hash_at(head["seq"])) != head["hash"]:
        raise EvidenceError(f"the bundle's membership log does not hold entry {head['seq']} as the "
                            "relay's status names it: the log was cut short or altered")
    return status


def _check_content(envelope: dict, content_key: Any, signed: dict) -> None:
    """The accepted envelope holds exactly the signed payload: receipts and content are one message."""
    try:
        plaintext = env.decrypt_with_content_key(envelope, b64d(content_key, length=env.CONTENT_KEY_BYTES,
                                                                 what="content key"))
    except KeysError:
        raise EvidenceError("the bundle's content key does not open the envelope the relay "
                            "accepted") from None
    # Not secret (both are in the bundle in clear); compare_digest for the habit's sake.
    if not hmac.compare_digest(plaintext, canonical(signed)):
        raise EvidenceError("the envelope the relay accepted holds another message than the bundle's "
                            "signed payload: the content was swapped")


def _check_records(records: list, verifier: LogVerifier, envelope: dict, digest: str, signed: dict,
                   from_seq: int, report: Report) -> set[str]:
    """Verify each receipt and acknowledgement; returns the recipients whose rejection names an
    envelope other than the accepted one (what arrived was altered)."""
    payload_digest = b64e(env.payload_hash(signed))
    altered = set()
    for record in records:
        if not isinstance(record, dict):
            raise EvidenceError("an evidence record is not a JSON object")
        changed = record.get("kind") == "rejected" and record.get("envelope_hash") != digest
        if record.get("message_id") != envelope["id"] or record.get("network") != envelope["network"] \
                or record.get("sender") != envelope["sender"] \
                or (record.get("envelope_hash") != digest and not changed):
            raise EvidenceError(f"a {str(record.get('kind'))[:40]} record is about another message "
                                "or envelope")
        if "relay_key" in record:
            check_relay_receipt(record)
            relay = _relay_key(record, verifier, f"{record['kind']} receipt")
            verify_relay_receipt(record, relay)
            who = record.get("recipient") or ", ".join(record.get("recipients", []))
            report.add(True, f"{record['kind']} ({who}) at {when(record['time'])}, signed by the relay "
                             f"(key {format_fingerprint(relay.fingerprint())}, named by the membership log)")
            continue
        member = _member_key_for(verifier, record["recipient"], from_seq, record)
        if record["kind"] == "acknowledged" and record.get("payload_hash") != payload_digest:
            raise EvidenceError(f"{record['recipient']}'s acknowledgement is for different content")
        text = f"{record['kind']} by {record['recipient']} at {when(record['time'])}"
        if record["kind"] == "rejected":
            text += f", reason {record['reason']}"
            if changed:
                altered.add(record["recipient"])
                text += " (what it received differs from what the relay accepted)"
        report.add(True, text + f", signed by {record['recipient']}'s key {format_fingerprint(member.fingerprint())}")
    return altered


def _check_chain_end(last: dict, status: dict) -> None:
    """The relay's newest receipt, as its status statement names it, ends the bundle's chain."""
    if b64e(evidence_hash(last)) != status["chain_head"]:
        raise EvidenceError(f"the relay's status at {when(status['time'])} names a newest receipt that "
                            "is not the last one in the bundle: relay receipts were left out")
    if status["time"] < last["time"]:
        raise EvidenceError("the relay's status statement is dated before its last receipt")


def _member_key_for(verifier: LogVerifier, handle: str, from_seq: int, record: dict) -> IdentityPublicKey:
    """The recipient's identity key that signed ``record``: one it held from ``from_seq`` on, and
    still held when the record says it was signed."""
    check_ack(record)
    return _any_key_of(verifier, handle, from_seq, ACK_PURPOSE, _unsigned(record), record["sig"],
                       what=f"{handle}'s {record['kind']}", at=record["time"])


def _any_key_of(verifier: LogVerifier, handle: str, from_seq: int, purpose: str, record: dict,
                sig: str, what: str = "the bundle", at: int | None = None) -> IdentityPublicKey:
    """The identity key, among those ``handle`` held from ``from_seq`` on, that signed ``record``.

    With ``at`` (the time the signer states), a key counts only if the log had not replaced or
    revoked it more than CLOCK_SKEW before: a rotated-away or stolen key cannot sign evidence
    dated after its rotation.
    """
    tried = set()
    for seq in range(from_seq, verifier.seq + 1):
        member = verifier.roster_at(seq).member(handle)
        if member is None or member.identity_key.raw in tried:
            continue
        tried.add(member.identity_key.raw)
        if at is not None:
            ended = _key_ended_at(verifier, handle, member.identity_key, seq)
            if ended is not None and at > ended + CLOCK_SKEW:
                continue
        try:
            member.identity_key.verify(purpose, record, sig)
            return member.identity_key
        except KeysError:
            continue
    raise EvidenceError(f"{what} is not signed by any key {handle} held")


def _key_ended_at(verifier: LogVerifier, handle: str, key: IdentityPublicKey, seq: int) -> int | None:
    """The time of the first entry after ``seq`` where ``handle`` no longer signs with ``key``
    (rotated away or removed); None if it still does."""
    for later in range(seq + 1, verifier.seq + 1):
        roster = verifier.roster_at(later)
        member = roster.member(handle)
        if member is None or not member.active or member.identity_key != key:
            return roster.time
    return None
