"""Low-level HTTP calls to a comity relay (the API in docs/relay-api.md).

Every answer that carries a relay signature is checked before it is returned
against the relay keys the network's verified membership log names
(``use_log``); nothing here trusts the relay's word.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, AsyncIterator, Callable

import aiohttp

from keys.constants import MAX_MESSAGE_BYTES
from keys.encoding import b64d, b64e, parse
from keys.envelope import envelope_hash
from keys.errors import KeysError
from keys.identity import IdentityKey, IdentityPublicKey, format_fingerprint
from keys.log import LogVerifier
from keys.receipts import check_relay_receipt, verify_relay_receipt

from .errors import RelayMismatch, RelayRefused, RelayUnreachable, TrustError
from .freshness import chained_acceptance

AUTH_PURPOSE = "auth"
#: bytes per upload request: bounded memory, and a dropped connection loses at most this much
UPLOAD_PIECE = 8 * 1024 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=None, connect=15, sock_read=120)
#: re-authenticate when the bearer token has less than this left (seconds)
TOKEN_MARGIN = 60
#: the largest JSON answer a relay may send: fetching an envelope whose ciphertext is at the
#: protocol's ceiling (MAX_MESSAGE_BYTES of plaintext, as base64: 4 characters per 3 bytes),
#: plus the rest of that answer (header, tag, 500 wrapped keys of about 1.6 KB, 1000 blob ids,
#: the relay's receipt: about 1.2 MB) or a full log page (500 entries, about 2 MB)
ANSWER_OVERHEAD = 4 * 1024 * 1024
MAX_ANSWER_BYTES = 4 * -(-MAX_MESSAGE_BYTES // 3) + ANSWER_OVERHEAD
#: keys a relay may present at once: its newest and the one before a rotation
MAX_RELAY_KEYS = 2
#: an error answer is one short JSON object; a longer one is read no further
MAX_ERROR_BYTES = 64 * 1024
#: bytes read from the connection at a time
READ_PIECE = 256 * 1024
#: answers are taken as sent: a small compressed answer could inflate past any limit
IDENTITY = "identity"


class RelayClient:
    def __init__(self, url: str, session: aiohttp.ClientSession, relay_key: str | None = None):
        self.url = url.rstrip("/")
        self.session = session
        self.relay_key = relay_key          # pinned b64 public key, or None before pinning
        self._tokens: dict[tuple[str, str], tuple[str, int]] = {}   # -> (token, expires)
        self._logs: dict[str, LogVerifier] = {}   # b64 genesis hash -> that network's verified log
        #: the signed head of the last log page served per network (client/freshness.py checks it)
        self.served_heads: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"RelayClient({self.url!r})"

    # -- plumbing ------------------------------------------------------------

    async def _request(self, method: str, path: str, *, json: Any = None, headers: dict | None = None,
                       expect: tuple[int, ...] = (200, 201, 202, 204), raw: bool = False, **kwargs):
        # aiohttp would otherwise ask for gzip and inflate the answer before any limit applies.
        headers = {**(headers or {}), "Accept-Encoding": IDENTITY}
        try:
            response = await self.session.request(method, self.url + path, json=json, headers=headers,
                                                  timeout=TIMEOUT, auto_decompress=False, **kwargs)
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as exc:
            raise RelayUnreachable(f"cannot reach the relay at {self.url}: {_reason(exc)}",
                                   hint="check the address and your connection, then run the command again") from None
        encoding = response.headers.get("Content-Encoding", IDENTITY).strip().lower()
        if encoding != IDENTITY:
            response.close()
            raise TrustError(f"the relay at {self.url} sent an encoded answer "
                             f"(Content-Encoding: {_printable(encoding)[:40]}): refused")
        if raw and response.status in expect:
            return response
        ok = response.status in expect
        body = await self._read(response, MAX_ANSWER_BYTES if ok else MAX_ERROR_BYTES)
        if not ok:
            raise _refusal(response.status, body or b"")
        if body is None:
            raise TrustError(f"the relay at {self.url} sent an answer larger than {MAX_ANSWER_BYTES} bytes, "
                             "the most it may send: refused")
        if not body:
            return response
        try:
            return parse(body)
        except KeysError:
            raise TrustError(f"the relay at {self.url} sent an answer that is not valid JSON") from None

    async def _read(self, response: aiohttp.ClientResponse, limit: int) -> bytes | None:
        """The answer's body, or None if it is longer than ``limit`` (then read no further)."""
        try:
            if response.content_length is not None and response.content_length > limit:
                response.close()
                return None
            body = bytearray()
            async for piece in response.content.iter_chunked(READ_PIECE):
                body += piece
                if len(body) > limit:
                    response.close()     # drop the connection: the rest is never read
                    return None
            return bytes(body)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise RelayUnreachable(f"the connection to {self.url} dropped: {_reason(exc)}") from None
        finally:
            response.release()

    async def _authed(self, network: str, handle: str, method: str, path: str, **kwargs):
        headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {self._tokens[(network, handle)][0]}"}
        return await self._request(method, path, headers=headers, **kwargs)

    # -- relay, networks, log ----------------------------------------------

    async def info(self) -> dict:
        info = await self._request("GET", "/v1/relay")
        if self.relay_key is not None and info.get("relay_key") != self.relay_key:
            raise RelayMismatch(
                f"the relay at {self.url} has key {_fp(info.get('relay_key'))}, "
                f"not the pinned {_fp(self.relay_key)}",
                hint="someone may be impersonating the relay; ask your administrator")
        return info

    async def presented_key(self) -> str:
        """The newest key the relay at this URL says it holds (the one a new network or a
        ``set-relay-key`` entry names), asked afresh each time."""
        return (await self.presented_keys())[0]

    async def presented_keys(self) -> list[str]:
        """Every key the relay at this URL says it holds, newest first, asked afresh each
        time (the operator may rotate its key while a client runs; during a rotation it
        holds two).

        Anyone can present any public key: one counts only once the network's signed
        membership log names it (client/core.py ``connect``).
        """
        answer = await self._request("GET", "/v1/relay")
        if not isinstance(answer, dict):
            raise TrustError(f"the relay at {self.url} presents no valid relay key")
        newest = answer.get("relay_key")
        # A relay from before rotations (no relay_keys) holds one key.
        keys = answer.get("relay_keys", [newest])
        if not isinstance(keys, list) or not keys or keys[0] != newest \
                or len(keys) > MAX_RELAY_KEYS:
            raise TrustError(f"the relay at {self.url} presents no valid relay key")
        try:
            for key in keys:
                IdentityPublicKey.from_b64(key)
        except KeysError:
            raise TrustError(f"the relay at {self.url} presents no valid relay key") from None
        return keys

    def use_log(self, genesis_hash: str, verifier: LogVerifier) -> None:
        """Check this network's relay receipts against the relay keys its verified log names."""
        self._logs[genesis_hash] = verifier

    async def create_network(self, token: str, genesis: dict) -> dict:
        return await self._request("POST", "/v1/networks", json={"token": token, "genesis": genesis})

    async def log(self, network: str, since: int, *, handle: str | None = None,
                  invite_id: str | None = None) -> AsyncIterator[dict]:
        """Every entry from ``since`` on, page by page."""
        while True:
            path = f"/v1/networks/{network}/log?since={since}"
            if invite_id is not None:
                page = await self._request("GET", path, headers={"Comity-Invite": invite_id})
            else:
                page = await self._authed(network, handle, "GET", path)
            self.served_heads[network] = page.get("signed_head")
            for entry in page["entries"]:
                yield entry
            if not page["entries"] or not page.get("more"):
                return
            since = page["entries"][-1]["seq"] + 1

    async def append_log(self, network: str, handle: str, entry: dict) -> dict:
        return await self._authed(network, handle, "POST", f"/v1/networks/{network}/log",
                                  json={"entry": entry})

    # -- authentication -------------------------------------------------------

    async def authenticate(self, network: str, handle: str, identity: IdentityKey,
                           genesis_hash: bytes) -> None:
        cached = self._tokens.get((network, handle))
        if cached is not None and cached[1] - TOKEN_MARGIN > time.time():
            return
        if self.relay_key is None:
            raise TrustError("the relay key is not pinned")
        challenge = await self._request("POST", f"/v1/networks/{network}/auth/challenge",
                                        json={"handle": handle})
        statement = {"challenge": challenge["challenge"], "handle": handle,
                     "network": b64e(genesis_hash), "relay": self.relay_key}
        answer = await self._request("POST", f"/v1/networks/{network}/auth/token", json={
            "handle": handle, "challenge": challenge["challenge"],
            "signature": identity.sign_b64(AUTH_PURPOSE, statement)})
        self._tokens[(network, handle)] = (answer["token"], int(answer["expires"]))

    def forget_token(self, network: str, handle: str) -> None:
        self._tokens.pop((network, handle), None)

    # -- invites and enrollment --------------------------------------------

    async def add_invite(self, network: str, handle: str, invite_id: str, invitee: str, role: str) -> dict:
        return await self._authed(network, handle, "POST", f"/v1/networks/{network}/invites",
                                  json={"invite_id": invite_id, "handle": invitee, "role": role})

    async def enroll(self, network: str, request: dict) -> dict:
        return await self._request("POST", f"/v1/networks/{network}/enrollments", json={"request": request})

    async def enrollments(self, network: str, handle: str) -> list[dict]:
        return (await self._authed(network, handle, "GET", f"/v1/networks/{network}/enrollments"))["enrollments"]

    async def submit_rotation(self, network: str, handle: str, entry: dict) -> dict:
        return await self._authed(network, handle, "POST", f"/v1/networks/{network}/rotations",
                                  json={"entry": entry})

    async def rotations(self, network: str, handle: str) -> list[dict]:
        return (await self._authed(network, handle, "GET", f"/v1/networks/{network}/rotations"))["rotations"]

    # -- messages -----------------------------------------------------------------

    def check_receipt(self, receipt: dict) -> dict:
        """Verify a relay receipt under a relay key its network's log names for its time.

        A stored receipt may be older than the relay's current key (a retried
        submission returns the first receipt), so any key the log named counts, as
        long as it had not been replaced before the receipt's time.
        """
        try:
            check_relay_receipt(receipt)
            verifier = self._logs.get(receipt["network"])
            if verifier is None:
                raise TrustError("the relay sent a receipt for a network this client has not verified")
            key = IdentityPublicKey.from_b64(receipt["relay_key"])
            verifier.check_relay_key(key, receipt["time"])
            return verify_relay_receipt(receipt, key)
        except KeysError as exc:
            raise TrustError("the relay's receipt does not verify against the relay keys the "
                             f"membership log names: {exc.message}") from None

    async def submit(self, network: str, handle: str, envelope: dict) -> dict:
        answer = await self._authed(network, handle, "POST", f"/v1/networks/{network}/messages",
                                    json={"envelope": envelope})
        receipt = self.check_receipt(answer["receipt"])
        problem = receipt_mismatch(receipt, envelope, handle)
        if problem:
            raise TrustError(f"the relay's receipt does not match the message sent ({problem})")
        return receipt

    async def mailbox(self, network: str, handle: str, after: int) -> list[dict]:
        """One page of the mailbox after ``after``: items ``{"id", "cursor"}`` whose cursors grow
        past ``after`` (a relay that serves the same page again would keep a client busy for ever)."""
        answer = await self._authed(network, handle, "GET", f"/v1/networks/{network}/mailbox?after={after}")
        items = answer.get("messages") if isinstance(answer, dict) else None
        if not isinstance(items, list) or len(items) > MAX_MAILBOX_ITEMS:
            raise TrustError(f"the relay at {self.url} sent a malformed mailbox page")
        last = after
        for item in items:
            if (not isinstance(item, dict) or not isinstance(item.get("id"), str)
                    or not _MESSAGE_ID.fullmatch(item["id"]) or not _is_int(item.get("cursor"))
                    or item["cursor"] <= last):
                raise TrustError(f"the relay at {self.url} sent a malformed mailbox page "
                                 "(an item without a valid id, or a cursor that does not grow)")
            last = item["cursor"]
        return items

    async def fetch(self, network: str, handle: str, message_id: str
                    ) -> tuple[dict, dict | None, dict | None]:
        """``(envelope, delivered receipt, submission receipt)``; the submission receipt only if
        the delivery chains from it (else None: it then proves nothing)."""
        answer = await self._authed(network, handle, "GET", f"/v1/networks/{network}/messages/{message_id}")
        if not isinstance(answer, dict) or not isinstance(answer.get("envelope"), dict):
            raise TrustError(f"the relay at {self.url} sent a malformed message answer")
        receipt = answer.get("receipt")
        if receipt is not None:
            self.check_receipt(receipt)
            # Only the relay's delivery of this message to us can anchor our acknowledgement. (Its
            # envelope hash may differ from what arrived: then we sign a rejection naming both.)
            # A receipt about something else anchors nothing: dropped, so no acknowledgement
            # can hang off it (and a replayed envelope is still recognised as one).
            if (receipt.get("kind") != "delivered" or receipt.get("recipient") != handle
                    or receipt.get("message_id") != answer["envelope"].get("id")):
                receipt = None
        acceptance = chained_acceptance(self, handle, answer.get("submission"), answer.get("chain"),
                                        receipt)
        return answer["envelope"], receipt, acceptance

    async def collected(self, network: str, handle: str, message_id: str) -> None:
        await self._authed(network, handle, "POST", f"/v1/networks/{network}/messages/{message_id}/collected")

    async def status(self, network: str, handle: str, message_id: str) -> dict:
        answer = await self._authed(network, handle, "GET",
                                    f"/v1/networks/{network}/messages/{message_id}/status")
        if not isinstance(answer, dict) or not isinstance(answer.get("receipts", []), list) \
                or not all(isinstance(r, dict) for r in answer.get("receipts", [])):
            raise TrustError(f"the relay at {self.url} sent a malformed status answer")
        return answer

    async def events(self, network: str, handle: str) -> aiohttp.ClientWebSocketResponse:
        """The push WebSocket of new-mail events (formats in relay/push.py)."""
        try:
            return await self.session.ws_connect(
                self.url + f"/v1/networks/{network}/events", heartbeat=30,
                headers={"Authorization": f"Bearer {self._tokens[(network, handle)][0]}"})
        except aiohttp.WSServerHandshakeError as exc:
            raise RelayRefused(f"the relay refused the event stream (HTTP {exc.status})",
                               code="not-a-member" if exc.status == 403 else "", status=exc.status) from None
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as exc:
            raise RelayUnreachable(f"cannot reach the relay at {self.url}: {_reason(exc)}") from None

    # -- blobs ------------------------------------------------------------------

    async def create_blob(self, network: str, handle: str, size: int) -> str:
        return (await self._authed(network, handle, "POST", f"/v1/networks/{network}/blobs",
                                   json={"size": size}))["blob"]

    async def blob_offset(self, network: str, handle: str, blob_id: str) -> int:
        response = await self._authed(network, handle, "HEAD", f"/v1/networks/{network}/blobs/{blob_id}")
        return int(response.headers["Upload-Offset"])

    async def upload_piece(self, network: str, handle: str, blob_id: str, offset: int, data: bytes) -> int:
        response = await self._authed(
            network, handle, "PATCH", f"/v1/networks/{network}/blobs/{blob_id}", data=data,
            headers={"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
        return int(response.headers["Upload-Offset"])

    async def download(self, network: str, handle: str, blob_id: str, start: int,
                       sink: Callable[[bytes], None], *, limit: int) -> int:
        """Stream the blob from ``start`` into ``sink``, at most ``limit`` bytes; returns bytes received.

        A relay that sends more than ``limit`` is refused (TrustError) at the first byte
        too many: what it sent beyond is never passed to ``sink``.
        """
        headers = {"Authorization": f"Bearer {self._tokens[(network, handle)][0]}"}
        if start:
            headers["Range"] = f"bytes={start}-"
        response = await self._request("GET", f"/v1/networks/{network}/blobs/{blob_id}",
                                       headers=headers, expect=(200, 206), raw=True)
        too_much = TrustError(f"the relay at {self.url} sent more than the {limit} bytes asked for: refused")
        received = 0
        try:
            if start and response.status != 206:
                raise TrustError(f"the relay at {self.url} sent the whole file when asked for its end: refused")
            if response.content_length is not None and response.content_length > limit:
                raise too_much
            async for chunk in response.content.iter_chunked(READ_PIECE):
                if received + len(chunk) > limit:
                    raise too_much
                sink(chunk)
                received += len(chunk)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise RelayUnreachable(f"the download from {self.url} dropped: {_reason(exc)}") from None
        except TrustError:
            response.close()            # drop the connection: the rest is never read
            raise
        finally:
            response.release()
        return received


#: a mailbox page holds at most this many items (the relay's page size is far smaller)
MAX_MAILBOX_ITEMS = 10_000
_MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def receipt_mismatch(receipt: dict, envelope: dict, sender: str) -> str | None:
    """What in a verified ``submission-accepted`` receipt differs from the envelope we submitted.

    The signature alone proves only that the relay said *something*: a receipt for another
    envelope, other recipients or another network must not count as acceptance of ours.
    """
    if receipt["kind"] != "submission-accepted":
        return f"it says {receipt['kind']}"
    if receipt["message_id"] != envelope["id"]:
        return "it names another message id"
    if receipt["envelope_hash"] != b64e(envelope_hash(envelope)):
        return "it names another envelope hash"
    if receipt["network"] != envelope["network"]:
        return "it names another network"
    if receipt["sender"] != sender:
        return "it names another sender"
    if list(receipt["recipients"]) != list(envelope["recipients"]):
        return "it names other recipients"
    return None


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.split("\n", 1)[0][:200]


def _fp(key_b64: str | None) -> str:
    try:
        return format_fingerprint(IdentityPublicKey(b64d(key_b64)).fingerprint())
    except Exception:
        return "(none)"


def _printable(text: str) -> str:
    return "".join(ch for ch in text if ch.isprintable())


def _refusal(status: int, body: bytes) -> RelayRefused:
    try:
        data = parse(body)
        code, message = str(data["error"]), str(data["message"])
    except Exception:
        code, message = "", f"the relay answered HTTP {status}"
    hints = {"not-a-member": "you may have been removed from this network",
             "rate-limited": "wait a moment and try again"}
    # The relay's message is untrusted text: printable characters only, bounded.
    message = _printable(message)[:300]
    return RelayRefused(f"the relay refused: {message}", code=code, status=status, hint=hints.get(code))
