"""Messages: submit, mailbox, fetch, collected, status.

POST /v1/networks/{network}/messages                 {"envelope"} -> {"receipt"} (201 new, 200 retry)
GET  /v1/networks/{network}/mailbox?after=C&limit=N  envelopes waiting for me, in cursor order
GET  /v1/networks/{network}/messages/{id}            the envelope, its submission receipt; a
                                                     recipient's first fetch records delivery and
                                                     returns its receipt, chained to the submission
POST /v1/networks/{network}/messages/{id}/collected  I have it: delete once everyone has it
GET  /v1/networks/{network}/messages/{id}/status     the sender's view: per-recipient evidence,
                                                     and a signed statement of the chain's end
"""

from __future__ import annotations

import hashlib

from aiohttp import web

from keys.encoding import b64e, canonical, parse
from keys.envelope import check_envelope_shape
from keys.errors import EnvelopeError
from keys.receipts import evidence_hash, make_relay_receipt, verify_chain
from keys.relay_status import make_status

from ..constants import MAX_MAILBOX_PAGE
from ..errors import RelayError
from ..httputil import json_response, path_id, path_name, query_int, read_json
from ..context import RELAY


async def submit(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    state, member = await relay.member(request, network)
    envelope = (await read_json(request, {"envelope"}))["envelope"]
    roster = state.roster
    try:
        check_envelope_shape(envelope, roster.policy)
    except EnvelopeError as exc:
        raise RelayError("too-large" if exc.reason == "too-large" else "bad-envelope",
                         exc.message) from None
    if envelope["sender"] != member.handle:
        raise RelayError("forbidden", "the envelope's sender must be you")
    if envelope["network"] != b64e(state.genesis_hash):
        raise RelayError("bad-envelope", "the envelope names another network")
    for handle in envelope["recipients"]:
        recipient = roster.member(handle)
        if recipient is None or not recipient.active:
            raise RelayError("bad-envelope", f"{handle} is not an active member of this network")
    text = canonical(envelope, checked=True)          # read_json parsed (and checked) it
    digest = hashlib.sha256(text).digest()            # = keys.envelope.envelope_hash, text at hand
    now = relay.now()
    # log_seq: the log as this relay knew it when it accepted; a recipient counts a signature
    # by a key replaced later only if it was accepted before the replacing entry (break 2).
    receipt = make_relay_receipt(
        relay.key_for(state), "submission-accepted", network=envelope["network"], message_id=envelope["id"],
        envelope_hash=digest, sender=member.handle, time=now, recipients=envelope["recipients"],
        log_seq=roster.seq)
    stored, created = await relay.store.submit_message(
        network, envelope["id"], member.handle, envelope["recipients"], text.decode("utf-8"),
        b64e(digest), len(text), envelope["blobs"], canonical(receipt).decode("utf-8"), now)
    if created:
        relay.metrics.inc("comity_messages_accepted_total")
        relay.metrics.inc("comity_bytes_received_total", len(text))
        event = {"type": "message", "id": envelope["id"], "sender": member.handle}
        for handle in envelope["recipients"]:
            relay.hub.publish(network, handle, event)
            relay.metrics.inc("comity_push_events_total")
    body = b'{"receipt":' + stored.encode("utf-8") + b"}"
    return web.Response(body=body, status=201 if created else 200, content_type="application/json")


async def mailbox(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    _, member = await relay.member(request, network)
    after = query_int(request, "after", 0, 0, 2**62)
    limit = query_int(request, "limit", MAX_MAILBOX_PAGE, 1, MAX_MAILBOX_PAGE)
    rows = await relay.store.mailbox(network, member.handle, after, limit)
    return json_response({
        "messages": [{"cursor": r.cursor, "id": r.message_id, "sender": r.sender, "size": r.size,
                      "accepted_at": r.accepted_at} for r in rows],
        "next": rows[-1].cursor if rows else after,
    })


async def _deliver(relay, state, message, handle: str) -> str:
    """Record ``handle``'s collection of ``message`` (once) and return its signed receipt."""
    def make_receipt(prev: str) -> str:
        return canonical(make_relay_receipt(
            relay.key_for(state), "delivered", network=b64e(state.genesis_hash),
            message_id=message.message_id, envelope_hash=message.envelope_hash, sender=message.sender,
            time=relay.now(), recipient=handle, prev=prev)).decode("utf-8")

    receipt, first = await relay.store.record_delivery(state.name, message.message_id, handle,
                                                       make_receipt, relay.now())
    if first:
        relay.metrics.inc("comity_messages_delivered_total")
        relay.hub.publish(state.name, message.sender, {"type": "status", "id": message.message_id})
    return receipt


async def fetch(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    state, member = await relay.member(request, network)
    message_id = path_id(request, "id", "no-message")
    message = await relay.store.get_message(network, message_id)
    chain: list[str] = []
    if member.handle in message.recipients:
        envelope = await relay.store.get_envelope(network, message_id)
        receipt = await _deliver(relay, state, message, member.handle)
        chain = await _between(relay, network, message, receipt)
        relay.metrics.inc("comity_bytes_sent_total", len(envelope))
    elif member.handle == message.sender:
        envelope, receipt = await relay.store.get_envelope(network, message_id), "null"
    else:
        raise RelayError("no-message")
    body = (b'{"envelope":' + envelope.encode("utf-8") + b',"receipt":' + receipt.encode("utf-8")
            + b',"submission":' + message.receipt.encode("utf-8")
            + b',"chain":[' + ",".join(chain).encode("utf-8") + b"]}")
    return web.Response(body=body, content_type="application/json")


def _evidence_hash(text: str) -> str:
    # Receipts are stored as canonical JSON, so this is keys.receipts.evidence_hash.
    return b64e(hashlib.sha256(text.encode("utf-8")).digest())


async def _between(relay, network: str, message, delivery: str) -> list[str]:
    """The relay receipts linking the submission receipt to ``delivery`` (earlier recipients'
    outcomes), oldest first, so the recipient can check its delivery chains from the
    submission it is shown. Empty for the first recipient to collect."""
    root = _evidence_hash(message.receipt)
    prev = parse(delivery)["prev"]
    if prev == root:
        return []
    status = await relay.store.message_status(network, message.message_id)
    by_hash = {_evidence_hash(text): text for r in status.recipients for text in r.receipts.values()}
    chain: list[str] = []
    while prev != root and prev in by_hash and len(chain) < len(by_hash):
        chain.append(by_hash[prev])
        prev = parse(by_hash[prev])["prev"]
    return chain[::-1]


async def collected(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    state, member = await relay.member(request, network)
    message_id = path_id(request, "id", "no-message")
    message = await relay.store.get_message(network, message_id)
    if member.handle not in message.recipients:
        raise RelayError("no-message")
    # Collecting without fetching still leaves the sender its delivery evidence.
    await _deliver(relay, state, message, member.handle)
    deleted = await relay.store.mark_collected(network, message_id, member.handle, relay.now())
    return json_response({"collected": True, "deleted": deleted})


async def status(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    state, member = await relay.member(request, network)
    message_id = path_id(request, "id", "no-message")
    result = await relay.store.message_status(network, message_id)
    if result.message.sender != member.handle:
        raise RelayError("no-message")
    receipts = [parse(result.message.receipt)]
    recipients = {}
    for r in result.recipients:
        recipients[r.recipient] = {"state": r.state, "delivered_at": r.delivered_at,
                                   "collected_at": r.collected_at, "expired_at": r.expired_at}
        receipts.extend(parse(text) for text in r.receipts.values())
    # Signed over the end of the chain, so an evidence bundle cannot leave a receipt out.
    chain = verify_chain(receipts)[message_id]
    statement = make_status(
        relay.key_for(state), network=b64e(state.genesis_hash), message_id=message_id,
        envelope_hash=result.message.envelope_hash, sender=result.message.sender, time=relay.now(),
        chain_head=evidence_hash(chain[-1]), log_head=state.roster.head())
    return json_response({"id": message_id, "recipients": recipients, "receipts": receipts,
                          "statement": statement})
