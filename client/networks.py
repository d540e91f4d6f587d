"""Network administration and membership: create, invite, enroll, pending, approve, remove,
members, and naming the relay's key in the log."""

from __future__ import annotations

from dataclasses import dataclass, replace

from keys.encoding import b64d, b64e
from keys.errors import InviteError, KeysError
from keys.identity import IdentityPublicKey, format_fingerprint
from keys.invite import Invite, check_relay_url, make_enrollment_request, verify_enrollment_request
from keys.log import default_policy, entry_hash, make_entry, make_genesis, member_record

from .core import Core, check_handle
from .errors import (ClientError, FingerprintMismatch, NotAMember, NothingWaiting, RelayMismatch,
                     UsageError)
from .pending_rotations import normalise_fingerprint
from .state import NetworkRow


@dataclass(frozen=True)
class PendingEnrollment:
    handle: str
    role: str
    name: str
    country: str
    fingerprint: str
    verified: bool           # the MAC checks out against our invite secret
    problem: str | None


def _country(country: str | None) -> str:
    country = (country or "").upper()
    if country and (len(country) != 2 or not country.isalpha() or not country.isascii()):
        raise UsageError(f"invalid country {country!r}: use a two-letter ISO 3166 code such as SV or ML")
    return country


class NetworksMixin(Core):

    async def create_network(self, name: str, relay_url: str, token: str, *, name_text: str = "",
                             country: str = "", organisation: str = "") -> dict:
        """Create ``name`` on the relay with this identity as its first administrator."""
        check_handle(name)
        try:
            relay_url = check_relay_url(relay_url.rstrip("/"))
        except InviteError as exc:
            raise UsageError(f"invalid relay URL: {exc.message}") from None
        if self.state.network(name) is not None:
            raise UsageError(f"this identity already belongs to a network named {name}")
        relay = self.relay(relay_url, None)
        info = await relay.info()
        relay.relay_key = info["relay_key"]     # pinned from here on (trust on first use)
        now = self.now()
        record = member_record(self.identity.public, self.key_record(self.secrets.current()),
                               handle=self.handle, name=name_text or self.handle,
                               country=_country(country), organisation=organisation, role="admin")
        # The genesis names the relay's key: receipts count only under a key the log names.
        genesis = make_genesis(self.identity, name, record, default_policy(), now,
                               relay_key=IdentityPublicKey.from_b64(info["relay_key"]))
        await relay.create_network(token, genesis)
        genesis_hash = entry_hash(genesis)
        self.state.add_network(NetworkRow(name, relay_url, info["relay_key"], b64e(genesis_hash),
                                          "member", now, 0))
        self.state.add_log_entries(name, [(0, b64e(genesis_hash), genesis)])
        return {"network": name, "fingerprint": format_fingerprint(genesis_hash[:20]),
                "genesis_hash": b64e(genesis_hash),
                "relay_fingerprint": format_fingerprint(IdentityPublicKey.from_b64(info["relay_key"]).fingerprint())}

    async def invite(self, network: str, handle: str, *, role: str = "member", name_text: str = "",
                     country: str = "", organisation: str = "") -> str:
        """Register an invite at the relay and return its code (give it out of band)."""
        check_handle(handle)
        row, relay, verifier = await self.connect(network)
        self._require_admin(verifier, network)
        if verifier.roster.member(handle) is not None:
            raise UsageError(f"the handle {handle} is already taken in {network}")
        invite = Invite.create(relay_url=row.relay_url,
                               relay_fingerprint=IdentityPublicKey.from_b64(row.relay_key).fingerprint(),
                               network=network, network_hash=b64d(row.genesis_hash),
                               handle=handle, role=role)
        await relay.add_invite(network, self.handle, b64e(invite.invite_id), handle, role)
        self.state.put("invite", network, handle, {
            "code": invite.to_code(), "name": name_text or handle, "country": _country(country),
            "organisation": organisation, "role": role}, at=self.now())
        return invite.to_code()

    async def enroll(self, code: str, passphrase: str) -> dict:
        """Answer an invite: create (or reuse) the identity and submit its keys."""
        try:
            invite = Invite.from_code(code)
        except InviteError as exc:
            raise ClientError(exc.message, hint="ask the administrator to send the code again") from None
        self.ensure_identity(invite.handle, passphrase)
        if self.state.network(invite.network) is not None:
            raise UsageError(f"this identity has already joined or enrolled in {invite.network}")
        relay = self.relay(invite.relay_url, None)
        held = await relay.presented_keys()
        # During a key rotation the relay holds two keys: the invite names one of them.
        pinned = next((key for key in held
                       if IdentityPublicKey.from_b64(key).fingerprint() == invite.relay_fingerprint), None)
        if pinned is None:
            relay_key = IdentityPublicKey.from_b64(held[0])
            raise RelayMismatch(
                f"the relay at {invite.relay_url} has fingerprint {format_fingerprint(relay_key.fingerprint())}, "
                f"but the invite names {format_fingerprint(invite.relay_fingerprint)}",
                hint="do not enroll; tell the administrator who sent the invite")
        relay.relay_key = pinned
        row = NetworkRow(invite.network, invite.relay_url, pinned, b64e(invite.network_hash),
                         "pending", self.now(), 0)
        # Verify the log from the invite's genesis hash before trusting anything in it.
        verifier = self._local_verifier(row)
        await self._sync(row, relay, verifier, invite_id=b64e(invite.invite_id))
        if verifier.seq < 0:
            raise ClientError("the relay served an empty log for this network")
        row = self._settle_relay_key(row, relay, verifier, held, save=False)
        request = make_enrollment_request(invite, self.identity, self.key_record(self.secrets.current()))
        await relay.enroll(invite.network, request)
        self.state.add_network(row)
        self.state.put("enrollment", invite.network, "self", {"invite_id": b64e(invite.invite_id)},
                       at=self.now())
        return {"network": invite.network, "handle": self.handle,
                "fingerprint": format_fingerprint(self.identity.public.fingerprint())}

    async def pending(self, network: str) -> list[PendingEnrollment]:
        row, relay, verifier = await self.connect(network)
        self._require_admin(verifier, network)
        result = []
        for item in await relay.enrollments(network, self.handle):
            local = self.state.get("invite", network, item["handle"])
            verified, problem, fp = False, None, "?"
            try:
                fp = format_fingerprint(IdentityPublicKey.from_b64(item["request"]["identity_key"]).fingerprint())
            except (KeysError, KeyError, TypeError):
                problem = "malformed request"
            if local is None:
                problem = problem or "invited by another administrator (its secret is not here)"
            else:
                try:
                    verify_enrollment_request(item["request"], Invite.from_code(local["code"]))
                    verified = True
                except InviteError as exc:
                    problem = exc.message
            result.append(PendingEnrollment(item["handle"], item["role"], (local or {}).get("name", ""),
                                            (local or {}).get("country", ""), fp, verified, problem))
        return result

    async def enrollment_waiting(self, network: str, handle: str) -> str:
        """The fingerprint of ``handle``'s enrollment, checked against our invite (to show an
        administrator before it approves)."""
        return format_fingerprint((await self._checked_enrollment(network, handle))[3].fingerprint())

    async def approve(self, network: str, handle: str, *, fingerprint: str) -> dict:
        """Check the enrollee's MAC against our invite and that its identity key has
        ``fingerprint`` (the one the enrollee read out of band), then sign its add-member
        entry. A different fingerprint is FingerprintMismatch, and nothing is signed."""
        wanted = normalise_fingerprint(fingerprint)
        relay, verifier, local, identity, item = await self._checked_enrollment(network, handle)
        if format_fingerprint(identity.fingerprint()) != wanted:
            raise FingerprintMismatch(
                f"{handle}'s enrollment does not have fingerprint {wanted}: nothing was signed",
                hint=f"compare the fingerprint with {handle} again; 'comity pending --network "
                     f"{network}' shows the one waiting")
        invite = Invite.from_code(local["code"])
        record = member_record(identity, item["request"]["encryption_key"], handle=handle,
                               name=local["name"], country=local["country"],
                               organisation=local["organisation"], role=invite.role)
        await self._append(network, relay, verifier, "add-member", {"member": record})
        self.state.delete("invite", network, handle)
        return {"handle": handle, "fingerprint": format_fingerprint(identity.fingerprint()),
                "role": invite.role}

    async def _checked_enrollment(self, network: str, handle: str):
        row, relay, verifier = await self.connect(network)
        self._require_admin(verifier, network)
        local = self.state.get("invite", network, handle)
        if local is None:
            raise ClientError(f"no invite for {handle} was made here",
                              hint="approve from the administrator account that made the invite")
        invite = Invite.from_code(local["code"])
        item = next((e for e in await relay.enrollments(network, self.handle) if e["handle"] == handle), None)
        if item is None:
            raise NothingWaiting(f"{handle} has not enrolled yet (or the invite expired)")
        try:
            identity, _ = verify_enrollment_request(item["request"], invite)
        except InviteError as exc:
            raise ClientError(f"refusing {handle}: {exc.message}",
                              hint="the keys may have been substituted; make a new invite") from None
        return relay, verifier, local, identity, item

    async def remove(self, network: str, handle: str) -> dict:
        row, relay, verifier = await self.connect(network)
        self._require_admin(verifier, network)
        self.member_of(verifier, handle)
        await self._append(network, relay, verifier, "remove-member", {"handle": handle})
        return {"handle": handle, "removed": True}

    async def members(self, network: str) -> list[dict]:
        row, relay, verifier = await self.connect(network)
        return [{"handle": m.handle, "name": m.name, "country": m.country, "role": m.role,
                 "fingerprint": format_fingerprint(m.identity_key.fingerprint()),
                 "encryption_key_version": m.encryption_key_version}
                for m in sorted(verifier.roster.active().values(), key=lambda m: m.handle)]

    async def set_relay_key(self, network: str, fingerprint: bytes) -> dict:
        """Name the relay's new key in the log, after its operator rotated it (administrators).

        ``fingerprint`` is the new key's fingerprint as the operator handed it over out
        of band; the key itself is read from the relay and must match it.
        """
        row, relay = self.relay_for(network)
        presented = IdentityPublicKey.from_b64(await relay.presented_key())
        if presented.fingerprint() != fingerprint:
            raise RelayMismatch(
                f"the relay at {row.relay_url} presents key {format_fingerprint(presented.fingerprint())}, "
                f"not the {format_fingerprint(fingerprint)} you were given",
                hint="do not go on: check the fingerprint with the relay operator")
        verifier = self._local_verifier(row)
        relay = self.relay(row.relay_url, presented.b64())
        relay.use_log(row.genesis_hash, verifier)
        await self._authenticate(row, relay)
        await self._sync(row, relay, verifier)
        self._require_admin(verifier, network)
        if verifier.roster.relay_key == presented:
            raise ClientError(f"the {network} membership log already names this relay key")
        await self._append(network, relay, verifier, "set-relay-key", {"relay_key": presented.b64()})
        self.state.add_network(replace(row, relay_key=presented.b64()))
        return {"network": network, "seq": verifier.seq,
                "relay_fingerprint": format_fingerprint(presented.fingerprint())}

    # -- helpers ---------------------------------------------------------------

    def _require_admin(self, verifier, network: str) -> None:
        me = verifier.roster.member(self.handle)
        if me is None or not me.is_admin:
            raise NotAMember(f"only an administrator of {network} may do this")

    async def _append(self, network: str, relay, verifier, kind: str, body: dict) -> dict:
        head = verifier.roster
        entry = make_entry(head.head_hash, head.seq + 1, kind, body, max(self.now(), self._last_time(verifier)),
                           [self.identity])
        # Check locally first: we never send an entry our own verifier would refuse.
        try:
            verifier.append(entry)
        except KeysError as exc:
            raise ClientError(f"refused: {exc.message}") from None
        try:
            answer = await relay.append_log(network, self.handle, entry)
        except Exception:
            self._verifiers.pop(network, None)    # resync from the relay next time
            raise
        self.state.add_log_entries(network, [(entry["seq"], b64e(entry_hash(entry)), entry)])
        return answer

    def _last_time(self, verifier) -> int:
        entries = self.state.log_entries(verifier.roster.network)
        return entries[-1]["time"] if entries else 0
