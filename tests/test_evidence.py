"""Acknowledgements, status and evidence bundles, through the client library
against the real relay app on a loopback port.

The OpenSSL test runs exactly the commands docs/evidence.md gives an expert.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.api import Comity
from client.errors import RelayMismatch
from keys.encoding import b64d, b64e, canonical, parse
from keys.evidence import bundle_bytes, make_bundle, public_key_pem, verify_bundle_bytes
from keys.identity import IdentityKey, format_fingerprint
from keys.receipts import evidence_hash, make_relay_receipt
from keys.relay_status import make_status
from relay.app import make_app
from relay.handlers.networks import creation_token_hash
from relay.settings import RelaySettings
from relay.context import RELAY
from relay.keyring import RelayKeys

NETWORK = "sahel-demo"
PASSPHRASE = "evidence test passphrase"


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch):
    monkeypatch.setenv("COMITY_INSECURE_FAST_KDF", "1")


@pytest.fixture
async def members(tmp_path):
    """A relay and a network: admin 'ana' and members 'bob', 'carol'."""
    app = make_app(RelaySettings(data_dir=str(tmp_path / "relay"), access_log=False))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    url = f"http://127.0.0.1:{server.port}"
    await app[RELAY].store.add_creation_token(NETWORK, creation_token_hash("t" * 24), int(time.time()) + 600)
    people = {}
    ana = people["ana"] = Comity.at(tmp_path / "ana")
    ana.create_identity("ana", PASSPHRASE)
    await ana.create_network(NETWORK, url, "t" * 24)
    for handle in ("bob", "carol"):
        person = people[handle] = Comity.at(tmp_path / handle)
        enrolled = await person.enroll(await ana.invite(NETWORK, handle), PASSPHRASE)
        await ana.approve(NETWORK, handle, fingerprint=enrolled["fingerprint"])
    people["_app"] = app
    yield people
    for key, person in people.items():
        if key != "_app":
            await person.close()
    await server.close()


async def test_status_accepted_delivered_acknowledged_and_tampered_copy_rejected(members):
    ana, bob, carol = members["ana"], members["bob"], members["carol"]
    sent = await ana.send(NETWORK, ["bob", "carol"], {"type": "request", "subject": "MLA 7"}, "please")
    status = await ana.status(sent["id"])
    for handle in ("bob", "carol"):
        r = status["recipients"][handle]
        assert r["accepted"] and r["delivered"] is None and r["acknowledged"] is None

    await bob.inbox()
    r = (await ana.status(sent["id"]))["recipients"]["bob"]
    assert r["delivered"] and r["acknowledged"] and r["rejected"] is None

    # A copy altered on the way to carol (here: flipped in the relay's database).
    store = members["_app"][RELAY].store
    original = await store.get_envelope(NETWORK, sent["id"])
    envelope = parse(original)
    envelope["ciphertext"] = ("B" if envelope["ciphertext"][0] != "B" else "C") + envelope["ciphertext"][1:]
    await store.db.write(lambda db: db.execute("UPDATE envelopes SET envelope = ? WHERE message_id = ?",
                                               [canonical(envelope).decode(), sent["id"]]))
    new = await carol.inbox()
    assert [m["verified"] for m in new] == [False] and new[0]["reason"] == "decryption-failed"
    assert carol.messages() and not carol.messages()[0]["verified"]      # kept aside, reported
    r = (await ana.status(sent["id"]))["recipients"]["carol"]
    assert r["rejected"] and r["reason"] == "decryption-failed" and r["acknowledged"] is None
    # The rejection names the hash of what carol got: evidence of tampering, inside the chain.
    bundle = members["ana"].home / "tampered.json"
    await ana.export(sent["id"], bundle)
    report = verify_bundle_bytes(bundle.read_bytes())
    assert report.ok, [f.text for f in report.findings if not f.ok]
    assert any("differs from what the relay accepted" in f.text for f in report.findings)


async def test_receipts_are_not_listed_as_mail_and_not_acknowledged(members):
    ana, bob = members["ana"], members["bob"]
    sent = await ana.send(NETWORK, ["bob"], {"type": "request", "subject": "x"}, "y")
    await bob.inbox()
    assert await ana.inbox() == []              # the acknowledgement is evidence, not mail
    assert ana.messages() == []
    await bob.inbox()                          # nothing comes back to bob: receipts are not acked
    assert [m["id"] for m in bob.messages()] == [sent["id"]]


async def test_no_ack_sends_nothing(members):
    ana, bob = members["ana"], members["bob"]
    sent = await ana.send(NETWORK, ["bob"], {"type": "request", "subject": "x"}, "y")
    await bob.inbox(ack=False)
    r = (await ana.status(sent["id"]))["recipients"]["bob"]
    assert r["delivered"] and r["acknowledged"] is None


async def test_crash_before_collection_acknowledges_once(members):
    """Stored, then the process dies before telling the relay: fetched again, acked once."""
    ana, bob = members["ana"], members["bob"]
    sent = await ana.send(NETWORK, ["bob"], {"type": "request", "subject": "x"}, "y")
    row, relay, _ = await bob.connect(NETWORK)
    real_collected = relay.collected

    async def crash(*args):
        raise RuntimeError("power cut")
    relay.collected = crash
    with pytest.raises(RuntimeError):
        await bob.inbox()
    relay.collected = real_collected
    assert list(bob.state.rows("outbox", NETWORK))      # the acknowledgement waits in the outbox
    await bob.inbox()
    assert list(bob.state.rows("outbox", NETWORK)) == []
    await ana.inbox()
    acks = ana.state.get("message", NETWORK, sent["id"])["acks"]
    assert [a["recipient"] for a in acks] == ["bob"]
    assert len(bob.messages()) == 1


async def test_rotation_while_messages_are_in_flight_loses_none(members):
    ana, bob = members["ana"], members["bob"]
    before = await ana.send(NETWORK, ["bob"], {"type": "request", "subject": "before"}, "1")
    await bob.rotate()                                   # in flight: sealed to key version 1
    after = await ana.send(NETWORK, ["bob"], {"type": "request", "subject": "after"}, "2")
    new = await bob.inbox()
    assert sorted(m["subject"] for m in new) == ["after", "before"] and all(m["verified"] for m in new)
    assert ana.state.get("message", NETWORK, after["id"])["envelope"]["wrapped"]["bob"]["key_version"] == 2
    assert bob.read(before["id"])["body"] == "1"
    # Within the grace period the old private key is kept; past it, collecting mail
    # destroys it (forward secrecy), even without comity watch.
    await bob.inbox()
    assert [k["version"] for k in bob.whoami()["encryption_keys"]] == [1, 2]
    later = lambda: time.time() + 31 * 86400             # noqa: E731  (the default grace is 30 days)
    bob.clock = members["_app"][RELAY].clock = later     # the relay's signed log head moves on too
    await bob.inbox()
    assert [k["version"] for k in bob.whoami()["encryption_keys"]] == [2]


async def test_identity_rotation_needs_an_admin(members):
    ana, bob = members["ana"], members["bob"]
    old = bob.whoami()["fingerprint"]
    pending = await bob.rotate_identity(NETWORK)
    assert pending["status"] == "pending"
    assert {m["handle"]: m["fingerprint"] for m in await ana.members(NETWORK)}["bob"] == old
    approved = await ana.approve_rotation(NETWORK, "bob", fingerprint=pending["fingerprint"])
    assert approved["fingerprint"] == pending["fingerprint"] != old
    sent = await ana.send(NETWORK, ["bob"], {"type": "request", "subject": "new key"}, "z")
    assert [m["verified"] for m in await bob.inbox()] == [True]
    assert bob.whoami()["fingerprint"] == pending["fingerprint"]
    assert (await ana.status(sent["id"]))["recipients"]["bob"]["acknowledged"]


async def test_last_admin_cannot_step_down(members):
    from client.errors import ClientError
    ana = members["ana"]
    with pytest.raises(ClientError, match="last"):
        await ana.set_role(NETWORK, "ana", "member")
    await ana.set_role(NETWORK, "bob", "admin")
    await ana.set_role(NETWORK, "ana", "member")         # now allowed: bob is an admin
    assert {m["handle"]: m["role"] for m in await members["bob"].members(NETWORK)} == \
        {"ana": "member", "bob": "admin", "carol": "member"}


@pytest.fixture
async def bundle_file(members, tmp_path):
    ana = members["ana"]
    sent = await ana.send(NETWORK, ["bob", "carol"], {"type": "request", "subject": "évidence"}, "body")
    await members["bob"].inbox()
    await members["carol"].inbox()
    path = tmp_path / "bundle.json"
    await ana.export(sent["id"], path)
    return path


async def test_bundle_verifies_offline(bundle_file):
    report = verify_bundle_bytes(bundle_file.read_bytes())
    assert report.ok, [f.text for f in report.findings if not f.ok]
    texts = " ".join(f.text for f in report.findings)
    assert "acknowledged by bob" in texts and "acknowledged by carol" in texts
    assert bundle_file.stat().st_mode & 0o077 == 0       # it holds the message in clear


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_changed_byte_fails(bundle_file, data):
    raw = bundle_file.read_bytes()
    position = data.draw(st.integers(0, len(raw) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda b: b != raw[position]))
    changed = raw[:position] + bytes([value]) + raw[position + 1:]
    assert not verify_bundle_bytes(changed).ok


def test_every_byte_of_a_record_is_covered(bundle_file):
    """Exhaustive over one acknowledgement's bytes: no unsigned gap anywhere in it."""
    raw = bundle_file.read_bytes()
    start = raw.index(b'"kind":"acknowledged"')
    end = raw.index(b"}", start)
    for position in range(start, end):
        changed = raw[:position] + bytes([raw[position] ^ 0x01]) + raw[position + 1:]
        assert not verify_bundle_bytes(changed).ok, position


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_every_signature_checks_with_openssl_alone(bundle_file, tmp_path):
    bundle = parse(bundle_file.read_bytes())
    assert len(bundle["signatures"]) >= 8
    for item in bundle["signatures"]:
        (tmp_path / "key.pem").write_text(item["public_key_pem"])
        for name in ("signed_data_base64", "signature_base64"):
            # exactly as docs/evidence.md: `openssl base64 -d -A`
            decoded = subprocess.run(["openssl", "base64", "-d", "-A"], input=item[name].encode(),
                                     capture_output=True, check=True).stdout
            (tmp_path / name).write_bytes(decoded)
        verify = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "key.pem"), "-rawin",
                  "-in", str(tmp_path / "signed_data_base64"), "-sigfile", str(tmp_path / "signature_base64")]
        result = subprocess.run(verify, capture_output=True, text=True)
        assert result.returncode == 0 and "Signature Verified Successfully" in result.stdout, item["what"]
        # A changed signed byte fails under OpenSSL too.
        data = (tmp_path / "signed_data_base64").read_bytes()
        (tmp_path / "signed_data_base64").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        assert subprocess.run(verify, capture_output=True).returncode != 0


#: a body that no JSON tool is sure to write again byte for byte as canonical JSON does: DEL
#: (canonical JSON keeps it raw, jq writes \u007f), NUL and other control characters (escaped),
#: U+2028 and U+2029 (raw), characters outside the BMP, quotes and backslashes
AWKWARD_BODY = ("DEL \x7f NUL \x00 ESC \x1b LS \u2028 PS \u2029 astral \U0001d538 \U0001f600 "
                "\"quoted\" back\\slash é\nsecond line")
#: the name docs/evidence.md gives the bundle in its recipe
DOC_BUNDLE = "mla-2026-114.evidence.json"
DOC = Path(__file__).resolve().parents[1] / "docs" / "evidence.md"


def _doc_block(after: str) -> str:
    """The first ```sh block of docs/evidence.md after the line that contains ``after``."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    opening = next(i for i in range(start, len(lines)) if lines[i].strip() == "```sh")
    closing = next(i for i in range(opening + 1, len(lines)) if lines[i].strip() == "```")
    return "\n".join(lines[opening + 1:closing]) + "\n"


@pytest.fixture
async def awkward_bundle_file(members, tmp_path):
    ana = members["ana"]
    sent = await ana.send(NETWORK, ["bob"], {"type": "request", "subject": "awkward"}, AWKWARD_BODY)
    await members["bob"].inbox()
    path = tmp_path / "awkward.json"
    await ana.export(sent["id"], path)
    raw = path.read_bytes()
    # As canonical JSON writes them: DEL and U+2028 raw, NUL escaped.
    assert b"\x7f" in raw and "\u2028".encode() in raw and b"\\u0000" in raw and "\U0001f600".encode() in raw
    return path


@pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("jq") is None,
                    reason="openssl or jq is not installed")
@pytest.mark.parametrize("which", ["bundle_file", "awkward_bundle_file"])
def test_the_documented_recipe_checks_every_signature_and_the_bundle(which, request, tmp_path):
    """Exactly the shell lines of docs/evidence.md, in the expert's folder, with sh."""
    bundle = request.getfixturevalue(which)
    expert = tmp_path / "expert"
    expert.mkdir()
    (expert / DOC_BUNDLE).write_bytes(bundle.read_bytes())
    loop = subprocess.run(["sh", "-c", _doc_block("With `jq` and OpenSSL 3")], cwd=expert,
                          capture_output=True, text=True)
    count = len(parse(bundle.read_bytes())["signatures"])
    assert loop.returncode == 0 and loop.stdout.count("Signature Verified Successfully") == count, loop

    parsed = parse(bundle.read_bytes())
    exporter = next(e for e in parsed["log"] if e["kind"] == "genesis")["body"]["admin"]["identity_key"]
    (expert / "key.pem").write_text(public_key_pem(b64d(exporter)))    # "see below" in the doc
    whole = subprocess.run(["sh", "-c", f"B={DOC_BUNDLE}\n" + _doc_block("To check the signature by hand")],
                           cwd=expert, capture_output=True, text=True)
    assert whole.returncode == 0 and "Signature Verified Successfully" in whole.stdout, whole
    assert (expert / "bundle-signed.bin").read_bytes() == \
        b"comity/v1/evidence-bundle\x00" + canonical({k: v for k, v in parsed.items() if k != "exporter_signature"})
    count_member = subprocess.run(["sh", "-c", f"grep -o '\"exporter_signature\":' {DOC_BUNDLE} | wc -l"],
                                  cwd=expert, capture_output=True, text=True)
    assert count_member.stdout.strip() == "1"


def test_bundle_bytes_is_the_only_accepted_form(bundle_file):
    raw = bundle_file.read_bytes()
    bundle = parse(raw)
    assert bundle_bytes(bundle) == raw
    import json
    pretty = json.dumps(bundle, indent=1, ensure_ascii=False).encode()
    report = verify_bundle_bytes(pretty)
    assert not report.ok and "edited" in report.findings[-1].text


# -- comity-evidence-2: the relay key the log names, the content, and nothing left out ------------
#
# A lying sender holds its own identity key, so it can change a bundle and sign it again: every
# test below does exactly that (``rebuilt``), so what refuses the bundle is the rule under test,
# not the exporter's signature.

def rebuilt(bundle: dict, exporter: Comity, **changes) -> bytes:
    """The bundle with ``changes``, signed again by the (lying) exporter's own key."""
    fields = {name: bundle[name] for name in ("message_id", "envelope", "signed_payload", "evidence",
                                              "relay_status", "log", "exported_by", "exported_at")}
    fields["content_key"] = b64d(bundle["content_key"])
    fields.update(changes)
    return bundle_bytes(make_bundle(network=bundle["network"]["name"], exporter=exporter.identity, **fields))


def refusal(data: bytes) -> str:
    report = verify_bundle_bytes(data)
    assert not report.ok and report.recipients == {}, [f.text for f in report.findings]
    return " ".join(f.text for f in report.findings if not f.ok)


def relay_chain(bundle: dict) -> list[dict]:
    return [r for r in bundle["evidence"] if "relay_key" in r]


def forged_chain(bundle: dict, key: IdentityKey, time_shift: int = 0) -> tuple[list[dict], dict]:
    """The bundle's relay receipts and status statement, signed again by ``key`` (times shifted)."""
    records, prev = [], None
    for real in relay_chain(bundle):
        extra = ({"recipients": real["recipients"]} if "recipients" in real
                 else {"recipient": real["recipient"]})
        record = make_relay_receipt(key, real["kind"], network=real["network"], message_id=real["message_id"],
                                    envelope_hash=real["envelope_hash"], sender=real["sender"],
                                    time=real["time"] + time_shift, prev=prev, **extra)
        records.append(record)
        prev = evidence_hash(record)
    status = bundle["relay_status"]
    statement = make_status(key, network=status["network"], message_id=status["message_id"],
                            envelope_hash=status["envelope_hash"], sender=status["sender"],
                            time=status["time"] + time_shift, chain_head=prev, log_head=status["log_head"])
    return records, statement


async def test_a_rebuilt_bundle_verifies_so_the_refusals_below_are_the_rules(bundle_file, members):
    report = verify_bundle_bytes(rebuilt(parse(bundle_file.read_bytes()), members["ana"]))
    assert report.ok, [f.text for f in report.findings if not f.ok]


async def test_relay_receipts_under_a_key_the_log_never_named_are_refused(bundle_file, members):
    """The sender makes a key and signs back-dated receipts and a status with it."""
    bundle = parse(bundle_file.read_bytes())
    records, statement = forged_chain(bundle, IdentityKey.generate(), time_shift=-86400)
    text = refusal(rebuilt(bundle, members["ana"], evidence=records, relay_status=statement))
    assert "not signed by this network's relay" in text
    assert "not named by this network's membership log" in text
    # Forged receipts beside the relay's real status statement: refused all the same.
    text = refusal(rebuilt(bundle, members["ana"], evidence=records))
    assert "submission-accepted receipt is not signed by this network's relay" in text


async def test_content_swapped_under_the_relays_real_receipts_is_refused(bundle_file, members):
    ana = members["ana"]
    bundle = parse(bundle_file.read_bytes())
    payload = dict(bundle["signed_payload"]["payload"], body="we withdraw the request",
                   headers=dict(bundle["signed_payload"]["payload"]["headers"], subject="withdrawal"))
    swapped = {"payload": payload, "sig": ana.identity.sign_b64("message", payload)}
    # Without acknowledgements (they name the real payload's hash) nothing else ties the two.
    text = refusal(rebuilt(bundle, ana, signed_payload=swapped, evidence=relay_chain(bundle)))
    assert "holds another message than the bundle's signed payload: the content was swapped" in text
    text = refusal(rebuilt(bundle, ana, content_key=bytes(32)))
    assert "content key does not open the envelope the relay accepted" in text


async def test_a_relay_receipt_left_out_is_detected(bundle_file, members):
    ana = members["ana"]
    bundle = parse(bundle_file.read_bytes())
    chain = relay_chain(bundle)
    last = chain[-1]
    after_last = b64e(evidence_hash(last))
    without_last = [r for r in bundle["evidence"] if r is not last and r.get("prev") != after_last]
    assert len(without_last) == len(bundle["evidence"]) - 2      # the receipt and the ack after it
    assert "relay receipts were left out" in refusal(rebuilt(bundle, ana, evidence=without_last))
    middle = chain[1]
    without_middle = [r for r in bundle["evidence"] if r is not middle]
    assert "follows evidence that is missing" in refusal(rebuilt(bundle, ana, evidence=without_middle))


async def test_the_status_statement_is_about_this_message_and_the_whole_log(members, tmp_path):
    ana = members["ana"]
    sent = await ana.send(NETWORK, ["bob"], {"type": "request", "subject": "one"}, "1")
    other = await ana.send(NETWORK, ["bob"], {"type": "request", "subject": "two"}, "2")
    await ana.set_role(NETWORK, "carol", "admin")              # a log entry after both messages
    await ana.export(sent["id"], tmp_path / "one.json")
    await ana.export(other["id"], tmp_path / "two.json")
    bundle, second = (parse((tmp_path / f).read_bytes()) for f in ("one.json", "two.json"))
    text = refusal(rebuilt(bundle, ana, relay_status=second["relay_status"]))
    assert "status statement is about another message or envelope" in text
    # A log cut short before its newest entries (which could rotate the relay key or remove
    # someone) no longer reaches the log head the relay's status names.
    text = refusal(rebuilt(bundle, ana, log=bundle["log"][:-1]))
    assert "does not hold entry" in text and "cut short" in text


async def test_relay_key_rotation_old_receipts_count_until_the_entry_that_replaced_them(members, tmp_path):
    ana, bob = members["ana"], members["bob"]
    relay = members["_app"][RELAY]
    sent = await ana.send(NETWORK, ["bob"], {"type": "request", "subject": "before"}, "1")
    await bob.inbox()
    old = relay.key
    relay.keys = RelayKeys.of(IdentityKey.generate())   # rotated by hand: the old key is gone
    with pytest.raises(RelayMismatch, match="membership log does not name it"):
        await ana.members(NETWORK)
    with pytest.raises(RelayMismatch, match="not the .* you were given"):
        await ana.set_relay_key(NETWORK, IdentityKey.generate().public.fingerprint())
    named = await ana.set_relay_key(NETWORK, relay.key.public.fingerprint())
    assert named["relay_fingerprint"] == format_fingerprint(relay.key.public.fingerprint())
    await bob.inbox()                                           # bob's client follows the log
    assert bob.state.network(NETWORK).relay_key == relay.key.public.b64()
    await ana.export(sent["id"], tmp_path / "before.json")
    report = verify_bundle_bytes((tmp_path / "before.json").read_bytes())
    assert report.ok, [f.text for f in report.findings if not f.ok]    # old receipts, new status
    # Whoever kept the old key cannot vouch for anything dated after the entry that replaced it.
    bundle = parse((tmp_path / "before.json").read_bytes())
    records, statement = forged_chain(bundle, old, time_shift=3600)
    text = refusal(rebuilt(bundle, ana, evidence=records, relay_status=statement))
    assert "was replaced at log entry" in text
    # A relay holding the old key again is refused: by bob, who pinned the new key, and by
    # carol, who never saw the new key but reads the log that names it.
    relay.keys = RelayKeys.of(old)
    with pytest.raises(RelayMismatch, match="does not name it"):
        await bob.members(NETWORK)
    with pytest.raises(RelayMismatch, match="membership log names relay key"):
        await members["carol"].members(NETWORK)


async def test_per_recipient_what_is_and_is_not_proven(members, tmp_path):
    ana, bob = members["ana"], members["bob"]
    sent = await ana.send(NETWORK, ["bob", "carol"], {"type": "request", "subject": "x"}, "y")
    await bob.inbox(ack=False)                  # delivered, not acknowledged; carol collects nothing
    await ana.export(sent["id"], tmp_path / "b.json")
    report = verify_bundle_bytes((tmp_path / "b.json").read_bytes())
    assert report.ok
    bob_, carol = report.recipients["bob"], report.recipients["carol"]
    assert bob_.delivered and bob_.acknowledged is None
    assert any("whether bob's software acknowledged or refused it" in t for t in bob_.not_proven)
    assert carol.delivered is None and carol.not_proven == []
    assert any(t.startswith("not delivered to carol as of ") for t in carol.proven)


def test_an_older_format_is_refused_clearly(bundle_file):
    bundle = parse(bundle_file.read_bytes())
    old = bundle_bytes({**bundle, "format": "comity-evidence-1"})
    assert "the older format took the relay's key from the bundle itself" in refusal(old)


def test_the_documented_content_check_runs_verbatim(bundle_file, members, tmp_path):
    """docs/evidence.md's by-hand content check (Python and PyNaCl), run exactly as printed."""
    docs = (Path(__file__).resolve().parents[1] / "docs" / "evidence.md").read_text(encoding="utf-8")
    start = docs.index("python3 - \"$B\" <<'PY'\n")
    script = docs[start:docs.index("\nPY\n", start) + len("\nPY\n")]

    def run(path: Path) -> str:
        done = subprocess.run(["bash", "-c", script], env={**os.environ, "B": str(path)},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    bundle = parse(bundle_file.read_bytes())
    shown = run(bundle_file)
    assert f"envelope hash {bundle['evidence'][0]['envelope_hash']}\n" in shown
    assert shown.endswith("content matches the signed payload: True\n")
    ana = members["ana"]
    payload = dict(bundle["signed_payload"]["payload"], body="another body")
    swapped = tmp_path / "swapped.json"
    swapped.write_bytes(rebuilt(bundle, ana, evidence=relay_chain(bundle), signed_payload={
        "payload": payload, "sig": ana.identity.sign_b64("message", payload)}))
    assert run(swapped).endswith("content matches the signed payload: False\n")


def test_an_acknowledgement_by_a_key_rotated_away_counts_only_if_dated_before_the_rotation():
    """A stolen old identity key must not sign evidence dated after the member moved off it."""
    from keys import evidence as ev
    from keys.constants import CLOCK_SKEW
    from keys.errors import KeysError
    from keys.log import LogVerifier
    from keys.receipts import make_ack
    from tests.vectors.log.generate import base as log_base

    s = log_base()
    old = s.keys["bob"]
    s.rotate_identity("bob", "alice")             # alice is the scenario's administrator
    rotated_at = s.time
    verifier = LogVerifier(s.genesis_hash)
    verifier.extend(s.entries)

    def ack_at(when: int) -> dict:
        return make_ack(old, "acknowledged", network=s.genesis_hash, message_id="M" * 22,
                        envelope_hash=bytes(32), sender="alice", recipient="bob", time=when,
                        prev=bytes(32), payload_hash=bytes(32))

    assert ev._member_key_for(verifier, "bob", 0, ack_at(rotated_at - 60)) == old.public
    assert ev._member_key_for(verifier, "bob", 0, ack_at(rotated_at + CLOCK_SKEW)) == old.public
    with pytest.raises(KeysError, match="not signed by any key bob held"):
        ev._member_key_for(verifier, "bob", 0, ack_at(rotated_at + CLOCK_SKEW + 1))
    with pytest.raises(KeysError):
        ev._member_key_for(verifier, "bob", 0, ack_at(rotated_at + 30 * 86400))
