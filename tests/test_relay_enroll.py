"""Invites and enrollment: the relay holds only the invite id and passes requests to admins."""

from __future__ import annotations

import os

from keys.constants import DAY, HOUR
from keys.encoding import b64e
from keys.hpke import EncryptionKey, make_key_record
from keys.invite import Invite, make_enrollment_request
from relay.constants import INVITE_TTL
from tests.relay_helpers import Member, create_network, relay  # noqa: F401  (fixture)


async def pending(network, member=None) -> list[dict]:
    reply = await network.relay.get(network.path + "/enrollments", member=member or network.admin)
    assert reply.status == 200, reply
    return reply.json()["enrollments"]


async def test_invite_enroll_list_approve(relay):
    network = await create_network(relay)
    invite = await network.invite("bob", "member")
    rows = await relay.table_counts()
    assert rows["invites"] == 1

    # The relay stores the invite id (a hash of the secret), never the secret or the code.
    files = b"".join(relay.files().values())
    assert invite.secret not in files and b64e(invite.secret).encode() not in files

    newcomer, reply = await network.enroll(invite)
    assert (reply.status, reply.json()) == (202, {"status": "pending"})

    listed = await pending(network)
    assert len(listed) == 1
    item = listed[0]
    assert item["invite_id"] == b64e(invite.invite_id)
    assert (item["handle"], item["role"], item["invited_by"]) == ("bob", "member", "ana")
    assert item["request"]["identity_key"] == newcomer.identity.public.b64()
    assert item["expires"] == relay.now() + INVITE_TTL

    reply = await network.approve(invite, newcomer)
    assert reply.status == 201, reply
    # The answered invite and its request disappear.
    assert await pending(network) == []
    assert (await relay.table_counts())["invites"] == 0
    assert (await relay.table_counts())["enrollments"] == 0


async def test_add_member_flow_gives_a_working_member(relay):
    network = await create_network(relay)
    bob = await network.add_member("bob")
    assert network.roster.member("bob").identity_key == bob.identity.public
    reply = await relay.get(network.path + "/mailbox", member=bob)
    assert reply.status == 200


async def test_enrollment_resubmitted_is_idempotent_but_not_replaceable(relay):
    network = await create_network(relay)
    invite = await network.invite("bob")
    code = Invite.from_code(invite.to_code())
    bob = Member.generate("bob", relay.now())
    request = make_enrollment_request(code, bob.identity, bob.key_record)
    for _ in range(2):
        reply = await relay.post(network.path + "/enrollments", {"request": request})
        assert reply.status == 202, reply
    other = Member.generate("bob", relay.now())
    reply = await relay.post(network.path + "/enrollments",
                             {"request": make_enrollment_request(code, other.identity,
                                                                 other.key_record)})
    assert (reply.status, reply.error) == (409, "conflict")
    listed = await pending(network)
    assert [e["request"] for e in listed] == [request]


async def test_only_admins_invite_and_list(relay):
    network = await create_network(relay)
    bob = await network.add_member("bob")
    reply = await relay.post(network.path + "/invites",
                             {"invite_id": b64e(os.urandom(32)), "handle": "carol",
                              "role": "member"},
                             member=bob)
    assert (reply.status, reply.error) == (403, "not-an-admin")
    reply = await relay.get(network.path + "/enrollments", member=bob)
    assert (reply.status, reply.error) == (403, "not-an-admin")
    reply = await relay.get(network.path + "/enrollments")
    assert (reply.status, reply.error) == (401, "unauthenticated")
    assert (await relay.table_counts())["invites"] == 0


async def test_promoted_member_becomes_admin_at_once(relay):
    network = await create_network(relay)
    bob = await network.add_member("bob")
    entry = network.entry("set-role", {"handle": "bob", "role": "admin"}, [network.admin.identity])
    assert (await network.append(entry)).status == 201
    assert (await relay.get(network.path + "/enrollments", member=bob)).status == 200


async def test_invite_registration_checks(relay):
    network = await create_network(relay)
    ana = network.admin

    async def register(**fields):
        body = {"invite_id": b64e(os.urandom(32)), "handle": "carol", "role": "member", **fields}
        return await relay.post(network.path + "/invites", body, member=ana)

    assert (await register(role="judge")).error == "bad-request"
    assert (await register(handle="Not A Handle")).error == "bad-request"
    assert (await register(invite_id="../../x")).error == "bad-request"
    assert (await register(expires=relay.now() + INVITE_TTL + 1)).error == "bad-request"
    assert (await register(expires=relay.now() - 1)).error == "bad-request"
    assert (await register(handle="ana")).status == 409                  # already a member
    reply = await register(expires=relay.now() + HOUR)
    assert reply.status == 201 and reply.json()["expires"] == relay.now() + HOUR
    taken = b64e(os.urandom(32))
    assert (await register(invite_id=taken)).status == 201
    assert (await register(invite_id=taken, handle="dave")).status == 409
    assert (await relay.table_counts())["invites"] == 2


async def test_expired_invite_refuses_enrollment_and_is_swept(relay):
    network = await create_network(relay)
    early = await network.invite("bob", expires=relay.now() + HOUR)
    late = await network.invite("carol", expires=relay.now() + 2 * DAY)
    _, reply = await network.enroll(late)
    assert reply.status == 202
    await network.advance(HOUR)

    _, reply = await network.enroll(early)
    assert (reply.status, reply.error) == (404, "no-invite")
    assert [e["handle"] for e in await pending(network)] == ["carol"]

    swept = await relay.sweep()
    assert swept["invites"] == 1
    assert (await relay.table_counts())["invites"] == 1

    await network.advance(2 * DAY)
    assert await pending(network) == []                       # expired: no longer listed
    assert (await relay.sweep())["invites"] == 1
    assert (await relay.table_counts())["enrollments"] == 0


async def test_enrollment_must_match_the_invite(relay):
    refco = await create_network(relay, "refco")
    sahel = await create_network(relay, "sahel", admin="moussa")
    invite = await refco.invite("bob")

    # Answered to the wrong network.
    bob = Member.generate("bob", relay.now())
    request = make_enrollment_request(invite, bob.identity, bob.key_record)
    reply = await relay.post(sahel.path + "/enrollments", {"request": request})
    assert (reply.status, reply.error) == (400, "bad-request")

    # For another handle than the invite was made for (same secret, so same invite id).
    twisted = Invite(invite.relay_url, invite.relay_fingerprint, invite.network,
                     invite.network_hash, "eve", invite.role, invite.secret)
    eve = Member.generate("eve", relay.now())
    reply = await relay.post(refco.path + "/enrollments",
                             {"request": make_enrollment_request(twisted, eve.identity,
                                                                 eve.key_record)})
    assert (reply.status, reply.error) == (400, "bad-request")

    # An unknown invite.
    stranger = Invite.create(relay_url=invite.relay_url, relay_fingerprint=invite.relay_fingerprint,
                             network="refco", network_hash=refco.genesis_hash, handle="bob",
                             role="member")
    reply = await relay.post(refco.path + "/enrollments",
                             {"request": make_enrollment_request(stranger, bob.identity,
                                                                 bob.key_record)})
    assert (reply.status, reply.error) == (404, "no-invite")
    assert (await relay.table_counts())["enrollments"] == 0


async def test_enrollment_key_record_is_checked(relay):
    network = await create_network(relay)
    invite = await network.invite("bob")
    bob = Member.generate("bob", relay.now())
    other = Member.generate("other", relay.now())

    # A key record signed by someone else's identity key.
    request = make_enrollment_request(invite, bob.identity, bob.key_record)
    request["encryption_key"] = other.key_record
    reply = await relay.post(network.path + "/enrollments", {"request": request})
    assert (reply.status, reply.error) == (400, "bad-record")

    # A key record with a field a client would refuse.
    request = make_enrollment_request(invite, bob.identity, bob.key_record)
    request["encryption_key"] = {**bob.key_record, "comment": "hi"}
    reply = await relay.post(network.path + "/enrollments", {"request": request})
    assert (reply.status, reply.error) == (400, "bad-record")

    # An expired key record.
    old = make_key_record(bob.identity, EncryptionKey.generate().public, version=1,
                          created=relay.now() - 2 * DAY, not_after=relay.now() - DAY)
    request = make_enrollment_request(invite, bob.identity, old)
    reply = await relay.post(network.path + "/enrollments", {"request": request})
    assert (reply.status, reply.error) == (400, "bad-record")

    # Extra fields in the request itself.
    request = {**make_enrollment_request(invite, bob.identity, bob.key_record), "role": "admin"}
    reply = await relay.post(network.path + "/enrollments", {"request": request})
    assert (reply.status, reply.error) == (400, "bad-request")
    assert (await relay.table_counts())["enrollments"] == 0


async def test_relay_cannot_learn_the_mac_key_from_what_it_stores(relay):
    """What the relay holds for an invite is its id: the MAC needs the secret."""
    network = await create_network(relay)
    invite = await network.invite("bob")
    stored = await relay.store.get_invite("refco", b64e(invite.invite_id))
    assert stored.handle == "bob" and stored.role == "member"
    assert b64e(invite.invite_id) != b64e(invite.secret)
