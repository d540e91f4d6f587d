"""The relay's shared state: settings, store, keys, verified logs, push hub, metrics.

One ``Relay`` per application (``app["relay"]``). It owns the in-memory
``LogVerifier`` of each network: the relay replays a network's log once from
the database, then verifies each appended entry incrementally, with the same
code every client runs. With several workers, another process may append: each
use of a cached log first compares the cluster's log epoch (relay/cluster.py)
and, if it moved, reads and verifies the entries added since.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiohttp import web

from keys.encoding import b64d, b64e, canonical, parse
from keys.errors import KeysError, LogError
from keys.identity import IdentityKey
from keys.log import LogVerifier, entry_hash
from keys.roster import Member, Roster

from .auth import Authenticator, RateLimiter
from .blobs import BlobFiles
from .cluster import Cluster
from .errors import RelayError
from .keyring import RelayKeys
from .metrics import Metrics
from .push import PushHub
from .settings import RelaySettings
from .store import Store


@dataclass
class NetworkState:
    name: str
    genesis_hash: bytes
    verifier: LogVerifier
    #: the cluster's log epoch when this state was last brought up to date
    epoch: bytes = b""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def roster(self) -> Roster:
        return self.verifier.roster


class Relay:
    def __init__(self, settings: RelaySettings, store: Store, blobs: BlobFiles,
                 keys: RelayKeys, token_secret: bytes, *, clock=time.time,
                 cluster: Cluster | None = None):
        self.settings = settings
        self.cluster = cluster or Cluster.single()
        self.store = store
        self.blobs = blobs
        self.keys = keys
        self.auth = Authenticator(token_secret, clock=clock)
        self.clock = clock
        self.hub = PushHub(self.cluster)
        self.metrics = Metrics()
        self.member_limiter = RateLimiter(settings.rate_per_second, settings.rate_burst)
        self._networks: dict[str, NetworkState] = {}
        #: upload pieces per blob since start: a cap on 1-byte-piece abuse
        self.blob_pieces: dict[str, int] = {}
        self._loading = asyncio.Lock()
        self.draining = False

    def __repr__(self) -> str:
        return f"Relay({self.settings.data_dir!r})"

    def now(self) -> int:
        return int(self.clock())

    @property
    def key(self) -> IdentityKey:
        """The newest relay key: the one new networks name."""
        return self.keys.newest

    def key_for(self, state: NetworkState) -> IdentityKey:
        """The key that signs for this network: the one its log names at its head."""
        return self.keys.for_log(state.roster.relay_key)

    # -- networks and their logs ---------------------------------------------

    async def network(self, name: str) -> NetworkState:
        """The verified state of a network, loading and replaying its log on first use,
        catching up on entries another worker appended since."""
        epoch = self.cluster.log_epoch()
        state = self._networks.get(name)
        if state is not None and state.epoch == epoch:
            return state
        async with self._loading:
            state = self._networks.get(name)
            if state is None:
                network = await self.store.get_network(name)   # raises NoNetwork
                genesis_hash = b64d(network.genesis_hash)
                state = NetworkState(name, genesis_hash, LogVerifier(genesis_hash), epoch)
                await self._read_log(state)
                self._networks[name] = state
            elif state.epoch != epoch:
                async with state.lock:                # not while this worker appends
                    try:
                        await self._read_log(state)
                    except KeysError:
                        self.forget_network(name)     # cannot happen to a log we stored
                        raise
                    state.epoch = epoch               # read before the entries: never ahead
        return state

    async def _read_log(self, state: NetworkState) -> None:
        """Verify and add the stored entries after the state's head."""
        since = state.verifier.seq + 1
        while True:
            page = await self.store.log_entries(state.name, since, 1000)
            for row in page:
                state.verifier.append(parse(row.entry))
            if len(page) < 1000:
                break
            since = page[-1].seq + 1

    def forget_network(self, name: str) -> None:
        self._networks.pop(name, None)

    async def append_log(self, state: NetworkState, entry: dict) -> tuple[int, str]:
        """Verify ``entry`` against the network's log, then store it durably."""
        async with state.lock:
            try:
                state.verifier.append(entry)
            except LogError as exc:
                raise RelayError("bad-entry", f"{exc.message} ({exc.reason})") from None
            except KeysError as exc:
                raise RelayError("bad-entry", exc.message) from None
            digest = b64e(entry_hash(entry))
            try:
                await self.store.append_log_entry(state.name, entry["seq"], digest,
                                                  canonical(entry).decode("utf-8"))
            except BaseException:
                # The verifier already moved on; reload from the database next time.
                self.forget_network(state.name)
                raise
            # Committed: the other workers re-read the log before their next use of it.
            self.cluster.bump_log_epoch()
            return entry["seq"], digest

    # -- authentication --------------------------------------------------------

    async def member(self, request: web.Request, network: str) -> tuple[NetworkState, Member]:
        """The authenticated, still active member making ``request`` in ``network``."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise RelayError("unauthenticated")
        claims = self.auth.check_token(header[len("Bearer "):].strip())
        if claims.network != network:
            raise RelayError("bad-token", "the bearer token is for another network")
        state = await self.network(network)
        member = state.roster.member(claims.handle)
        # Checked on every request: removal or identity rotation revokes tokens at once.
        if member is None or not member.active:
            raise RelayError("not-a-member")
        if member.identity_key.fingerprint() != claims.key_fingerprint:
            raise RelayError("bad-token", "the bearer token belongs to a replaced identity key: "
                                          "authenticate again with the new key")
        if not self.member_limiter.allow((network, claims.handle)):
            self.metrics.inc("comity_rate_limited_total")
            raise RelayError("rate-limited", headers={"Retry-After": "1"})
        request[MEMBER] = f"{network}/{claims.handle}"
        return state, member

    async def admin(self, request: web.Request, network: str) -> tuple[NetworkState, Member]:
        state, member = await self.member(request, network)
        if not member.is_admin:
            raise RelayError("not-an-admin")
        return state, member

    def notify_admins(self, state: NetworkState, event: dict) -> None:
        """Push ``event`` to every administrator of the network (something awaits them)."""
        for admin in state.roster.admins():
            self.hub.publish(state.name, admin, event)

    async def audit(self, event: str, network: str | None, handle: str | None, **detail) -> None:
        await self.store.audit(event, network, handle, canonical(detail).decode("utf-8"), self.now())


#: where the application keeps its Relay (typed key, as aiohttp recommends)
RELAY = web.AppKey("relay", Relay)
#: the authenticated member of a request, for the access log ("network/handle")
MEMBER = web.RequestKey("member", str)
