"""Recovering from a fork of the membership log (docs/operations.md "A fork of the log").

A fork means this machine holds a verified log entry at some position and the
relay now serves a different, also validly signed one at that position (or a
chain that no longer extends ours). Both cannot be the network's history: the
relay was restored from an old backup and an administrator appended other
entries, or someone showed two members two histories. The client refuses to
go on (``TrustError``) and records both sides as a ``fork`` row.

Getting out is deliberate, never automatic: ``fork_report`` shows both heads;
the user asks an administrator, out of band, for the hash of the network's
true head; ``repin`` then accepts the relay's chain only if it verifies from
the pinned genesis *and* contains that hash at that position. Nothing else
moves: the genesis pin stays, and a different genesis is another network.
"""

from __future__ import annotations

import re

from keys.encoding import b64d, b64e
from keys.errors import KeysError
from keys.log import LogVerifier, entry_hash

from .core import Core
from .errors import ClientError, TrustError, UsageError

#: a head hash as an administrator reads it out: base64url (43 characters) or hex (64)
_HEX = re.compile(r"^[0-9a-f]{64}$")


def parse_head_hash(text: str) -> bytes:
    cleaned = "".join(text.split())
    if _HEX.match(cleaned.lower()):
        return bytes.fromhex(cleaned.lower())
    try:
        return b64d(cleaned, length=32)
    except KeysError:
        raise UsageError("the head hash must be 64 hex digits or 43 base64url characters, as "
                         "'comity network fork' prints it") from None


class ForksMixin(Core):

    async def fork_report(self, network: str) -> dict:
        """Both sides of a recorded fork, and both heads, for an out-of-band comparison."""
        row = self.network_row(network)
        fork = self.state.get("fork", network, "current")
        if fork is None:
            raise ClientError(f"no fork of the {network} log is recorded here")
        verifier = self._local_verifier(row)
        relay_head = None
        try:
            served = await self._relay_chain(network)
            if served:
                relay_head = {"seq": served[-1]["seq"], "hash": b64e(entry_hash(served[-1]))}
        except ClientError as exc:
            relay_head = {"error": exc.message}
        return {"network": network, "fork_at": fork["seq"], "ours": fork["ours"], "theirs": fork["theirs"],
                "our_head": {"seq": verifier.seq, "hash": b64e(verifier.hash_at(verifier.seq))},
                "relay_head": relay_head}

    async def repin(self, network: str, head_hash: bytes, head_seq: int | None = None) -> dict:
        """Replace our log by the relay's chain, which must verify from the pinned genesis and hold
        ``head_hash`` (confirmed by an administrator out of band) at ``head_seq`` or anywhere."""
        row = self.network_row(network)
        if self.state.get("fork", network, "current") is None:
            # Re-pinning is the way out of a recorded fork, never a way to move a log back.
            raise ClientError(f"no fork of the {network} log is recorded here: nothing to repin")
        served = await self._relay_chain(network)
        verifier = LogVerifier(b64d(row.genesis_hash))
        try:
            verifier.extend(served)
        except KeysError as exc:
            raise TrustError(f"the relay's {network} log does not verify from the pinned genesis: "
                             f"{exc.message}", hint="this is not a fork to repair here: tell your "
                                                    "administrator") from None
        hashes = {e["seq"]: entry_hash(e) for e in served}
        found = [seq for seq, digest in hashes.items() if digest == head_hash
                 and (head_seq is None or seq == head_seq)]
        if not found:
            raise TrustError("the relay's log does not contain the head the administrator confirmed",
                             hint="check the hash with the administrator again; do not repin "
                                  "to anything else")
        keep = [e for e in served if e["seq"] <= found[0]]
        with self.state.transaction():
            self.state.db.execute("DELETE FROM log_entries WHERE network = ?", [network])
            self.state.add_log_entries(network, [(e["seq"], b64e(entry_hash(e)), e) for e in keep])
            self.state.delete("fork", network, "current")
        self._verifiers.pop(network, None)
        return {"network": network, "seq": found[0], "hash": b64e(head_hash)}

    async def _relay_chain(self, network: str) -> list[dict]:
        """The relay's whole log, unverified (the caller verifies), after authenticating."""
        row, relay = self.relay_for(network)
        await self._authenticate(row, relay)
        return [entry async for entry in relay.log(network, 0, handle=self.handle)]
