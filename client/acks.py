"""Acknowledgement receipts and message status (DESIGN.md §6).

Recipient side: after a message is verified and stored, its client seals an
acknowledgement (or a rejection with the reason) signed by its identity key,
chained after the relay's delivery receipt, and sends it to the sender as an
end-to-end encrypted message of type ``receipt``. The sealed acknowledgement
goes into a local outbox in the same transaction as the message, so a crash
can delay it but never lose it or send two different ones: the outbox
resubmits the very same envelope, which the relay accepts idempotently.

Sender side: incoming ``receipt`` messages are verified (signature by the
recipient's key from the log, names our message, our envelope hash and our
payload hash) and folded into the sent message's evidence; they are not
listed as mail.
"""

from __future__ import annotations

import logging

from keys import envelope as env
from keys.encoding import b64e, canonical, parse
from keys.errors import KeysError
from keys.receipts import (ACK_REJECT_REASONS, evidence_hash, make_ack, verify_ack,
                           verify_chain)

from . import freshness
from .core import Core
from .errors import RelayRefused, TrustError

log = logging.getLogger("comity.client")

RECEIPT_TYPE = "receipt"


class AcksMixin(Core):

    # -- recipient side -------------------------------------------------------

    def _queue_ack(self, network: str, verifier, record: dict, delivery: dict | None) -> dict | None:
        """Seal the acknowledgement of a collected message into the outbox; return it.

        Call inside the transaction that stores the message.
        """
        envelope = record["envelope"]
        sender = verifier.roster.member(envelope.get("sender")) if isinstance(envelope.get("sender"), str) else None
        if delivery is None or sender is None or not sender.active or sender.handle == self.handle:
            return None      # nobody we could encrypt an acknowledgement to
        try:
            envelope_digest = env.envelope_hash(envelope)
        except KeysError:
            return None
        if record["verified"]:
            kind, reason = "acknowledged", None
            payload_digest = env.payload_hash(record["signed_payload"])
        else:
            kind = "rejected"
            reason = record["reason"] if record["reason"] in ACK_REJECT_REASONS else "bad-envelope"
            payload_digest = env.payload_hash(record["signed_payload"]) if record.get("signed_payload") else None
        try:
            ack = make_ack(self.identity, kind, network=verifier.roster.genesis_hash,
                           message_id=envelope["id"], envelope_hash=envelope_digest,
                           sender=sender.handle, recipient=self.handle, time=self.now(),
                           prev=evidence_hash(delivery), payload_hash=payload_digest, reason=reason,
                           newer_head=record.get("newer_head"))
            sealed, _ = env.seal(self.identity, self.handle, verifier.roster, [sender.handle],
                                 {"type": RECEIPT_TYPE, "subject": f"{kind}: {envelope['id']}",
                                  "in_reply_to": envelope["id"]},
                                 canonical(ack).decode("utf-8"), created=self.now())
        except KeysError as exc:
            log.warning("cannot acknowledge %s: %s", envelope.get("id"), exc.message)
            return None
        self.state.put("outbox", network, sealed["id"], {"envelope": sealed, "for": envelope["id"]},
                       at=self.now())
        return ack

    async def _flush_outbox(self, network: str, relay) -> int:
        """Submit queued acknowledgements; what the relay cannot take now stays queued."""
        sent = 0
        for _, row_id, _, _, item in list(self.state.rows("outbox", network)):
            try:
                await relay.submit(network, self.handle, item["envelope"])
            except RelayRefused as exc:
                if exc.code in ("bad-envelope", "message-id-reused", "forbidden"):
                    # Permanent: the sender left the network, or it was sent already.
                    log.warning("dropping acknowledgement of %s: %s", item["for"], exc.message)
                    self.state.delete("outbox", network, row_id)
                    continue
                raise
            except TrustError as exc:
                # The relay's receipt does not match: keep it queued, say so, go on.
                self.notice(f"the acknowledgement of {item['for']} stays queued: {exc.message}")
                continue
            self.state.delete("outbox", network, row_id)
            sent += 1
        return sent

    # -- sender side ----------------------------------------------------------

    def _take_receipt(self, network: str, opened) -> bool:
        """Fold a verified ``receipt`` message into our sent message's evidence."""
        try:
            ack = verify_ack(parse(opened.body), opened.sender.identity_key)
        except KeysError as exc:
            self.notice(f"ignoring a receipt from {opened.sender.handle}: {exc.message}")
            return False
        sent = self.state.get("message", network, ack["message_id"])
        if (ack["recipient"] != opened.sender.handle or ack["sender"] != self.handle or sent is None
                or sent["direction"] != "out" or ack["recipient"] not in sent["envelope"]["recipients"]
                or (ack["kind"] == "acknowledged"
                    and ack["envelope_hash"] != b64e(env.envelope_hash(sent["envelope"])))
                or ("payload_hash" in ack and ack["payload_hash"] != b64e(env.payload_hash(sent["signed_payload"])))):
            self.notice(f"ignoring a receipt from {opened.sender.handle} that does not match a message "
                        "we sent")
            return False
        others = [a for a in sent.get("acks", []) if a["recipient"] != ack["recipient"]]
        earlier = [a for a in sent.get("acks", []) if a["recipient"] == ack["recipient"]]
        current = self._verifiers[network].roster.member(ack["recipient"])
        if earlier and not _replaces(earlier[0], ack, current, opened.sender.identity_key):
            return True
        sent["acks"] = others + [ack]
        self.state.update("message", network, ack["message_id"], sent, flags=self.state.flags(
            "message", network, ack["message_id"]))
        freshness.note_newer_head(self, network, ack)     # the recipient saw a newer log
        return True

    async def status(self, message_id: str, *, network: str | None = None, collect: bool = True,
                     ack: bool = True) -> dict:
        """Per-recipient evidence of a message we sent, refreshed from the relay."""
        network, sent = self.stored_message(message_id, network, direction="out")
        if collect:
            await self._collect(network, ack=ack)       # picks up acknowledgements (and sends queued)
            sent = self.state.get("message", network, message_id)
        flags = self.state.flags("message", network, message_id)
        if flags != "out":
            return self.evidence_summary(message_id, sent, state=flags)
        row, relay, verifier = await self.connect(network)
        answer = await relay.status(network, self.handle, message_id)
        known = {evidence_hash(r) for r in sent["receipts"]}
        for receipt in answer["receipts"]:
            relay.check_receipt(receipt)
            if receipt["message_id"] == message_id and evidence_hash(receipt) not in known:
                sent["receipts"].append(receipt)
                known.add(evidence_hash(receipt))
        acks, loose = chained_acks(sent["receipts"], sent.get("acks", []))
        for ack in loose:
            # A recipient (or a relay handing it a bogus delivery receipt) cannot break our whole
            # evidence with one ack that hangs off nothing: it is kept, not counted, and said.
            self.notice(f"{ack['recipient']}'s {ack['kind']} of {message_id} does not follow the relay's "
                        "delivery receipt to them: not counted as evidence")
        try:
            verify_chain(sent["receipts"] + acks)
        except KeysError as exc:
            raise TrustError(f"the evidence of {message_id} does not chain: {exc.message}") from None
        self.state.update("message", network, message_id, sent, flags="out")
        summary = self.evidence_summary(message_id, dict(sent, acks=acks))
        for handle, r in summary["recipients"].items():
            member = verifier.roster.member(handle)
            # An acknowledgement earned while the signer was a member stays evidence; it is shown
            # as signed by a member removed since, not dropped (docs/evidence.md).
            r["removed_since"] = member is None or not member.active
        return summary

    def evidence_summary(self, message_id: str, sent: dict, state: str = "out") -> dict:
        recipients = {h: {"accepted": None, "delivered": None, "acknowledged": None, "rejected": None,
                          "not_collected": None, "reason": None, "signed_by": {}}
                      for h in sent["envelope"]["recipients"]}
        for record in sent["receipts"] + sent.get("acks", []):
            kind = record["kind"]
            if kind == "submission-accepted":
                for h in recipients:
                    recipients[h]["accepted"] = record["time"]
                    recipients[h]["signed_by"]["accepted"] = "relay"
                continue
            h = record.get("recipient")
            if h not in recipients:
                continue
            field = {"delivered": "delivered", "not-collected": "not_collected",
                     "acknowledged": "acknowledged", "rejected": "rejected"}.get(kind)
            if field:
                recipients[h][field] = record["time"]
                recipients[h]["signed_by"][field] = h if kind in ("acknowledged", "rejected") else "relay"
            if kind == "rejected":
                recipients[h]["reason"] = record["reason"]
        return {"id": message_id, "subject": sent["signed_payload"]["payload"]["headers"]["subject"],
                "state": {"out": "accepted"}.get(state, state), "recipients": recipients,
                "warnings": sent.get("warnings", [])}


def _replaces(held: dict, new: dict, current, new_key) -> bool:
    """Whether a recipient's new acknowledgement replaces the one we hold.

    Both verified under a key the recipient held. One signed by the recipient's current
    identity key (``current``: the recipient in our newest roster) wins over one that is not:
    a thief's acknowledgement by a stolen old key must not lock out the genuine one, whichever
    came first. Otherwise a later ``acknowledged`` wins over a ``rejected`` (a message retried
    after a transient fault is acknowledged after all); an ``acknowledged`` is never replaced
    by a rejection.
    """
    if current is not None:
        new_current, held_current = new_key == current.identity_key, _signed_by(held, current)
        if new_current != held_current:
            return new_current
    return held["kind"] == "rejected" and new["kind"] == "acknowledged"


def _signed_by(ack: dict, member) -> bool:
    try:
        verify_ack(ack, member.identity_key)
    except KeysError:
        return False
    return True


def chained_acks(receipts: list[dict], acks: list[dict]) -> tuple[list[dict], list[dict]]:
    """Split acknowledgements into those that follow the relay's ``delivered`` receipt of their
    recipient (evidence) and those that do not (kept, never counted)."""
    delivered = {r["recipient"]: b64e(evidence_hash(r)) for r in receipts if r.get("kind") == "delivered"}
    chained = [a for a in acks if delivered.get(a["recipient"]) == a["prev"]]
    return chained, [a for a in acks if delivered.get(a["recipient"]) != a["prev"]]
