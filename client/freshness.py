"""How fresh this member's view of the membership log is, and what others' newer views say.

A relay can hide the newest log entries from a member (withholding), so that it seals to a
member since removed or to an encryption key since retired. Four defences live here
(docs/threat-model.md; rules in docs/protocol.md §4 "Signed log head" and §5.7):

* ``check_served_head``: after every log sync the relay's signed head must verify under a
  relay key the log names, end exactly where the served entries end, and be fresh (``HEAD_MAX_AGE``
  plus ``CLOCK_SKEW``). The newest head is kept per network; if an entry we verify later is
  dated well before a head that omitted it, the pair is recorded as proof of withholding.
* ``ensure_fresh``: before sealing, a head older than ``HEAD_MAX_AGE`` is read again.
* ``chained_acceptance``: the relay's submission receipt handed over with an envelope counts
  only if the delivery receipt chains from it; ``keys.envelope.open`` needs it to accept a
  signature by a key replaced since (``superseded-key``).
* ``note_newer_head`` / ``settle_newer_heads``: an acknowledgement naming a newer head than the
  one we sealed against makes us fetch the log and tell the user what we had missed, or that
  the relay will not show it to us.

Functions take the client (``Core``) as their first argument; the client calls them.
"""

from __future__ import annotations

from typing import Any

from keys.constants import HEAD_MAX_AGE
from keys.encoding import b64e
from keys.errors import KeysError, SignatureError
from keys.evidence_report import when as _when
from keys.identity import IdentityPublicKey
from keys.log_head import check_fresh, verify_log_head, withheld
from keys.receipts import verify_chain
from keys.staleness import stale_changes

from .errors import ClientError, TrustError

#: local rows: the newest signed head per network, withholding proofs, acks to follow up
HEAD_ROW, PROOF_ROW, NEWER_ROW = "log-head", "withheld", "newer-head"

_CHANGES = {"removed": "{handle} had been removed", "encryption-key":
            "{handle}'s encryption key had been replaced", "identity-key":
            "{handle}'s identity key had been replaced"}


def relay_key_for(verifier, statement: Any, presented: str | None = None
                  ) -> IdentityPublicKey | None:
    """The key a relay statement (a signed head, a receipt) must verify under: the one it
    names, if the membership log names that key as the relay's at the statement's time
    (``LogVerifier.check_relay_key``, docs/protocol.md §4), or if it is ``presented``, the
    key of the relay we are talking to, which the caller holds to the log; otherwise None."""
    try:
        key = IdentityPublicKey.from_b64(statement["relay_key"])
        if statement["relay_key"] != presented:
            verifier.check_relay_key(key, statement["time"])
    except (KeysError, KeyError, TypeError):
        return None
    return key


# -- the head the relay signs -------------------------------------------------------------------

def check_served_head(core, row, verifier, relay, new_entries: list[dict]) -> None:
    """Check the signed head of the log sync just made through ``relay`` (``new_entries``:
    the entries verified in it). The head verifies under the key this relay presented (the
    caller holds it to the log, ``Core._require_logged_relay_key``), or one the log names."""
    untrusted = "the relay may be withholding membership log entries; tell your administrator"
    head = relay.served_heads.get(row.name)
    if head is None:
        raise TrustError(f"the relay did not sign the {row.name} log head it served", hint=untrusted)
    key = relay_key_for(verifier, head, relay.relay_key)
    try:
        if key is None:
            raise SignatureError("it names a key the membership log does not name as the relay's")
        verify_log_head(head, key)
    except KeysError as exc:
        raise TrustError(f"the relay's signed {row.name} log head does not verify against the "
                         f"relay key the membership log names: {exc.message}", hint=untrusted) from None
    newest = core.state.get(HEAD_ROW, row.name, "newest")
    for entry in new_entries:
        if newest is not None and withheld(newest, entry):
            _record_withholding(core, row.name, newest, entry)
    if head["network"] != row.genesis_hash:
        raise TrustError(f"the relay signed a log head of another network for {row.name}",
                         hint=untrusted)
    if head["seq"] < verifier.seq:
        raise TrustError(f"the relay signed that the {row.name} log ends at entry {head['seq']}, "
                         f"but this machine holds entries up to {verifier.seq}: the relay is "
                         "withholding or rolling back the log", hint=untrusted)
    if head["seq"] > verifier.seq or head["hash"] != b64e(verifier.hash_at(head["seq"])):
        raise TrustError(f"the relay signed that the {row.name} log ends at entry {head['seq']}, "
                         f"but served entries only up to {verifier.seq}", hint=untrusted)
    try:
        check_fresh(head, core.now())
    except KeysError as exc:
        raise TrustError(f"{exc.message}: the relay's clock or this machine's is wrong, or the "
                         "relay replays an old answer",
                         hint="check this machine's clock; if it is right, tell your administrator"
                         ) from None
    if newest is None or (head["seq"], head["time"]) >= (newest["seq"], newest["time"]):
        core.state.put(HEAD_ROW, row.name, "newest", head, at=core.now())


def _record_withholding(core, network: str, head: dict, entry: dict) -> None:
    """Keep the relay's head and the entry that contradicts it: together, proof."""
    core.state.put(PROOF_ROW, network, str(head["seq"]), {"head": head, "entry": entry},
                   at=core.now())
    core.notice(f"the relay withheld {network} log entry {entry['seq']} from you: on "
                f"{_when(head['time'])} it signed that the log ended at entry {head['seq']}, but "
                f"entry {entry['seq']} had been made on {_when(entry['time'])}; the proof is kept "
                "on this machine, tell your administrator")


def head_age(core, network: str) -> int | None:
    """Seconds since the relay signed the newest head we hold (None: none yet)."""
    newest = core.state.get(HEAD_ROW, network, "newest")
    return None if newest is None else core.now() - newest["time"]


async def ensure_fresh(core, network: str, verifier):
    """Before sealing: read the log again if our head is older than ``HEAD_MAX_AGE`` (a long
    upload, a long-running watch), so an honest sender seals within ``ROTATION_WINDOW``."""
    age = head_age(core, network)
    if age is None or age > HEAD_MAX_AGE:
        return (await core.connect(network))[2]
    return verifier


# -- the relay's acceptance, handed over with an envelope ---------------------------------------

def chained_acceptance(relay, handle: str, submission: Any, chain: Any, delivery: Any
                       ) -> dict | None:
    """The submission receipt, if it and the receipts between are the relay's (under a key
    the log names, ``relay.check_receipt``) and the delivery chains from it; otherwise None
    (the message then proves nothing about when it was accepted, which matters only for a key
    replaced since)."""
    if not isinstance(submission, dict) or not isinstance(delivery, dict) \
            or not isinstance(chain, list) or delivery.get("recipient") != handle:
        return None
    try:
        records = [submission, *chain, delivery]
        for record in records:
            relay.check_receipt(record)
        ordered = verify_chain(records).get(submission["message_id"], [])
    except (ClientError, KeysError, AttributeError, TypeError):
        return None
    if len(ordered) != len(records) or ordered[0] is not submission or ordered[-1] is not delivery:
        return None
    return submission


# -- a recipient's newer head, named in its acknowledgement -------------------------------------

def stale_report(network: str, message_id: str, opened) -> str:
    """What a recipient tells its own user about a message sealed against an old log."""
    missed = "; ".join(_CHANGES[c.what].format(handle=c.handle) + f" (entry {c.seq})"
                       for c in opened.stale)
    return (f"{opened.sender.handle} sent message {message_id} in {network} against an old "
            f"membership log: {missed}; your acknowledgement tells them")


def note_newer_head(core, network: str, ack: dict) -> None:
    """An acknowledgement names a newer head than we sealed against: follow it up after
    collecting (``settle_newer_heads``), when the log can be fetched."""
    if "newer_head" in ack:
        core.state.put(NEWER_ROW, network, f"{ack['message_id']}.{ack['recipient']}",
                       {"message_id": ack["message_id"], "by": ack["recipient"],
                        "kind": ack["kind"], "newer_head": ack["newer_head"], "warned": []},
                       at=core.now())


async def settle_newer_heads(core, network: str) -> None:
    """Fetch the log to every newer head recipients named, and warn about what we missed."""
    waiting = list(core.state.rows(NEWER_ROW, network))
    if not waiting:
        return
    row, relay, verifier = await core.connect(network)       # reads the log again
    for _, row_id, _, _, item in waiting:
        sent = core.state.get("message", network, item["message_id"])
        if sent is None:
            core.state.delete(NEWER_ROW, network, row_id)
            continue
        warning = _newer_head_warning(core, network, verifier, sent, item)
        if warning is not None and warning["kind"] not in item["warned"]:
            sent.setdefault("warnings", []).append(warning)
            core.state.update("message", network, item["message_id"], sent,
                              flags=core.state.flags("message", network, item["message_id"]))
            core.notice(warning["text"])
        if warning is not None and warning["kind"] == "withheld":
            # Look again next time: once the relay shows the entries, say what they changed.
            item["warned"] = sorted({*item["warned"], "withheld"})
            core.state.put(NEWER_ROW, network, row_id, item, at=core.now())
        else:
            core.state.delete(NEWER_ROW, network, row_id)


def _newer_head_warning(core, network: str, verifier, sent: dict, item: dict) -> dict | None:
    head, by, message_id = item["newer_head"], item["by"], item["message_id"]
    base = {"by": by, "newer_head": head, "changes": []}
    if head["seq"] > verifier.seq:
        newest = core.state.get(HEAD_ROW, network, "newest") or {"seq": verifier.seq}
        return {**base, "kind": "withheld", "text": (
            f"{by}'s acknowledgement of {message_id} names {network} log entry {head['seq']}, but "
            f"the relay's signed log ends at entry {newest['seq']}: the relay is withholding "
            "membership log entries from you; tell your administrator")}
    if head["hash"] != b64e(verifier.hash_at(head["seq"])):
        return {**base, "kind": "fork", "text": (
            f"{by}'s acknowledgement of {message_id} names a {network} log entry {head['seq']} "
            "that differs from yours: the log has been forked; tell your administrator")}
    payload = sent["signed_payload"]["payload"]
    acceptance = next((r for r in sent.get("receipts", [])
                       if r.get("kind") == "submission-accepted"), None)
    try:
        changes = stale_changes(payload, verifier.roster_at, verifier.roster_at(head["seq"]),
                                acceptance)
    except KeysError:
        return None
    if not changes:
        return None
    missed = "; ".join(_CHANGES[c.what].format(handle=c.handle) + f" (entry {c.seq}, "
                       f"{_when(c.time)})" for c in changes)
    return {**base, "kind": "stale", "changes": [c.as_json() for c in changes], "text": (
        f"message {message_id} was sealed against an old {network} membership log, as "
        f"{by}'s acknowledgement shows: {missed}; the relay had not shown you these entries"
        + ("" if item["kind"] == "acknowledged" else f" ({by} refused it)"))}


def open_arguments(core, network: str, acceptance: dict | None) -> dict[str, Any]:
    """What ``keys.envelope.open`` needs to hold a message to our newest log (steps 14-16)."""
    verifier = core._verifiers[network]
    return {"latest": verifier.roster, "acceptance": acceptance,
            "relay_key": relay_key_for(verifier, acceptance) if acceptance else None,
            "now": core.now()}

