"""Evidence bundles: one file that proves what was sent, when, and who acknowledged it.

A bundle is a JSON document (format ``comity-evidence-1``) holding the
envelope, the sender's signed payload, every relay receipt and acknowledgement
of the message, the relay's public key, and the membership log from genesis up
to the newest entry any of those records relies on. ``verify_bundle`` checks
it with nothing else: no relay, no keystore, no network. It replays the log
from its own genesis, so the *network fingerprint* it reports must be compared
with the one the reader trusts (``expected_network`` does that).

Every signature is plain Ed25519 over ``comity/v1/<purpose>\\x00`` followed by
the canonical JSON of the record without its signature. The ``signatures``
section lists, for each one, the public key (PEM), the exact signed bytes and
the signature, so an expert can check each with OpenSSL alone
(docs/evidence.md); ``verify_bundle`` confirms that this list says the same as
the records, so it adds convenience, not trust.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import envelope as env
from .encoding import b64d, b64e, canonical, parse, require_fields, signing_input
from .errors import KeysError
from .identity import IdentityKey, IdentityPublicKey, format_fingerprint
from .log import ENTRY_PURPOSE, LogVerifier, entry_hash, signed_content
from .receipts import ACK_PURPOSE, RELAY_PURPOSE, check_ack, verify_chain, verify_relay_receipt

FORMAT = "comity-evidence-1"
BUNDLE_FIELDS = {"format", "network", "message_id", "relay_key", "envelope", "signed_payload",
                 "evidence", "log", "signatures", "exported_by", "exported_at", "exporter_signature"}
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
    for entry in bundle["log"]:
        for s in entry["signatures"]:
            add(f"membership log entry {entry['seq']} ({entry['kind']})", b64d(s["key"]), ENTRY_PURPOSE,
                signed_content(entry), s["sig"])
    return items


def make_bundle(*, network: str, message_id: str, relay_key: str, envelope: dict, signed_payload: dict,
                evidence: list[dict], log: list[dict], exporter: IdentityKey, exported_by: str,
                exported_at: int) -> dict:
    """Assemble and sign a bundle (the caller passes the log from genesis).

    Write it as ``bundle_bytes(bundle)``: ``verify_bundle_bytes`` accepts only
    that exact canonical form, so every byte of the file is covered.
    """
    verifier = LogVerifier(entry_hash(log[0]))
    verifier.extend(log)
    payload = signed_payload["payload"]
    bundle = {"format": FORMAT, "network": {"name": network, "genesis_hash": b64e(entry_hash(log[0]))},
              "message_id": message_id, "relay_key": relay_key, "envelope": envelope,
              "signed_payload": signed_payload, "evidence": evidence, "log": log,
              "exported_by": exported_by, "exported_at": exported_at}
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


@dataclass
class Finding:
    ok: bool
    text: str


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    network_fingerprint: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.findings) and all(f.ok for f in self.findings)

    def add(self, ok: bool, text: str) -> None:
        self.findings.append(Finding(ok, text))


def verify_bundle(bundle: Any, *, expected_network: bytes | None = None) -> Report:
    """Check every signature, hash and link in a bundle; never raises for bad evidence."""
    report = Report()
    try:
        _verify(bundle, report, expected_network)
    except (KeysError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        report.add(False, f"the bundle is malformed or does not verify: {getattr(exc, 'message', exc)}")
    return report


def _verify(bundle: Any, report: Report, expected_network: bytes | None) -> None:
    require_fields(bundle, BUNDLE_FIELDS, what="evidence bundle", error=EvidenceError)
    if bundle["format"] != FORMAT:
        raise EvidenceError(f"unknown bundle format {bundle['format']!r}")
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
    digest = env.envelope_hash(envelope)
    if env.header_view(payload) != env.header_view(envelope) or envelope["id"] != bundle["message_id"]:
        raise EvidenceError("the signed payload does not belong to this envelope")
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

    relay = IdentityPublicKey.from_b64(bundle["relay_key"])
    payload_digest = b64e(env.payload_hash(signed))
    for record in bundle["evidence"]:
        altered = record.get("kind") == "rejected" and record.get("envelope_hash") != b64e(digest)
        if record.get("message_id") != payload["id"] or (record.get("envelope_hash") != b64e(digest) and not altered):
            raise EvidenceError(f"a {record.get('kind')} record is about another message or envelope")
        if "relay_key" in record:
            verify_relay_receipt(record, relay)
            who = record.get("recipient") or ", ".join(record.get("recipients", []))
            report.add(True, f"{record['kind']} ({who}) at {_when(record['time'])}, signed by the relay "
                             f"(key {format_fingerprint(relay.fingerprint())})")
            continue
        member = _member_key_for(verifier, record["recipient"], head["seq"], record)
        if record["kind"] == "acknowledged" and record.get("payload_hash") != payload_digest:
            raise EvidenceError(f"{record['recipient']}'s acknowledgement is for different content")
        text = f"{record['kind']} by {record['recipient']} at {_when(record['time'])}"
        if record["kind"] == "rejected":
            text += f", reason {record['reason']}"
            if altered:
                text += " (what it received differs from what the relay accepted)"
        report.add(True, text + f", signed by {record['recipient']}'s key {format_fingerprint(member.fingerprint())}")
    verify_chain(bundle["evidence"])
    report.add(True, "the receipts form one unbroken chain from the relay's submission receipt")

    expected = signature_list(dict(bundle, _sender_key=sender.identity_key.raw,
                                   evidence=[_with_key(r, verifier, head["seq"]) for r in bundle["evidence"]]))
    if expected != bundle["signatures"]:
        raise EvidenceError("the OpenSSL signature list does not match the records")
    report.add(True, f"the {len(expected)} signatures listed for OpenSSL match the records")

    exporter = verifier.roster.member(bundle["exported_by"])
    if exporter is None:
        raise EvidenceError(f"the exporter {bundle['exported_by']!r} is not in the membership log")
    unsigned = {k: v for k, v in bundle.items() if k != "exporter_signature"}
    _any_key_of(verifier, exporter.handle, 0, BUNDLE_PURPOSE, unsigned, bundle["exporter_signature"])
    report.add(True, f"the bundle as a whole is signed by its exporter, {exporter.handle}")


def _member_key_for(verifier: LogVerifier, handle: str, from_seq: int, record: dict) -> IdentityPublicKey:
    """The recipient's identity key that signed ``record``: any it held from ``from_seq`` on."""
    check_ack(record)
    return _any_key_of(verifier, handle, from_seq, ACK_PURPOSE, _unsigned(record), record["sig"],
                       what=f"{handle}'s {record['kind']}")


def _any_key_of(verifier: LogVerifier, handle: str, from_seq: int, purpose: str, record: dict,
                sig: str, what: str = "the bundle") -> IdentityPublicKey:
    """The identity key, among those ``handle`` held from ``from_seq`` on, that signed ``record``."""
    tried = set()
    for seq in range(from_seq, verifier.seq + 1):
        member = verifier.roster_at(seq).member(handle)
        if member is None or member.identity_key.raw in tried:
            continue
        tried.add(member.identity_key.raw)
        try:
            member.identity_key.verify(purpose, record, sig)
            return member.identity_key
        except KeysError:
            continue
    raise EvidenceError(f"{what} is not signed by any key {handle} held")


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
