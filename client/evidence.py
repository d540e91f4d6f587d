"""Export an evidence bundle of a sent message (format and checks in keys/evidence.py).

The bundle needs three things only the sender's client has together: the
message's content key (kept when it was sent), every receipt and
acknowledgement, and a fresh status statement from the relay, which says where
the relay's receipt chain ends so that none can be left out. The bundle is
verified here exactly as ``comity verify`` will, before it is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from keys.encoding import b64d
from keys.errors import KeysError
from keys.evidence import bundle_bytes, make_bundle, verify_bundle
from keys.identity import IdentityPublicKey
from keys.receipts import evidence_hash
from keys.relay_status import verify_status

from .acks import chained_acks
from .core import Core
from .errors import ClientError, NotFound, TrustError


class EvidenceMixin(Core):

    async def export(self, message_id: str, out: Path, *, network: str | None = None) -> dict:
        """Write the bundle of a message we sent; returns a summary.

        The bundle holds the signed payload (the message in clear), so it is
        written readable by its owner only; hand it on deliberately.
        """
        try:
            network, _ = self.stored_message(message_id, network, direction="out")
        except NotFound as exc:
            raise NotFound(exc.message, hint="evidence bundles are exported by the sender of a message") from None
        if self.state.flags("message", network, message_id) != "out":
            raise ClientError(f"message {message_id} was not accepted by the relay: there is no evidence "
                              "to export yet", hint=f"'comity retry {message_id}' sends it again")
        await self.status(message_id, network=network)   # acknowledgements and receipts, up to date
        sent = self.state.get("message", network, message_id)
        if not sent.get("content_key"):
            raise ClientError(f"message {message_id} was sent by an older comity that did not keep its "
                              "content key: a bundle could not prove its content")
        receipts, statement = await self._relay_status(network, message_id, sent["receipts"])
        bundle = make_bundle(network=network, message_id=message_id, envelope=sent["envelope"],
                             content_key=b64d(sent["content_key"]), signed_payload=sent["signed_payload"],
                             evidence=receipts + chained_acks(receipts, sent.get("acks", []))[0],
                             relay_status=statement,
                             log=self.state.log_entries(network), exporter=self.identity,
                             exported_by=self.handle, exported_at=self.now())
        report = verify_bundle(bundle)
        if not report.ok:
            # The relay's answers did not add up (its status names a receipt it never gave us).
            raise TrustError("the bundle would not verify: "
                             + next(f.text for f in report.findings if not f.ok))
        data = bundle_bytes(bundle)
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ClientError(f"{out} exists: not overwriting it") from None
        except OSError as exc:
            raise ClientError(f"cannot write {out}: {exc.strerror}") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return {"id": message_id, "out": str(out), "records": len(bundle["evidence"]),
                "signatures": len(bundle["signatures"]), "relay_status_time": statement["time"]}

    async def _relay_status(self, network: str, message_id: str,
                            known: list[dict]) -> tuple[list[dict], dict]:
        """The relay's receipts of the message (ours, plus any newer) and its signed status."""
        row, relay, verifier = await self.connect(network)
        answer = await relay.status(network, self.handle, message_id)
        receipts, seen = list(known), {evidence_hash(r) for r in known}
        for receipt in answer.get("receipts", []):
            relay.check_receipt(receipt)
            if receipt["message_id"] == message_id and evidence_hash(receipt) not in seen:
                receipts.append(receipt)
                seen.add(evidence_hash(receipt))
        statement = answer.get("statement")
        try:
            key = IdentityPublicKey.from_b64(statement["relay_key"])
            verifier.check_relay_key(key, statement["time"])
            verify_status(statement, key)
        except (KeysError, KeyError, TypeError) as exc:
            raise TrustError("the relay's status statement does not verify: "
                             f"{getattr(exc, 'message', 'it is malformed')}") from None
        return receipts, statement
