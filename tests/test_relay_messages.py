"""Messages: submit, mailbox, fetch, collected, status, retention."""

from __future__ import annotations

import os

import pytest

from keys.constants import HOUR
from keys.encoding import b64e
from keys.envelope import envelope_hash
from keys.errors import ReceiptError
from keys.log import default_policy
from keys.receipts import evidence_hash, verify_chain, verify_relay_receipt
from tests.relay_helpers import create_network, members, relay, trio  # noqa: F401  (fixtures)


async def fetch(network, member, message_id):
    return await network.relay.get(f"{network.path}/messages/{message_id}", member=member)


async def collect(network, member, message_id):
    return await network.relay.post(f"{network.path}/messages/{message_id}/collected",
                                    member=member)


async def status(network, member, message_id):
    return await network.relay.get(f"{network.path}/messages/{message_id}/status", member=member)


async def mailbox(network, member, query: str = ""):
    reply = await network.relay.get(f"{network.path}/mailbox{query}", member=member)
    assert reply.status == 200, reply
    return reply.json()


# -- submit --------------------------------------------------------------------------------------

async def test_submit_returns_a_signed_submission_receipt(trio):
    ana, bob, carol = members(trio)
    envelope, _ = trio.seal(ana, ["bob", "carol"])
    reply = await trio.submit(ana, envelope)
    assert reply.status == 201, reply
    receipt = reply.json()["receipt"]
    verify_relay_receipt(receipt, trio.relay.state.key.public)
    verify_relay_receipt(receipt, trio.relay.state.key.public.fingerprint())   # pinned form
    assert receipt["kind"] == "submission-accepted"
    assert receipt["message_id"] == envelope["id"]
    assert receipt["envelope_hash"] == b64e(envelope_hash(envelope))
    assert receipt["network"] == b64e(trio.genesis_hash)
    assert (receipt["sender"], receipt["recipients"]) == ("ana", ["bob", "carol"])
    assert receipt["time"] == trio.relay.now()
    assert receipt["log_seq"] == trio.roster.seq        # the log head when it was accepted
    # The recipients can open what the relay stored and handed back.
    stored = (await fetch(trio, bob, envelope["id"])).json()["envelope"]
    assert trio.open(bob, stored).body == "hello"


async def test_sender_must_be_the_authenticated_member(trio):
    ana, bob, _ = members(trio)
    envelope, _ = trio.seal(ana, ["carol"])
    reply = await trio.submit(bob, envelope)
    assert (reply.status, reply.error) == (403, "forbidden")
    assert (await trio.relay.table_counts())["messages"] == 0


async def test_recipients_must_be_active_members(trio):
    ana, bob, carol = members(trio)
    envelope, _ = trio.seal(ana, ["bob", "carol"])
    await trio.remove("carol")
    reply = await trio.submit(ana, envelope)
    assert (reply.status, reply.error) == (400, "bad-envelope")
    assert "carol" in reply.json()["message"]

    # A handle that was never a member (the wrapped key copied, the shape kept valid).
    envelope, _ = trio.seal(ana, ["bob"])
    envelope["recipients"] = ["bob", "zed"]
    envelope["wrapped"]["zed"] = envelope["wrapped"]["bob"]
    reply = await trio.submit(ana, envelope)
    assert (reply.status, reply.error) == (400, "bad-envelope")
    assert (await trio.relay.table_counts())["messages"] == 0


async def test_envelope_for_another_network_refused(trio):
    ana, _, _ = members(trio)
    envelope, _ = trio.seal(ana, ["bob"])
    envelope["network"] = b64e(os.urandom(32))
    reply = await trio.submit(ana, envelope)
    assert (reply.status, reply.error) == (400, "bad-envelope")


@pytest.mark.parametrize("limit", ["max_recipients", "max_message_bytes", "max_attachments"])
async def test_policy_limits(trio, limit):
    """An envelope sealed under a looser policy is refused once the network tightens it."""
    ana, _, _ = members(trio)
    manifest = ()
    if limit == "max_attachments":
        manifest = [await trio.attach(ana, b"exhibit A")]
    body = "x" * 4000 if limit == "max_message_bytes" else "hello"
    envelope, _ = trio.seal(ana, ["bob", "carol"], body, manifest=manifest)
    tight = {**default_policy(), "max_recipients": 1, "max_message_bytes": 1024,
             "max_attachments": 0}
    policy = {**default_policy(), limit: tight[limit]}
    reply = await trio.append(trio.entry("set-policy", {"policy": policy}, [ana.identity]))
    assert reply.status == 201
    reply = await trio.submit(ana, envelope)
    assert (reply.status, reply.error) == (413, "too-large"), reply
    assert (await trio.relay.table_counts())["messages"] == 0


async def test_retry_returns_the_same_receipt_and_stores_once(trio):
    ana, bob, _ = members(trio)
    envelope, _ = trio.seal(ana, ["bob"])
    first = await trio.submit(ana, envelope)
    trio.relay.clock.advance(5)
    again = await trio.submit(ana, envelope)
    assert (first.status, again.status) == (201, 200)
    assert again.body == first.body
    assert len((await mailbox(trio, bob))["messages"]) == 1
    rows = await trio.relay.table_counts()
    assert (rows["messages"], rows["envelopes"], rows["deliveries"]) == (1, 1, 1)


async def test_same_id_different_envelope_refused(trio):
    ana, bob, _ = members(trio)
    envelope, _ = trio.seal(ana, ["bob"])
    assert (await trio.submit(ana, envelope)).status == 201
    other, _ = trio.seal(ana, ["bob"], "another text")
    other = {**other, "id": envelope["id"]}
    reply = await trio.submit(ana, other)
    assert (reply.status, reply.error) == (409, "message-id-reused")
    stored = (await fetch(trio, bob, envelope["id"])).json()["envelope"]
    assert stored == envelope


# -- mailbox ---------------------------------------------------------------------------------------

async def test_mailbox_cursor_paging(trio):
    ana, bob, carol = members(trio)
    sent = [(await trio.send(ana, ["bob"], f"message {i}"))[0]["id"] for i in range(5)]
    await trio.send(ana, ["carol"])                       # not bob's

    page = await mailbox(trio, bob, "?limit=2")
    assert [m["id"] for m in page["messages"]] == sent[:2]
    item = page["messages"][0]
    assert set(item) == {"cursor", "id", "sender", "size", "accepted_at"}
    assert item["sender"] == "ana" and item["size"] > 0
    cursors = [m["cursor"] for m in page["messages"]]
    assert cursors == sorted(cursors) and page["next"] == cursors[-1]

    seen, after = [], 0
    while True:
        page = await mailbox(trio, bob, f"?after={after}&limit=2")
        if not page["messages"]:
            assert page["next"] == after
            break
        seen += [m["id"] for m in page["messages"]]
        after = page["next"]
    assert seen == sent

    # Collected messages leave the mailbox; the cursor of the others does not change.
    await fetch(trio, bob, sent[0])
    assert (await collect(trio, bob, sent[0])).status == 200
    page = await mailbox(trio, bob)
    assert [m["id"] for m in page["messages"]] == sent[1:]


@pytest.mark.parametrize("query", ["?after=-1", "?after=x", "?limit=0", "?limit=501",
                                   "?limit=2.0", "?after=" + "9" * 30])
async def test_mailbox_parameters_checked(trio, query):
    reply = await trio.relay.get(f"{trio.path}/mailbox{query}", member=trio.admin)
    assert (reply.status, reply.error) == (400, "bad-request")


# -- fetch, delivery receipts, collection -----------------------------------------------------

async def test_fetch_records_a_chained_delivery_receipt(trio):
    ana, bob, carol = members(trio)
    envelope, submission = await trio.send(ana, ["bob", "carol"])
    relay_key = trio.relay.state.key.public

    trio.relay.clock.advance(3)
    reply = await fetch(trio, bob, envelope["id"])
    assert reply.status == 200
    body = reply.json()
    assert body["envelope"] == envelope
    delivered_bob = body["receipt"]
    verify_relay_receipt(delivered_bob, relay_key)
    assert (delivered_bob["kind"], delivered_bob["recipient"]) == ("delivered", "bob")
    assert delivered_bob["prev"] == b64e(evidence_hash(submission))

    # A second fetch hands back the same receipt, not a new one.
    assert (await fetch(trio, bob, envelope["id"])).json()["receipt"] == delivered_bob

    assert body["submission"] == submission and body["chain"] == []
    carol_sees = (await fetch(trio, carol, envelope["id"])).json()
    delivered_carol = carol_sees["receipt"]
    verify_relay_receipt(delivered_carol, relay_key)
    # Carol is shown what links her delivery to the submission: Bob's delivery before it.
    assert carol_sees["submission"] == submission and carol_sees["chain"] == [delivered_bob]
    chains = verify_chain([submission, delivered_bob, delivered_carol])
    assert chains[envelope["id"]] == [submission, delivered_bob, delivered_carol]
    with pytest.raises(ReceiptError):
        verify_chain([delivered_bob, delivered_carol])          # the root is needed

    # The sender fetches its own envelope without creating evidence.
    reply = await fetch(trio, ana, envelope["id"])
    assert reply.json() == {"envelope": envelope, "receipt": None, "submission": submission,
                            "chain": []}

    result = (await status(trio, ana, envelope["id"])).json()
    assert result["recipients"]["bob"]["state"] == "delivered"
    assert verify_chain(result["receipts"])[envelope["id"]] == [submission, delivered_bob,
                                                               delivered_carol]


async def test_non_recipient_cannot_fetch_collect_or_read_status(trio):
    ana, bob, carol = members(trio)
    envelope, _ = await trio.send(ana, ["bob"])
    for reply in (await fetch(trio, carol, envelope["id"]),
                  await collect(trio, carol, envelope["id"]),
                  await status(trio, carol, envelope["id"]),
                  await status(trio, bob, envelope["id"])):       # status is the sender's
        assert (reply.status, reply.error) == (404, "no-message"), reply
    for bad in ("nope", "a" * 65, b64e(os.urandom(16))):
        assert (await fetch(trio, bob, bad)).status == 404


async def test_envelope_deleted_once_every_recipient_collected(trio):
    ana, bob, carol = members(trio)
    envelope, _ = await trio.send(ana, ["bob", "carol"])
    mid = envelope["id"]
    await fetch(trio, bob, mid)
    reply = await collect(trio, bob, mid)
    assert reply.json() == {"collected": True, "deleted": False}
    assert (await collect(trio, bob, mid)).json() == {"collected": True, "deleted": False}
    assert (await trio.relay.table_counts())["envelopes"] == 1

    await fetch(trio, carol, mid)
    reply = await collect(trio, carol, mid)
    assert reply.json() == {"collected": True, "deleted": True}
    assert (await trio.relay.table_counts())["envelopes"] == 0

    reply = await fetch(trio, bob, mid)
    assert (reply.status, reply.error) == (410, "gone")
    # The evidence outlives the envelope.
    result = (await status(trio, ana, mid)).json()
    assert {h: r["state"] for h, r in result["recipients"].items()} == {
        "bob": "collected", "carol": "collected"}
    assert len(verify_chain(result["receipts"])[mid]) == 3


async def test_collected_without_a_fetch_still_records_delivery(trio):
    ana, bob, carol = members(trio)
    envelope, _ = await trio.send(ana, ["bob"])
    assert (await collect(trio, bob, envelope["id"])).json() == {"collected": True, "deleted": True}
    result = (await status(trio, ana, envelope["id"])).json()
    assert [r["kind"] for r in result["receipts"]] == ["submission-accepted", "delivered"]
    assert len(verify_chain(result["receipts"])[envelope["id"]]) == 2


async def test_status_is_the_senders_view(trio):
    ana, bob, carol = members(trio)
    envelope, submission = await trio.send(ana, ["bob", "carol"])
    reply = await status(trio, ana, envelope["id"])
    assert reply.status == 200
    result = reply.json()
    assert result["id"] == envelope["id"]
    assert result["receipts"] == [submission]
    assert result["recipients"]["bob"] == {"state": "waiting", "delivered_at": None,
                                           "collected_at": None, "expired_at": None}


# -- retention -----------------------------------------------------------------------------------

async def test_retention_expires_uncollected_envelopes(relay):
    network = await create_network(relay, policy={**default_policy(), "retention": HOUR})
    ana = network.admin
    bob = await network.add_member("bob")
    carol = await network.add_member("carol")
    dave = await network.add_member("dave")
    envelope, submission = await network.send(ana, ["bob", "carol", "dave"])
    mid = envelope["id"]
    await fetch(network, bob, mid)
    await collect(network, bob, mid)            # bob collected
    await fetch(network, carol, mid)            # carol fetched but never confirmed; dave nothing

    assert await relay.sweep() == {"not_collected": 0, "invites": 0, "blobs": 0}
    await network.advance(HOUR)
    swept = await relay.sweep()
    assert swept["not_collected"] == 2
    assert (await relay.table_counts())["envelopes"] == 0

    assert (await fetch(network, dave, mid)).status == 410
    assert (await mailbox(network, dave))["messages"] == []
    assert (await mailbox(network, carol))["messages"] == []

    result = (await status(network, ana, mid)).json()
    states = {h: r["state"] for h, r in result["recipients"].items()}
    assert states == {"bob": "collected", "carol": "not-collected", "dave": "not-collected"}
    assert result["recipients"]["dave"]["expired_at"] == relay.now()
    relay_key = relay.state.key.public
    for receipt in result["receipts"]:
        verify_relay_receipt(receipt, relay_key)
    kinds = [(r["kind"], r.get("recipient")) for r in verify_chain(result["receipts"])[mid]]
    # carol already has her delivery outcome; dave gets the not-collected receipt.
    assert kinds == [("submission-accepted", None), ("delivered", "bob"),
                     ("delivered", "carol"), ("not-collected", "dave")]
    assert (await relay.sweep())["not_collected"] == 0     # nothing twice
