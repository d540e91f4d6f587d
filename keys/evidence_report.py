"""What a verified evidence bundle proves, recipient by recipient (keys/evidence.py builds it).

A bundle's records are checked one by one; this module says what they add up
to for each recipient, in words an expert can repeat: what the relay's
signatures prove (accepted, delivered, not collected, or not delivered as of
its status statement), what the recipient's own signature proves
(acknowledged, rejected), and what the bundle cannot prove. Nothing here
checks a signature: it reads records that already verified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone


def when(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class Finding:
    ok: bool
    text: str


@dataclass
class Outcome:
    """One recipient: the times each fact is proven at, and the sentences for a reader."""
    accepted: int | None = None
    delivered: int | None = None
    not_collected: int | None = None
    acknowledged: int | None = None
    rejected: int | None = None
    reason: str | None = None
    proven: list[str] = field(default_factory=list)
    not_proven: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return dict(vars(self))


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    network_fingerprint: str = ""
    #: recipient handle -> what the bundle proves about it (set only once every record verified)
    recipients: dict[str, Outcome] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.findings) and all(f.ok for f in self.findings)

    def add(self, ok: bool, text: str) -> None:
        self.findings.append(Finding(ok, text))


def outcomes(recipients: list[str], chain: list[dict], status_time: int,
             altered: set[str]) -> dict[str, Outcome]:
    """Per recipient, from the verified chain (relay receipts and acks, in chain order) that the
    relay's status statement at ``status_time`` shows complete. ``altered``: recipients whose
    rejection names another envelope than the one the relay accepted."""
    result = {handle: Outcome() for handle in recipients}
    refused = None
    for record in chain:
        kind, handle = record["kind"], record.get("recipient")
        if kind == "submission-accepted":
            for outcome in result.values():
                outcome.accepted = record["time"]
        elif kind == "submission-rejected":
            refused = record
        elif kind == "delivered":
            result[handle].delivered = record["time"]
        elif kind == "not-collected":
            result[handle].not_collected = record["time"]
        elif kind == "acknowledged":
            result[handle].acknowledged = record["time"]
        elif kind == "rejected":
            result[handle].rejected, result[handle].reason = record["time"], record["reason"]
    for handle, outcome in result.items():
        _words(handle, outcome, refused, status_time, handle in altered)
    return result


def _words(handle: str, o: Outcome, refused: dict | None, status_time: int, altered: bool) -> None:
    if refused is not None:
        o.proven.append(f"the relay refused the message at {when(refused['time'])} "
                        f"(reason {refused['reason']}): it was never delivered (relay's signature)")
        return
    o.proven.append(f"accepted by the relay for {handle} at {when(o.accepted)} (relay's signature)")
    if o.delivered is not None:
        o.proven.append(f"delivered to {handle}'s authenticated session at {when(o.delivered)} "
                        "(relay's signature)")
    elif o.not_collected is not None:
        o.proven.append(f"not collected by {handle}: retention ran out at {when(o.not_collected)} "
                        "and the relay deleted it (relay's signature)")
    else:
        o.proven.append(f"not delivered to {handle} as of {when(status_time)} "
                        "(the relay's signed status)")
    if o.acknowledged is not None:
        o.proven.append(f"{handle}'s software verified and decrypted exactly this content at "
                        f"{when(o.acknowledged)} ({handle}'s signature)")
    elif o.rejected is not None:
        o.proven.append(f"{handle}'s software refused what it received at {when(o.rejected)}, "
                        f"reason {o.reason}" + (", and what it received differs from what the "
                                                "relay accepted" if altered else "")
                        + f" ({handle}'s signature)")
    elif o.delivered is not None:
        o.not_proven.append(f"whether {handle}'s software acknowledged or refused it: "
                            "acknowledgements travel end to end, the relay cannot vouch for "
                            "them, and the exporter could have left one out")
