"""Key rotation and roles: rotate, rotate --identity, approve-rotation, set-role.

Encryption keys: a new version is published in every network's log (a
``rotate-encryption-key`` entry signed by the member); senders wrap to it from
then on. The old private key stays in the keystore for the network's grace
period, so messages sealed before the rotation still open, then it is
destroyed (``prune_keys``): that is the forward secrecy.

Identity keys: the member signs a ``rotate-identity-key`` entry with its old
and new keys; an administrator countersigns it. Until then the new key waits
in the keystore as ``pending_identity``.
"""

from __future__ import annotations

from keys.encoding import b64e
from keys.errors import KeysError
from keys.hpke import EncryptionKey
from keys.identity import IdentityKey, format_fingerprint
from keys.log import ENTRY_PURPOSE, make_entry, signed_content
from keys.constants import ROLES

from .core import KEY_LIFETIME, Core
from .errors import ClientError, UsageError
from .keystore import KeptKey

#: warn this long before the encryption key reaches the network's maximum age
WARN_AHEAD = 7 * 86400


class RotationMixin(Core):

    # -- encryption keys ------------------------------------------------------

    async def rotate(self, network: str | None = None) -> dict:
        """A new encryption key, published in ``network`` or in every network."""
        names = [network] if network else await self.joined_networks()
        if not names:
            raise UsageError("you are a member of no network yet")
        now = self.now()
        current = self.secrets.current()
        new = KeptKey(current.version + 1, EncryptionKey.generate(), now, now + KEY_LIFETIME)
        # The keystore learns the key first: whatever is then wrapped to it can be opened.
        self.secrets.encryption_keys.append(new)
        self.keystore.resave(self.secrets)
        published = []
        for name in names:
            row, relay, verifier = await self.connect(name)
            await self._append(name, relay, verifier, "rotate-encryption-key",
                               {"handle": self.handle, "encryption_key": self.key_record(new)})
            published.append(name)
        current.retired_at = now
        self.keystore.resave(self.secrets)
        self.destroy_expired_keys()
        return {"version": new.version, "networks": published}

    def key_age_state(self, max_age: int) -> str:
        """``ok``, ``warn`` (rotation due within WARN_AHEAD) or ``due``."""
        age = self.now() - self.secrets.current().created
        if age >= max_age:
            return "due"
        return "warn" if age >= max_age - WARN_AHEAD else "ok"

    # -- identity keys ----------------------------------------------------------

    async def rotate_identity(self, network: str) -> dict:
        """Sign a rotation to a new identity key; an admin's own rotation lands at once."""
        row, relay, verifier = await self.connect(network)
        if self.secrets.pending_identity is None:
            # A new identity comes with a new encryption key (the log wants a newer version);
            # both are kept from now on, so nothing sealed meanwhile is lost.
            now, current = self.now(), self.secrets.current()
            self.secrets.pending_identity = IdentityKey.generate()
            self.secrets.encryption_keys.append(
                KeptKey(current.version + 1, EncryptionKey.generate(), now, now + KEY_LIFETIME))
            self.keystore.resave(self.secrets)
        new = self.secrets.pending_identity
        record = self._key_record_by(new, self.secrets.current())
        body = {"handle": self.handle, "identity_key": new.public.b64(), "encryption_key": record}
        me = verifier.roster.member(self.handle)
        head = verifier.roster
        entry = make_entry(head.head_hash, head.seq + 1, "rotate-identity-key", body,
                           max(self.now(), self._last_time(verifier)), [self.identity, new])
        if me.is_admin:
            verifier.append(entry)
            await relay.append_log(network, self.handle, entry)
            self._promote_identity(network, entry)
            return {"status": "done", "fingerprint": format_fingerprint(new.public.fingerprint())}
        await relay.submit_rotation(network, self.handle, entry)
        return {"status": "pending", "fingerprint": format_fingerprint(new.public.fingerprint())}

    def _key_record_by(self, identity: IdentityKey, kept: KeptKey) -> dict:
        from keys.hpke import make_key_record
        return make_key_record(identity, kept.key.public, version=kept.version,
                               created=kept.created, not_after=kept.not_after)

    def _promote_identity(self, network: str, entry: dict) -> None:
        from keys.log import entry_hash
        self.state.add_log_entries(network, [(entry["seq"], b64e(entry_hash(entry)), entry)])
        self._adopt_pending_identity(entry["body"]["encryption_key"]["version"])
        for client in self._relays.values():
            client.forget_token(network, self.handle)

    async def approve_rotation(self, network: str, handle: str) -> dict:
        row, relay, verifier = await self.connect(network)
        self._require_admin(verifier, network)
        item = next((r for r in await relay.rotations(network, self.handle) if r["handle"] == handle), None)
        if item is None:
            raise ClientError(f"no identity rotation from {handle} is waiting")
        entry = item["entry"]
        if entry.get("seq") != verifier.seq + 1:
            raise ClientError(f"{handle}'s rotation was signed against an older log",
                              hint=f"ask {handle} to run 'comity rotate --identity --network {network}' again")
        signatures = list(entry.get("signatures", []))
        signatures.append({"key": self.identity.public.b64(),
                           "sig": self.identity.sign_b64(ENTRY_PURPOSE, signed_content(entry))})
        entry = {**entry, "signatures": sorted(signatures, key=lambda s: s["key"])}
        try:
            verifier.append(entry)
        except KeysError as exc:
            self._verifiers.pop(network, None)
            raise ClientError(f"refusing {handle}'s rotation: {exc.message}") from None
        await relay.append_log(network, self.handle, entry)
        from keys.log import entry_hash
        self.state.add_log_entries(network, [(entry["seq"], b64e(entry_hash(entry)), entry)])
        member = verifier.roster.member(handle)
        return {"handle": handle, "fingerprint": format_fingerprint(member.identity_key.fingerprint())}

    # -- roles ----------------------------------------------------------------------

    async def set_role(self, network: str, handle: str, role: str) -> dict:
        if role not in ROLES:
            raise UsageError(f"role must be one of {', '.join(ROLES)}")
        row, relay, verifier = await self.connect(network)
        self._require_admin(verifier, network)
        self.member_of(verifier, handle)
        await self._append(network, relay, verifier, "set-role", {"handle": handle, "role": role})
        return {"handle": handle, "role": role}
