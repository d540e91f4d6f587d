"""comity status, export, verify"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from keys.errors import KeysError
from keys.evidence import verify_bundle_bytes
from keys.identity import parse_fingerprint

from .cli import Context, group, pass_context
from .errors import ClientError, UsageError
from .output import emit_json, out, say, table, warning

#: an evidence bundle larger than this is refused before parsing
MAX_BUNDLE_BYTES = 256 * 1024 * 1024
#: every bundle format's name starts so; a file without it is not a bundle of any release
FORMAT_FAMILY = b"comity-evidence-"


def _time(ts):
    return "" if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@group.command()
@click.argument("message_id")
@click.option("--network", help="the network of the message (needed when the id is in several)")
@click.option("--no-ack", is_flag=True, help="collect new mail without acknowledging it")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def status(ctx: Context, message_id, network, no_ack, as_json) -> None:
    """Show, per recipient, when a message you sent was accepted, delivered and acknowledged.

    Collects new mail first (as 'comity inbox' does) so that acknowledgements are current.
    """
    async def work(client):
        result = await client.status(message_id, network=network, ack=not no_ack)
        # Warnings about this message are shown below with the others, not twice.
        shown = {w["text"] for w in result["warnings"]}
        client.notices[:] = [text for text in client.notices if text not in shown]
        return result
    result = ctx.run(work)
    for item in result["warnings"]:       # a security warning: on stderr even with --json, --quiet
        warning(item["text"])
    if as_json:
        emit_json({"id": result["id"], "state": result["state"], "warnings": result["warnings"],
                   "recipients": {
            h: {k: v for k, v in r.items() if k in ("accepted", "delivered", "acknowledged", "rejected",
                                                     "not_collected", "reason", "removed_since")}
            for h, r in result["recipients"].items()}})
        return
    out(f"{result['id']}: {result['subject']}")
    if result["state"] != "accepted":
        say(f"not accepted by the relay: the message is {result['state']}"
            + (f"; 'comity retry {result['id']}' sends it again" if result["state"] == "queued" else ""))
    rows = []
    for handle, r in sorted(result["recipients"].items()):
        rows.append({"recipient": handle + (" (removed since)" if r.get("removed_since") else ""),
                     "accepted": _time(r["accepted"]), "delivered": _time(r["delivered"]),
                     "acknowledged": _time(r["acknowledged"]) if r["acknowledged"] else
                     (f"rejected: {r['reason']}" if r["rejected"] else
                      ("not collected" if r["not_collected"] else "")),
                     })
    table(rows, [("recipient", "recipient"), ("accepted", "accepted (relay)"),
                 ("delivered", "delivered (relay)"), ("acknowledged", "acknowledged (recipient)")])


@group.command()
@click.argument("message_id")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="file to write")
@click.option("--network", help="the network of the message (needed when the id is in several)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def export(ctx: Context, message_id, out_path, network, as_json) -> None:
    """Write an evidence bundle of a message you sent, checkable offline with 'comity verify'.

    The bundle contains the message in clear: hand it on deliberately.
    """
    result = ctx.run(lambda c: c.export(message_id, Path(out_path), network=network))
    if as_json:
        emit_json(result)
        return
    out(f"wrote {result['out']}: {result['records']} receipts, {result['signatures']} signatures, "
        f"relay status as of {_time(result['relay_status_time'])}")
    if not ctx.quiet:
        say("note: the bundle contains the message in clear; check it with 'comity verify FILE'")


@group.command()
@click.argument("bundle_file", type=click.Path(dir_okay=False))
@click.option("--network-fingerprint", help="fail unless the bundle's network has this fingerprint")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def verify(bundle_file, network_fingerprint, as_json) -> None:
    """Check an evidence bundle offline and say what it proves; exit 0 only if all of it verifies."""
    try:
        with open(bundle_file, "rb") as fh:
            data = fh.read(MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise ClientError(f"cannot read {bundle_file}: {exc.strerror}") from None
    if len(data) > MAX_BUNDLE_BYTES:
        raise ClientError("the bundle is too large")
    if FORMAT_FAMILY not in data:
        # Not even a damaged bundle (those get a report saying what fails): a wrong file.
        raise ClientError(f"{bundle_file} is not a comity evidence bundle",
                          hint="'comity export ID --out FILE' writes one")
    expected = None
    if network_fingerprint:
        try:
            expected = parse_fingerprint(network_fingerprint)
        except KeysError as exc:
            raise UsageError(exc.message) from None
    report = verify_bundle_bytes(data, expected_network=None)
    if expected is not None and report.network_fingerprint.replace(" ", "") != expected.hex():
        report.add(False, f"the bundle's network fingerprint {report.network_fingerprint} is not the expected one")
    gaps = report.ok and any(o.not_proven for o in report.recipients.values())
    if as_json:
        emit_json({"ok": report.ok, "network_fingerprint": report.network_fingerprint,
                   "findings": [{"ok": f.ok, "text": f.text} for f in report.findings],
                   "recipients": {h: o.as_json() for h, o in report.recipients.items()}})
    else:
        for f in report.findings:
            out(f"{'ok  ' if f.ok else 'FAIL'} {f.text}")
        # Per recipient, what is proven and what is not: a plain "verifies" must hide no gap.
        for handle, outcome in report.recipients.items():
            for text in outcome.proven:
                out(f"for {handle}: proven: {text}")
            for text in outcome.not_proven:
                out(f"for {handle}: NOT proven: {text}")
        if not report.ok:
            out("the bundle does NOT verify")
        elif gaps:
            out("the bundle verifies, but does not prove everything: see the lines marked NOT proven")
        else:
            out("the bundle verifies")
    if not report.ok:
        sys.exit(1)
