"""Sending, collecting, reading and retrying messages.

A stored message (sent or received) is never replaced: rows are inserted once,
keyed by (network, id), with the envelope hash beside them; only our own sent
message's evidence is updated in place. What to do with replays, id collisions
and transient failures is in client/intake.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from keys import envelope as env
from keys.encoding import b64e
from keys.errors import DecryptionError, EnvelopeError, KeysError

from . import attachments, freshness, intake
from .acks import RECEIPT_TYPE, AcksMixin
from .core import LogBehind
from .errors import (ClientError, NotAMember, NotFound, RelayRefused, RelayUnreachable, TrustError,
                     UsageError)

#: progress callback factory: (label, total bytes) -> callable(new bytes)
ProgressFactory = Callable[[str, int], Callable[[int], None]]
#: relay refusals of a submission that another try can change; any other refusal is final
RETRYABLE_REFUSALS = frozenset({"rate-limited", "unavailable", "bad-token", "not-a-member"})


def _no_progress(label: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def _digest(envelope: dict) -> str:
    try:
        return b64e(env.envelope_hash(envelope))
    except (KeysError, TypeError, ValueError):
        return ""


class MessagesMixin(AcksMixin):

    # -- sending ------------------------------------------------------------------------------

    async def send(self, network: str, recipients: list[str], headers: dict, body: str,
                   files: list[Path] = (), progress: ProgressFactory = _no_progress) -> dict:
        """Seal and submit a message; returns ``{"id", "relay_receipt"}``.

        The sealed message is stored as ``queued`` first: if the relay cannot be
        reached, refuses for the moment, or answers with a receipt that does not
        match what we sent, it stays queued and is sent again by ``retry``,
        ``inbox`` or ``watch``; it counts as sent only with a matching receipt.
        """
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
        verifier = await freshness.ensure_fresh(self, network, verifier)   # uploads take time
        try:
            envelope, signed, content_key = env.seal_keeping_key(
                self.identity, self.handle, verifier.roster, recipients, headers, body, manifest,
                created=self.now())
        except EnvelopeError as exc:
            raise ClientError(exc.message) from None
        record = {"direction": "out", "envelope": envelope, "signed_payload": signed,
                  "content_key": b64e(content_key),      # for evidence bundles (client/evidence.py)
                  "receipts": [], "verified": True, "reason": None, "at": self.now()}
        self.state.insert("message", network, envelope["id"], record, at=self.now(), flags="queued",
                          digest=_digest(envelope))
        receipt = await self._submit_queued(network, relay, record)
        return {"id": envelope["id"], "relay_receipt": receipt}

    async def _submit_queued(self, network: str, relay, record: dict) -> dict:
        """Submit a queued message of ours; it becomes ``out`` only with a matching receipt."""
        envelope = record["envelope"]
        message_id = envelope["id"]
        again = f"'comity retry {message_id} --network {network}' sends it again"
        try:
            receipt = await relay.submit(network, self.handle, envelope)
        except RelayUnreachable as exc:
            raise RelayUnreachable(f"{exc.message}; message {message_id} is queued, not sent",
                                   hint=again + " (so do 'comity inbox' and 'comity watch')") from None
        except TrustError as exc:
            raise TrustError(f"{exc.message}; message {message_id} is not counted as accepted and "
                             "stays queued", hint=again + "; if this repeats, tell your administrator") from None
        except RelayRefused as exc:
            if exc.code in RETRYABLE_REFUSALS:
                raise RelayRefused(f"{exc.message}; message {message_id} is queued, not sent",
                                   code=exc.code, status=exc.status, hint=again) from None
            record["reason"] = exc.code or "refused"
            self.state.update("message", network, message_id, record, flags="refused")
            raise
        record["receipts"] = [receipt]
        self.state.update("message", network, message_id, record, flags="out")
        return receipt

    async def _flush_queued(self, network: str, relay) -> int:
        """Send again what ``send`` left queued; failures stay queued and are reported."""
        sent = 0
        for _, message_id, _, _, record in list(self.state.rows("message", network, flags="queued")):
            try:
                await self._submit_queued(network, relay, record)
                sent += 1
            except ClientError as exc:
                self.notice(f"queued message {message_id} is still not sent: {exc.message}")
        return sent

    # -- collecting ---------------------------------------------------------------------------

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
                       ack: bool = True, exec_pending: bool = False, now_ids: frozenset = frozenset()
                       ) -> list[dict]:
        """``now_ids``: message ids to try now even if they are backing off (``retry``)."""
        row, relay, verifier = await self.connect(network)
        await self._flush_outbox(network, relay)          # acknowledgements left by a crash
        await self._flush_queued(network, relay)          # our own messages not sent yet
        collected = []
        cursor = 0   # the relay lists only what we have not marked collected
        while True:
            page = await relay.mailbox(network, self.handle, cursor)
            if not page:
                break
            for item in page:
                cursor = item["cursor"]
                waiting = self.state.get("retry", network, item["id"])
                if waiting is not None and waiting["next_at"] > self.now() and item["id"] not in now_ids:
                    continue                              # backing off after a transient failure
                envelope, delivery, acceptance = await relay.fetch(network, self.handle, item["id"])
                summary = await self._take(network, relay, verifier, item["id"], envelope, delivery,
                                           progress, ack=ack, exec_pending=exec_pending,
                                           acceptance=acceptance)
                if summary is not None:
                    collected.append(summary)
        await freshness.settle_newer_heads(self, network)   # acks that name a newer log head
        await self._flush_outbox(network, relay)
        return collected

    async def _take(self, network: str, relay, verifier, listed_id: str, envelope, delivery,
                    progress: ProgressFactory, *, ack: bool, exec_pending: bool,
                    acceptance: dict | None = None) -> dict | None:
        """Store one fetched envelope (or recognise it); returns a summary if it is new mail."""
        message_id = envelope.get("id") if isinstance(envelope, dict) else None
        if not isinstance(message_id, str) or not message_id:
            message_id = listed_id
        if message_id != listed_id:
            self.notice(f"the relay listed message {listed_id} in {network} but handed over "
                        f"{message_id}: the relay is misbehaving")
        digest = _digest(envelope) if isinstance(envelope, dict) else ""
        if self._known(network, message_id, digest, listed_id):
            await relay.collected(network, self.handle, listed_id)
            return None
        record, opened = await self._open(network, relay, envelope, progress, acceptance)
        if record["reason"] in intake.TRANSIENT_REASONS:
            self._back_off(network, listed_id, record)
            return None
        self.state.delete("retry", network, listed_id)
        record["receipts"] = [delivery] if delivery else []
        if opened is not None and opened.headers["type"] == RECEIPT_TYPE:
            # Evidence about a message we sent: never listed as mail, never acknowledged.
            with self.state.transaction():
                self._take_receipt(network, opened)
                self.state.insert("message", network, message_id, record, at=self.now(),
                                  flags="receipt", digest=digest)
            await relay.collected(network, self.handle, listed_id)
            return None
        # Stored (synced to disk) with its acknowledgement before the relay is told:
        # a crash in between means a fetch again next time, never a lost message.
        flags = "in" if record["verified"] else "quarantine"
        with self.state.transaction():
            if ack:
                record["ack"] = self._queue_ack(network, verifier, record, delivery)
            if exec_pending and record["verified"]:
                record["exec"] = "pending"     # comity watch --exec runs it (client/watch.py)
            self.state.insert("message", network, message_id, record, at=self.now(), flags=flags,
                              digest=digest)
        await relay.collected(network, self.handle, listed_id)
        return self.summary(network, message_id, record)

    def _known(self, network: str, message_id: str, digest: str, listed_id: str) -> bool:
        """True for an envelope we hold already (a replay) or one that collides with it."""
        stored = self.state.digest("message", network, message_id)
        if stored is None:
            return False
        if stored == "":               # a row from before digests were kept
            stored = _digest(self.state.get("message", network, message_id)["envelope"])
        if digest and stored == digest:
            self.notice(f"the relay delivered message {message_id} in {network} again (a replay): "
                        "ignored")
            return True
        self.state.put("collision", network, intake.collision_id(message_id, digest or listed_id),
                       {"id": message_id, "listed_as": listed_id, "digest": digest, "at": self.now()},
                       at=self.now())
        self.notice(f"the relay delivered a different envelope under the id {message_id} of a message "
                    f"already held in {network}: kept apart, not shown, not acknowledged (a tampered "
                    "copy or a re-used id)")
        return True

    def _back_off(self, network: str, listed_id: str, record: dict) -> None:
        waiting = self.state.get("retry", network, listed_id) or {"attempts": 0, "first_at": self.now()}
        waiting["attempts"] += 1
        waiting["next_at"] = self.now() + intake.retry_delay(waiting["attempts"])
        waiting["reason"], waiting["problem"] = record["reason"], record.get("problem")
        self.state.put("retry", network, listed_id, waiting, at=self.now())
        self.notice(f"message {listed_id} in {network} cannot be opened yet ({record['reason']}: "
                    f"{record.get('problem') or 'a temporary fault'}); attempt {waiting['attempts']}, "
                    f"retried automatically, or now with 'comity retry {listed_id} --network {network}'")

    async def _open(self, network: str, relay, envelope: dict, progress: ProgressFactory,
                    acceptance: dict | None = None):
        """Verify and decrypt; returns (record, opened or None). A failure's ``reason`` in
        ``intake.TRANSIENT_REASONS`` is one a later attempt may change."""
        record = {"direction": "in", "envelope": envelope, "signed_payload": None,
                  "verified": False, "reason": None, "at": self.now(), "acceptance": acceptance}
        if not isinstance(envelope, dict) or not isinstance(envelope.get("id"), str):
            record["reason"] = "bad-envelope"
            return record, None
        verifier = self._verifiers[network]
        try:
            opened = env.open(envelope, recipient_handle=self.handle,
                              decryption_keys=self.secrets.decryption_keys(),
                              roster_at=self.roster_at(network),
                              **freshness.open_arguments(self, network, acceptance))
        except LogBehind as exc:
            record["reason"], record["problem"] = "log-behind", exc.message
            return record, None
        except (EnvelopeError, DecryptionError) as exc:
            if exc.reason == "superseded-key" and acceptance is None:
                # Without the relay's signed acceptance nothing says when it was submitted: a
                # relay that leaves it out must not earn a signed rejection. Ask again later.
                record["reason"] = "acceptance-missing"
                record["problem"] = ("the sender's key was replaced since, and the relay did not hand "
                                     "over its signed acceptance of the message")
                return record, None
            record["reason"] = exc.reason or "bad-envelope"
            if exc.reason == "retired-key":     # tell the sender which log it should have seen
                record["newer_head"] = verifier.roster.head()
            return record, None
        except KeysError:
            record["reason"] = "bad-envelope"
            return record, None
        latest = verifier.roster.member(opened.sender.handle)
        if opened.headers["type"] != RECEIPT_TYPE and (latest is None or not latest.active):
            # A sender removed since is refused even for a message signed before; otherwise a
            # removed member and a colluding relay could backdate mail (docs/decisions.md). An
            # acknowledgement is the exception: it was earned while the signer was a member.
            record["reason"] = "removed-member"
            record["signed_payload"] = opened.signed_payload
            return record, None
        record["signed_payload"] = opened.signed_payload
        if opened.stale and opened.headers["type"] != RECEIPT_TYPE:   # the ack will say so
            record["newer_head"] = verifier.roster.head()
            self.notice(freshness.stale_report(network, opened.id, opened))
        for entry in opened.manifest:
            try:
                await attachments.download(self.state, relay, network, self.handle, entry,
                                           progress(entry["name"], entry["ciphertext_size"]))
            except ClientError as exc:
                record["reason"], record["problem"] = "attachment-unavailable", exc.message
                return record, None
        record["verified"] = True
        return record, opened

    # -- reading ------------------------------------------------------------------------------

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

    def stored_message(self, message_id: str, network: str | None = None, *,
                       direction: str | None = None) -> tuple[str, dict]:
        """The one stored message with this id (in ``network`` if given); refuses to guess."""
        found = [(net, record) for net, record in self.state.find("message", message_id, network)
                 if direction is None or record["direction"] == direction]
        if not found:
            what = "sent message" if direction == "out" else "message"
            where = f" in {network}" if network else ""
            raise NotFound(f"no {what} {message_id}{where} here",
                           hint="'comity inbox' lists messages" if direction != "out" else None)
        if len(found) > 1:
            raise UsageError(f"message id {message_id} exists in several networks "
                             f"({', '.join(net for net, _ in found)}): say which with --network")
        return found[0]

    def read(self, message_id: str, save_to: Path | None = None, *, network: str | None = None) -> dict:
        network, record = self.stored_message(message_id, network)
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

    # -- retrying -----------------------------------------------------------------------------

    async def retry(self, message_id: str, network: str | None = None) -> dict:
        """Try a message again now: our queued one is submitted, a received one that is waiting
        after a transient failure is fetched and opened, a quarantined one is verified anew."""
        waiting = [net for net, _ in self.state.find("retry", message_id, network)]
        stored = [(net, rec) for net, rec in self.state.find("message", message_id, network)]
        places = sorted(set(waiting) | {net for net, _ in stored})
        if not places:
            raise NotFound(f"no message {message_id} waits for a retry here")
        if len(places) > 1:
            raise UsageError(f"message id {message_id} exists in several networks "
                             f"({', '.join(places)}): say which with --network")
        network = places[0]
        flags = self.state.flags("message", network, message_id)
        if flags == "queued":
            row, relay, verifier = await self.connect(network)
            receipt = await self._submit_queued(network, relay, dict(stored[0][1]))
            return {"id": message_id, "network": network, "status": "accepted", "relay_receipt": receipt}
        if waiting:
            new = await self._collect(network, now_ids=frozenset({message_id}))
            left = self.state.get("retry", network, message_id)
            if left is not None:
                return {"id": message_id, "network": network, "status": "waiting",
                        "reason": left["reason"], "problem": left.get("problem"),
                        "attempts": left["attempts"]}
            mine = [m for m in new if m["id"] == message_id]
            return {"id": message_id, "network": network,
                    "status": "collected" if mine and mine[0]["verified"] else "done"}
        if flags == "quarantine":
            return await self._reverify(network, message_id, stored[0][1])
        raise UsageError(f"message {message_id} does not need a retry (it is {flags})")

    async def _reverify(self, network: str, message_id: str, record: dict) -> dict:
        """Open a quarantined message again from the envelope we kept (after a log repair)."""
        row, relay, verifier = await self.connect(network)
        fresh, opened = await self._open(network, relay, record["envelope"], _no_progress,
                                                    record.get("acceptance"))
        if opened is None:
            return {"id": message_id, "network": network, "status": "quarantined",
                    "reason": fresh["reason"], "problem": fresh.get("problem")}
        record.update(verified=True, reason=None, signed_payload=fresh["signed_payload"])
        delivery = record["receipts"][0] if record.get("receipts") else None
        with self.state.transaction():
            record["ack"] = self._queue_ack(network, verifier, record, delivery)
            self.state.update("message", network, message_id, record, flags="in")
        await self._flush_outbox(network, relay)
        return {"id": message_id, "network": network, "status": "verified"}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise ClientError(f"file not found: {path}") from None
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from None
