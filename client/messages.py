"""Sending, collecting and reading messages."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from keys import envelope as env
from keys.encoding import b64e
from keys.errors import DecryptionError, EnvelopeError, KeysError

from . import attachments
from .acks import RECEIPT_TYPE, AcksMixin
from .errors import ClientError, NotAMember, NotFound, UsageError

#: progress callback factory: (label, total bytes) -> callable(new bytes)
ProgressFactory = Callable[[str, int], Callable[[int], None]]


def _no_progress(label: str, total: int) -> Callable[[int], None]:
    return lambda n: None


class MessagesMixin(AcksMixin):

    async def send(self, network: str, recipients: list[str], headers: dict, body: str,
                   files: list[Path] = (), progress: ProgressFactory = _no_progress) -> dict:
        """Seal and submit a message; returns ``{"id", "relay_receipt"}``."""
        row, relay, verifier = await self.connect(network)
        recipients = sorted(set(recipients))
        if not recipients:
            raise UsageError("name at least one recipient with --to")
        for handle in recipients:
            self.member_of(verifier, handle)
        policy = verifier.roster.policy
        if len(files) > policy.max_attachments:
            raise UsageError(f"this network allows at most {policy.max_attachments} attachments")
        manifest = []
        for path in files:
            size = _size(path)
            if size > policy.max_attachment_bytes:
                raise UsageError(f"{path} is larger than this network allows "
                                 f"({policy.max_attachment_bytes} bytes)")
            manifest.append(await attachments.upload(
                self.state, relay, network, self.handle, path, self.now(),
                progress(path.name, attachments.ciphertext_size(size))))
        try:
            envelope, signed, content_key = env.seal_keeping_key(
                self.identity, self.handle, verifier.roster, recipients, headers, body, manifest,
                created=self.now())
        except EnvelopeError as exc:
            raise ClientError(exc.message) from None
        receipt = await relay.submit(network, self.handle, envelope)
        self.state.put("message", network, envelope["id"], {
            "direction": "out", "envelope": envelope, "signed_payload": signed,
            "content_key": b64e(content_key),      # for evidence bundles (client/evidence.py)
            "receipts": [receipt], "verified": True, "reason": None, "at": self.now()},
            at=self.now(), flags="out")
        return {"id": envelope["id"], "relay_receipt": receipt}

    async def inbox(self, network: str | None = None, progress: ProgressFactory = _no_progress,
                    *, ack: bool = True) -> list[dict]:
        """Collect, verify, store and acknowledge new messages from one network or all.

        Returns summaries of the new messages (acknowledgement receipts addressed
        to us are folded into our sent messages' evidence, not returned).
        """
        if network:
            new = await self._collect(network, progress, ack=ack)
        else:
            new = []
            for row in self.state.networks():
                try:
                    new.extend(await self._collect(row.name, progress, ack=ack))
                except NotAMember:
                    if row.status != "pending":   # still awaiting approval: nothing to collect yet
                        raise
        self.destroy_expired_keys()              # forward secrecy even without comity watch
        return new

    async def _collect(self, network: str, progress: ProgressFactory = _no_progress, *,
                       ack: bool = True, exec_pending: bool = False) -> list[dict]:
        row, relay, verifier = await self.connect(network)
        await self._flush_outbox(network, relay)          # acknowledgements left by a crash
        collected = []
        cursor = 0   # the relay lists only what we have not marked collected
        while True:
            page = await relay.mailbox(network, self.handle, cursor)
            if not page:
                break
            for item in page:
                cursor = item["cursor"]
                if self.state.has("message", network, item["id"]):
                    # Stored before a crash, or replayed by the relay: never twice.
                    await relay.collected(network, self.handle, item["id"])
                    continue
                envelope, delivery = await relay.fetch(network, self.handle, item["id"])
                record, opened = await self._open(network, relay, envelope, progress)
                record["receipts"] = [delivery] if delivery else []
                if opened is not None and opened.headers["type"] == RECEIPT_TYPE:
                    # Evidence about a message we sent: never listed as mail, never acknowledged.
                    with self.state.transaction():
                        self._take_receipt(network, opened)
                        self.state.put("message", network, envelope["id"], record, at=self.now(),
                                       flags="receipt")
                    await relay.collected(network, self.handle, item["id"])
                    continue
                # Stored (synced to disk) with its acknowledgement before the relay is told:
                # a crash in between means a fetch again next time, never a lost message.
                flags = "in" if record["verified"] else "quarantine"
                with self.state.transaction():
                    if ack:
                        record["ack"] = self._queue_ack(network, verifier, record, delivery)
                    if exec_pending and record["verified"]:
                        record["exec"] = "pending"     # comity watch --exec runs it (client/watch.py)
                    self.state.put("message", network, envelope["id"], record, at=self.now(), flags=flags)
                await relay.collected(network, self.handle, item["id"])
                collected.append(self.summary(network, envelope["id"], record))
        await self._flush_outbox(network, relay)
        return collected

    async def _open(self, network: str, relay, envelope: dict, progress: ProgressFactory):
        record = {"direction": "in", "envelope": envelope, "signed_payload": None,
                  "verified": False, "reason": None, "at": self.now()}
        if envelope.get("id") is None or not isinstance(envelope.get("id"), str):
            record["reason"] = "bad-envelope"
            return record, None
        try:
            # latest: a sender removed since is refused even for a message signed before;
            # otherwise a removed member and a colluding relay could backdate mail
            # (docs/decisions.md).
            opened = env.open(envelope, recipient_handle=self.handle,
                              decryption_keys=self.secrets.decryption_keys(),
                              roster_at=self.roster_at(network),
                              latest=self._verifiers[network].roster)
        except (EnvelopeError, DecryptionError) as exc:
            record["reason"] = exc.reason or "bad-envelope"
            return record, None
        except KeysError:
            record["reason"] = "bad-envelope"
            return record, None
        record["signed_payload"] = opened.signed_payload
        for entry in opened.manifest:
            try:
                await attachments.download(self.state, relay, network, self.handle, entry,
                                           progress(entry["name"], entry["ciphertext_size"]))
            except ClientError as exc:
                record["reason"] = "attachment-missing"
                record["problem"] = exc.message
                return record, None
        record["verified"] = True
        return record, opened

    def summary(self, network: str, message_id: str, record: dict) -> dict:
        payload = (record.get("signed_payload") or {}).get("payload") or {}
        headers = payload.get("headers", {})
        return {
            "id": message_id, "network": network,
            "from": record["envelope"].get("sender"),
            "type": headers.get("type"), "subject": headers.get("subject"),
            "priority": headers.get("priority"), "received_at": record["at"],
            "verified": record["verified"],
            **({"reason": record["reason"]} if not record["verified"] else {}),
            "attachments": [{"name": a["name"], "size": a["size"]} for a in payload.get("manifest", [])],
        }

    def messages(self, network: str | None = None) -> list[dict]:
        return [self.summary(net, mid, record)
                for net, mid, _, flags, record in self.state.rows("message", network)
                if flags in ("in", "quarantine")]

    def read(self, message_id: str, save_to: Path | None = None) -> dict:
        found = self.state.find("message", message_id)
        if found is None:
            raise NotFound(f"no message {message_id} here", hint="'comity inbox' lists messages")
        network, record = found
        if not record["verified"]:
            raise ClientError(f"message {message_id} failed verification ({record['reason']}) "
                              "and is kept aside unread")
        payload = record["signed_payload"]["payload"]
        saved = []
        for entry in payload["manifest"]:
            path = attachments.save(self.state, entry, save_to) if save_to is not None else None
            saved.append({"name": entry["name"], "size": entry["size"],
                          "saved_to": str(path) if path else None})
        return {"id": message_id, "network": network, "from": payload["sender"],
                "to": payload["recipients"], "type": payload["headers"]["type"],
                "subject": payload["headers"]["subject"], "body": payload["body"],
                "headers": payload["headers"], "verified": True, "created": payload["created"],
                "direction": record["direction"], "attachments": saved}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise ClientError(f"file not found: {path}") from None
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from None
