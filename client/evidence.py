"""Export an evidence bundle of a sent message (format and checks in keys/evidence.py)."""

from __future__ import annotations

import os
from pathlib import Path

from keys.evidence import bundle_bytes, make_bundle

from .core import Core
from .errors import ClientError, NotFound


class EvidenceMixin(Core):

    async def export(self, message_id: str, out: Path, *, network: str | None = None,
                     refresh: bool = True) -> dict:
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
        if refresh:
            await self.status(message_id, network=network)
        sent = self.state.get("message", network, message_id)
        row = self.network_row(network)
        bundle = make_bundle(network=network, message_id=message_id, relay_key=row.relay_key,
                             envelope=sent["envelope"], signed_payload=sent["signed_payload"],
                             evidence=sent["receipts"] + sent.get("acks", []),
                             log=self.state.log_entries(network), exporter=self.identity,
                             exported_by=self.handle, exported_at=self.now())
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
                "signatures": len(bundle["signatures"])}
