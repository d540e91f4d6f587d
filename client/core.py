"""The client core: unlocked keys, local state, pinned relays and verified logs.

``Comity`` (client/api.py) builds on this. Everything the relay serves is
verified here against what this member pinned: the network's genesis hash, and
through the log it starts, the relay key (pinned from the invite or ``network
create``, and followed to a new one only when the signed log names it).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import replace
from pathlib import Path

import aiohttp

from keys.constants import HANDLE_PATTERN, DAY
from keys.encoding import b64d, b64e
from keys.errors import KeysError, LogError
from keys.hpke import EncryptionKey, make_key_record
from keys.identity import IdentityKey, IdentityPublicKey, format_fingerprint
from keys.log import ENTRY_PURPOSE, LogVerifier, entry_hash, signed_content
from keys.roster import Member, Roster

from . import freshness
from .errors import (ClientError, NoIdentity, NotAMember, RelayMismatch, RelayRefused, TrustError,
                     UnknownNetwork, UsageError)
from .home import ensure_home, resolve_home
from .keystore import KeptKey, Keystore, Secrets
from .relay_client import RelayClient
from .state import LocalState, NetworkRow

log = logging.getLogger("comity.client")

#: warnings kept for the user during one command (more are only logged)
MAX_NOTICES = 1000

#: an encryption key published at enrollment is valid this long; watch/rotate renew it
KEY_LIFETIME = 365 * DAY


def fork_side(entry: dict | None) -> dict | None:
    """What a user compares of one side of a fork: position, hash, kind, time, signers."""
    if not isinstance(entry, dict):
        return None
    try:
        digest = b64e(entry_hash(entry))
    except KeysError:
        digest = None
    signers = []
    for item in entry.get("signatures", []) if isinstance(entry.get("signatures"), list) else []:
        try:
            signers.append(format_fingerprint(IdentityPublicKey.from_b64(item["key"]).fingerprint()))
        except (KeysError, KeyError, TypeError):
            signers.append("?")
    return {"seq": entry.get("seq"), "hash": digest, "kind": entry.get("kind"), "time": entry.get("time"),
            "signers": signers}


def _signed_by_members(verifier: LogVerifier, entry: dict) -> bool:
    """Whether every signature on ``entry`` verifies under a key a member held just before it."""
    try:
        seq = entry["seq"]
        roster = verifier.roster_at(min(seq - 1, verifier.seq))
        keys = {m.identity_key.b64(): m.identity_key for m in roster.members.values()}
        signatures = entry["signatures"]
        content = signed_content(entry)
        for item in signatures:
            keys[item["key"]].verify(ENTRY_PURPOSE, content, item["sig"])
        return bool(signatures)
    except (KeysError, KeyError, TypeError, AttributeError):
        return False


class LogBehind(ClientError):
    """a message names a membership log entry the relay has not shown us yet"""


def _fp(key_b64: str) -> str:
    return format_fingerprint(IdentityPublicKey.from_b64(key_b64).fingerprint())


def check_handle(handle: str) -> str:
    if not isinstance(handle, str) or not re.fullmatch(HANDLE_PATTERN, handle):
        raise UsageError(f"invalid handle {handle!r}: use 3-64 lowercase letters, digits, '-' and '.'",
                         hint="it must start and end with a letter or digit")
    return handle


class Core:
    def __init__(self, home: Path, keystore: Keystore):
        self.home = home
        self.keystore = keystore
        self.secrets: Secrets | None = None
        self.state: LocalState | None = None
        self._session: aiohttp.ClientSession | None = None
        self._relays: dict[str, RelayClient] = {}
        self._verifiers: dict[str, LogVerifier] = {}
        self.clock = time.time
        #: warnings for the user gathered while working (the CLI prints them on stderr)
        self.notices: list[str] = []

    def __repr__(self) -> str:
        return f"Comity({str(self.home)!r})"

    # -- opening and closing ----------------------------------------------------

    @classmethod
    def at(cls, home: str | Path | None = None) -> "Core":
        path = resolve_home(home)
        return cls(path, Keystore(path))

    def has_identity(self) -> bool:
        return self.keystore.exists()

    def unlock(self, passphrase: str) -> None:
        if not self.keystore.exists():
            raise NoIdentity()
        self.secrets = self.keystore.load(passphrase)
        self.state = LocalState(self.home, self.secrets.local_key)

    def create_identity(self, handle: str, passphrase: str) -> None:
        """A new identity and first encryption key, sealed under ``passphrase``."""
        import os
        check_handle(handle)
        if self.keystore.exists():
            raise ClientError(f"{self.home} already holds an identity")
        ensure_home(self.home)
        now = self.now()
        secrets = Secrets(handle=handle, identity=IdentityKey.generate(), local_key=os.urandom(32),
                          encryption_keys=[KeptKey(1, EncryptionKey.generate(), now, now + KEY_LIFETIME)])
        self.keystore.save(secrets, passphrase)
        self.secrets = secrets
        self.state = LocalState(self.home, secrets.local_key)

    def ensure_identity(self, handle: str, passphrase: str) -> bool:
        """Unlock the identity, or create it with ``handle``; True if it was created."""
        if self.keystore.exists():
            self.unlock(passphrase)
            if self.secrets.handle != handle:
                raise UsageError(f"this COMITY_HOME belongs to {self.secrets.handle}, not {handle}",
                                 hint="one identity per COMITY_HOME: set COMITY_HOME to another folder")
            return False
        self.create_identity(handle, passphrase)
        return True

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self.state is not None:
            self.state.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def now(self) -> int:
        return int(self.clock())

    def notice(self, text: str) -> None:
        """Something the user must hear about that does not stop the command."""
        log.info("%s", text)     # info: the CLI prints notices itself; a library user may log them
        if len(self.notices) < MAX_NOTICES:    # a hostile relay cannot grow this without bound
            self.notices.append(text)

    @property
    def handle(self) -> str:
        self._need_secrets()
        return self.secrets.handle

    @property
    def identity(self) -> IdentityKey:
        self._need_secrets()
        return self.secrets.identity

    def _need_secrets(self) -> None:
        if self.secrets is None:
            raise NoIdentity()

    def key_record(self, kept: KeptKey) -> dict:
        return make_key_record(self.identity, kept.key.public, version=kept.version,
                               created=kept.created, not_after=kept.not_after)

    def prune_keys(self, grace: int) -> list[int]:
        """Destroy retired private keys older than ``grace`` seconds; returns their versions."""
        now = self.now()
        gone = [k.version for k in self.secrets.encryption_keys
                if k.retired_at is not None and now - k.retired_at >= grace]
        if gone:
            self.secrets.encryption_keys = [k for k in self.secrets.encryption_keys if k.version not in gone]
            self.keystore.resave(self.secrets)
        return gone

    def destroy_expired_keys(self) -> list[int]:
        """Destroy retired keys past the longest grace period of the networks seen so far.

        The longest, because one key serves every network: a shorter grace in one
        network must not destroy a key another network's senders may still use.
        """
        if not self._verifiers:
            return []
        return self.prune_keys(max(v.roster.policy.key_grace for v in self._verifiers.values()))

    # -- relays ---------------------------------------------------------------

    def relay(self, url: str, relay_key: str | None) -> RelayClient:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        client = self._relays.get(url)
        if client is None or client.relay_key != relay_key:
            client = RelayClient(url, self._session, relay_key)
            self._relays[url] = client
        return client

    def network_row(self, name: str) -> NetworkRow:
        self._need_secrets()
        row = self.state.network(name)
        if row is None:
            known = ", ".join(r.name for r in self.state.networks()) or "none"
            raise UnknownNetwork(f"unknown network {name!r} (known here: {known})")
        return row

    def default_network(self, name: str | None) -> str:
        if name:
            return name
        rows = self.state.networks() if self.state else []
        if len(rows) == 1:
            return rows[0].name
        raise UsageError("say which network with --network",
                         hint="known here: " + (", ".join(r.name for r in rows) or "none"))

    def relay_for(self, name: str) -> tuple[NetworkRow, RelayClient]:
        row = self.network_row(name)
        return row, self.relay(row.relay_url, row.relay_key)

    async def connect(self, name: str) -> tuple[NetworkRow, RelayClient, LogVerifier]:
        """Authenticate to the network's relay and bring its verified log up to date.

        The relay must hold the relay key the network's signed log names today: a
        key the log has replaced (or never named) is another relay (``RelayMismatch``).
        """
        row, relay = self.relay_for(name)
        held = await relay.presented_keys()
        verifier = self._local_verifier(row)
        relay.use_log(row.genesis_hash, verifier)
        if row.relay_key not in held:
            row, relay = await self._follow_relay_key(row, held, verifier)
        if row.status == "pending":
            await self._sync_pending(row, relay, verifier)
            row = self._settle_relay_key(row, relay, verifier, held)
            return row, relay, verifier
        await self._authenticate(row, relay)
        try:
            await self._sync(row, relay, verifier)
        except RelayRefused as exc:
            if exc.code not in ("not-a-member", "bad-token"):
                raise
            # A cached token from before a key change or expiry: authenticate afresh once.
            relay.forget_token(name, self.handle)
            await self._authenticate(row, relay)
            await self._sync(row, relay, verifier)
        row = self._settle_relay_key(row, relay, verifier, held)
        pending = self.secrets.pending_identity
        me = verifier.roster.member(self.handle)
        if pending is not None and me is not None and me.identity_key == pending.public:
            # An administrator countersigned our identity rotation: the new key is ours now.
            self._adopt_pending_identity(me.encryption_key_version)
        if me is None or not me.active or me.identity_key != self.identity.public:
            raise NotAMember(f"you are no longer an active member of {name}")
        return row, relay, verifier

    async def _follow_relay_key(self, row: NetworkRow, held: list[str],
                                verifier: LogVerifier) -> tuple[NetworkRow, RelayClient]:
        """The relay no longer holds the pinned key: the same relay after a key rotation if,
        and only if, the network's signed log now names a key it holds (``held``, newest
        first; two during a rotation)."""
        presented = held[0]
        mismatch = RelayMismatch(
            f"the relay at {row.relay_url} has key {_fp(presented)}, not the pinned "
            f"{_fp(row.relay_key)}, and the {row.name} membership log does not name it",
            hint="if its operator rotated the key, an administrator names the new one with "
                 "'comity network set-relay-key'; otherwise someone may be impersonating the relay")
        relay = self.relay(row.relay_url, presented)
        relay.use_log(row.genesis_hash, verifier)
        try:
            if row.status == "pending":
                await self._sync_pending(row, relay, verifier)
            else:
                await self._authenticate(row, relay)
                await self._sync(row, relay, verifier)
        except RelayRefused:
            raise mismatch from None
        except NotAMember:
            pass                      # still pending: the log we could read decides below
        named = verifier.roster.relay_key.b64() if verifier.seq >= 0 else None
        if named not in held:
            raise mismatch
        # The administrators signed the new key into the log: pin it from now on.
        row = replace(row, relay_key=named)
        self.state.add_network(row)
        relay.relay_key = named
        return row, relay

    def _settle_relay_key(self, row: NetworkRow, relay: RelayClient, verifier: LogVerifier,
                          held: list[str], *, save: bool = True) -> NetworkRow:
        """Pin the key the log names today if the relay holds it, else refuse the relay.

        During a key rotation the relay holds the old and the new key: once an administrator
        names the new one in the log, we follow it, as we would a relay that holds only it.
        """
        named = verifier.roster.relay_key.b64() if verifier.seq >= 0 else row.relay_key
        if named != row.relay_key and named in held:
            row = replace(row, relay_key=named)
            if save:
                self.state.add_network(row)
            relay.relay_key = named       # same connection and tokens; statements now under it
        self._require_logged_relay_key(row, verifier)
        return row

    def _require_logged_relay_key(self, row: NetworkRow, verifier: LogVerifier) -> None:
        """The relay we talk to must hold the key the log names today, not a replaced one."""
        named = verifier.roster.relay_key
        if named.b64() != row.relay_key:
            raise RelayMismatch(
                f"the relay at {row.relay_url} has key {_fp(row.relay_key)}, but the {row.name} "
                f"membership log names relay key {_fp(named.b64())}",
                hint="the relay may be run by someone holding a replaced key; tell your administrator")

    def _adopt_pending_identity(self, published_version: int) -> None:
        """Our identity rotation is in the log: its identity key is ours, and the encryption keys
        older than the one published with it are retired (destroyed after the grace period)."""
        now = self.now()
        for kept in self.secrets.encryption_keys:
            if kept.version < published_version and kept.retired_at is None:
                kept.retired_at = now
        self.secrets.identity, self.secrets.pending_identity = self.secrets.pending_identity, None
        self.keystore.resave(self.secrets)

    async def _authenticate(self, row: NetworkRow, relay: RelayClient) -> None:
        try:
            await relay.authenticate(row.name, self.handle, self.identity, b64d(row.genesis_hash))
        except RelayRefused as exc:
            pending = self.secrets.pending_identity
            if exc.code not in ("not-a-member", "bad-signature") or pending is None:
                raise
            # The rotation may have landed: the relay now knows us by the new key.
            await relay.authenticate(row.name, self.handle, pending, b64d(row.genesis_hash))

    async def joined_networks(self) -> list[str]:
        """Networks we are a member of (an approved enrollment is noticed here)."""
        names = []
        for row in self.state.networks():
            if row.status == "pending":
                try:
                    await self.connect(row.name)
                except NotAMember:
                    continue
            names.append(row.name)
        return names

    def _local_verifier(self, row: NetworkRow) -> LogVerifier:
        verifier = self._verifiers.get(row.name)
        if verifier is None:
            verifier = LogVerifier(b64d(row.genesis_hash))
            try:
                verifier.extend(self.state.log_entries(row.name))
            except KeysError as exc:
                raise TrustError(f"the local copy of the {row.name} log does not verify: {exc.message}") from None
            self._verifiers[row.name] = verifier
        return verifier

    async def _sync(self, row: NetworkRow, relay: RelayClient, verifier: LogVerifier, *,
                    invite_id: str | None = None) -> None:
        new = []
        async for entry in relay.log(row.name, verifier.seq + 1, handle=self.handle, invite_id=invite_id):
            try:
                verifier.append(entry)
            except LogError as exc:
                self.state.add_log_entries(row.name, new)
                # Another genesis is another network; an entry whose signatures do not verify is
                # garbage, not a second history: only a validly signed one makes a fork.
                if exc.reason == "fork" and entry.get("seq") != 0 and _signed_by_members(verifier, entry):
                    self._record_fork(row.name, verifier, entry)
                    raise TrustError(
                        f"the {row.name} log has forked: the relay serves an entry {entry.get('seq')} "
                        "that does not extend the log this machine verified",
                        hint=f"'comity network fork {row.name}' shows both sides; compare them with "
                             "an administrator (docs/operations.md, 'A fork of the log')") from None
                raise TrustError(
                    f"the relay served a {row.name} log entry that does not verify: {exc.message}",
                    hint="the relay may be compromised or the log forked; tell your administrator") from None
            new.append((entry["seq"], b64e(entry_hash(entry)), entry))
        if new:
            self.state.add_log_entries(row.name, new)
        # The relay signs where the log ends, and when: a fresh head that omits entries is a
        # lie it can be held to (client/freshness.py).
        freshness.check_served_head(self, row, verifier, relay, [entry for _, _, entry in new])

    def _record_fork(self, network: str, verifier: LogVerifier, theirs: dict) -> None:
        """Keep both sides of a fork for 'comity network fork' (client/forks.py)."""
        seq = theirs.get("seq") if isinstance(theirs.get("seq"), int) else None
        ours = next((e for e in self.state.log_entries(network) if e["seq"] == seq), None)
        if ours is None and verifier.seq >= 0:
            ours = next((e for e in self.state.log_entries(network) if e["seq"] == verifier.seq), None)
        self.state.put("fork", network, "current", {
            "seq": seq, "ours": fork_side(ours), "theirs": fork_side(theirs), "at": self.now()},
            at=self.now())

    async def _sync_pending(self, row: NetworkRow, relay: RelayClient, verifier: LogVerifier) -> LogVerifier:
        """An enrollee becomes a member once an admin's add-member entry names its key."""
        waiting = NotAMember(f"your enrollment in {row.name} is waiting for an administrator's approval",
                             hint="ask an administrator of the network to run 'comity approve'")
        try:
            await relay.authenticate(row.name, self.handle, self.identity, b64d(row.genesis_hash))
        except RelayRefused as exc:
            if exc.code == "not-a-member":
                raise waiting from None
            raise
        await self._sync(row, relay, verifier)
        me = verifier.roster.member(self.handle)
        if me is None or not me.active or me.identity_key != self.identity.public:
            raise waiting
        self.state.set_network_status(row.name, "member")
        self.state.delete("enrollment", row.name, "self")
        return verifier

    def roster_at(self, name: str):
        verifier = self._verifiers[name]

        def lookup(seq: int) -> Roster:
            try:
                return verifier.roster_at(seq)
            except LogError:
                # We have just synced the log: a later entry is one the relay withholds from
                # us (or has not got yet), or one that does not exist. Retrying tells which; a
                # real fork (another hash at a seq we hold) is ForkError from keys.envelope.
                raise LogBehind(f"the message names membership log entry {seq}, which the relay "
                                f"has not shown us (we hold up to {verifier.seq})") from None
        return lookup

    def member_of(self, verifier: LogVerifier, handle: str) -> Member:
        member = verifier.roster.member(handle)
        if member is None:
            raise ClientError(f"unknown handle {handle!r} in this network",
                              hint="'comity members' lists the members")
        if not member.active:
            raise ClientError(f"{handle} was removed from this network")
        return member
