"""Key rotation and roles: rotate, rotate --identity, approve-rotation, set-role.

Encryption keys: a new version is published in every network's log (a
``rotate-encryption-key`` entry signed by the member); senders wrap to it from
then on. The old private key stays in the keystore for the network's grace
period, so messages sealed before the rotation still open, then it is
destroyed (``prune_keys``): that is the forward secrecy.

Identity keys: the member signs a ``rotate-identity-key`` entry with its old
and new keys; an administrator countersigns the one whose new-key fingerprint
the member confirmed out of band (several may wait: client/pending_rotations.py).
Until then the new key waits in the keystore as ``pending_identity``.
"""

from __future__ import annotations

from keys.encoding import b64e
from keys.errors import KeysError
from keys.hpke import EncryptionKey
from keys.identity import IdentityKey, format_fingerprint
from keys.log import ENTRY_PURPOSE, entry_hash, make_entry, signed_content
from keys.constants import ROLES

from .core import KEY_LIFETIME, Core
from .errors import ClientError, FingerprintMismatch, NothingWaiting, UsageError
from .keystore import KeptKey
from .pending_rotations import PendingRotation, check_listed, normalise_fingerprint

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
        self.state.add_log_entries(network, [(entry["seq"], b64e(entry_hash(entry)), entry)])
        self._adopt_pending_identity(entry["body"]["encryption_key"]["version"])
        for client in self._relays.values():
            client.forget_token(network, self.handle)

    async def pending_rotations(self, network: str) -> list[PendingRotation]:
        """Identity rotations waiting in ``network``, each checked here (administrators)."""
        return (await self._listed_rotations(network))[2]

    async def _listed_rotations(self, network: str):
        row, relay, verifier = await self.connect(network)
        self._require_admin(verifier, network)
        return relay, verifier, check_listed(verifier, await relay.rotations(network, self.handle))

    async def rotations_waiting(self, network: str, handle: str) -> list[PendingRotation]:
        """The verified requests to rotate ``handle``'s identity key; NothingWaiting if none."""
        return self._waiting(network, handle, (await self._listed_rotations(network))[2])

    @staticmethod
    def _waiting(network: str, handle: str, listed: list[PendingRotation]) -> list[PendingRotation]:
        mine = [p for p in listed if p.handle == handle]
        good = [p for p in mine if p.verified]
        if good:
            return good
        if mine:
            raise NothingWaiting(f"{handle}'s identity rotation cannot be approved: {mine[0].problem}",
                                 hint=f"ask {handle} to run 'comity rotate --identity --network "
                                      f"{network}' again")
        raise NothingWaiting(f"no identity rotation from {handle} is waiting")

    async def approve_rotation(self, network: str, handle: str, *, fingerprint: str) -> dict:
        """Countersign the request to rotate ``handle`` onto the key with ``fingerprint`` (the
        one the member read out of band) and append it. Never picks among competing requests:
        none with that fingerprint is FingerprintMismatch, and nothing is signed."""
        wanted = normalise_fingerprint(fingerprint)
        relay, verifier, listed = await self._listed_rotations(network)
        waiting = self._waiting(network, handle, listed)
        chosen = next((p for p in waiting if p.fingerprint == wanted), None)
        if chosen is None:
            raise FingerprintMismatch(
                f"no identity rotation from {handle} to fingerprint {wanted} is waiting: "
                "nothing was signed",
                hint=f"compare the fingerprint with {handle} again; 'comity pending --network "
                     f"{network}' lists the ones waiting")
        entry = chosen.entry
        signatures = list(entry["signatures"])
        signatures.append({"key": self.identity.public.b64(),
                           "sig": self.identity.sign_b64(ENTRY_PURPOSE, signed_content(entry))})
        entry = {**entry, "signatures": sorted(signatures, key=lambda s: s["key"])}
        try:
            verifier.append(entry)
        except KeysError as exc:
            self._verifiers.pop(network, None)
            raise ClientError(f"refusing {handle}'s rotation: {exc.message}") from None
        try:
            await relay.append_log(network, self.handle, entry)
        except Exception:
            self._verifiers.pop(network, None)    # resync from the relay next time
            raise
        self.state.add_log_entries(network, [(entry["seq"], b64e(entry_hash(entry)), entry)])
        return {"handle": handle, "fingerprint": chosen.fingerprint, "id": chosen.id,
                "competing": sorted({p.fingerprint for p in waiting} - {chosen.fingerprint})}

    # -- roles ----------------------------------------------------------------------

    async def set_role(self, network: str, handle: str, role: str) -> dict:
        if role not in ROLES:
            raise UsageError(f"role must be one of {', '.join(ROLES)}")
        row, relay, verifier = await self.connect(network)
        self._require_admin(verifier, network)
        self.member_of(verifier, handle)
        await self._append(network, relay, verifier, "set-role", {"handle": handle, "role": role})
        return {"handle": handle, "role": role}
