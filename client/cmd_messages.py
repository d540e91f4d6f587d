"""comity send, inbox, read"""

from __future__ import annotations

import sys
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

import click

from .cli import Context, group, pass_context
from .errors import ClientError, UsageError
from .output import Progress, display, emit_json, escape, human_size, out, say, table

#: a body read from a file or stdin larger than this is refused before anything is sent
MAX_BODY_BYTES = 1024 * 1024
#: the rule around a body in `comity read`; its character is always escaped inside the body
BODY_RULE = "\u2500" * 4


def _read_body(body: str | None, body_file: str | None) -> str:
    if body is not None and body_file is not None:
        raise UsageError("give the body with --body or --body-file, not both")
    if body is not None:
        return body
    try:
        if body_file is not None:
            with open(body_file, "rb") as fh:
                data = fh.read(MAX_BODY_BYTES + 1)
        elif not sys.stdin.isatty():
            data = sys.stdin.buffer.read(MAX_BODY_BYTES + 1)
        else:
            raise UsageError("give the body with --body, --body-file or on stdin")
    except FileNotFoundError:
        raise ClientError(f"file not found: {body_file}") from None
    except OSError as exc:
        raise ClientError(f"cannot read the body: {exc.strerror}") from None
    if not data:
        raise UsageError("the body is empty", hint="give --body '' to send an empty body on purpose")
    if len(data) > MAX_BODY_BYTES:
        raise UsageError(f"the body is larger than {MAX_BODY_BYTES} bytes: attach it as a file with --attach")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("the body is not UTF-8 text: attach it as a file with --attach") from None


@group.command()
@click.option("--network", required=True, help="network name")
@click.option("--to", "recipients", multiple=True, required=True, help="recipient handle (repeat for several)")
@click.option("--subject", required=True, help="subject line")
@click.option("--type", "kind", type=click.Choice(["request", "reply", "information"]), default="request",
              show_default=True, help="kind of message (a reply needs --in-reply-to)")
@click.option("--priority", type=click.Choice(["routine", "urgent"]), default="routine", show_default=True,
              help="how soon the recipient should act")
@click.option("--reference", help="your case reference")
@click.option("--in-reply-to", help="id of the message this answers")
@click.option("--handling", help="handling code, e.g. a classification marking")
@click.option("--body", help="the message text")
@click.option("--body-file", type=click.Path(dir_okay=False), help="read the message text from a file")
@click.option("--attach", "files", multiple=True, type=click.Path(), help="attach a file (repeat for several)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def send(ctx: Context, network, recipients, subject, kind, priority, reference, in_reply_to, handling,
         body, body_file, files, as_json) -> None:
    """Sign, encrypt and send a message; the body comes from --body, --body-file or stdin."""
    text = _read_body(body, body_file)
    if kind == "reply" and not in_reply_to:
        raise UsageError("a reply needs --in-reply-to ID")
    headers = {"type": kind, "subject": subject, "priority": priority}
    for name, value in (("reference", reference), ("in_reply_to", in_reply_to), ("handling", handling)):
        if value:
            headers[name] = value
    progress = Progress(not ctx.quiet)
    result = ctx.run(lambda c: c.send(network, list(recipients), headers, text,
                                      [Path(f) for f in files], progress.bar))
    if as_json:
        emit_json(result)
        return
    out(result["id"])
    if not ctx.quiet:
        say(f"sent to {', '.join(sorted(set(recipients)))}; the relay accepted it at "
            f"{_time(result['relay_receipt']['time'])}")


@group.command()
@click.option("--network", help="only this network")
@click.option("--no-ack", is_flag=True, help="collect without sending acknowledgements")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def inbox(ctx: Context, network, no_ack, as_json) -> None:
    """Collect new messages, verify them, and list every message received."""
    progress = Progress(not ctx.quiet)

    async def work(client):
        new = await client.inbox(network, progress.bar, ack=not no_ack)
        return new, client.messages(network)
    new, everything = ctx.run(work)
    if as_json:
        emit_json(everything)
        return
    if not ctx.quiet:
        bad = [m for m in new if not m["verified"]]
        say(f"{len(new)} new message(s)" + (f", {len(bad)} failed verification and kept aside" if bad else ""))
    table([{"id": m["id"], "network": m["network"], "from": m["from"],
            "received": _time(m["received_at"]), "priority": m["priority"] or "",
            "subject": m["subject"] if m["verified"] else f"[not verified: {m.get('reason')}]",
            "files": str(len(m["attachments"])) if m["attachments"] else ""} for m in everything],
          [("id", "id"), ("received", "received"), ("network", "network"), ("from", "from"),
           ("priority", "priority"), ("files", "files"), ("subject", "subject")])


@group.command()
@click.argument("message_id")
@click.option("--network", help="the network of the message (needed when the id is in several)")
@click.option("--save-attachments", type=click.Path(file_okay=False), help="decrypt attachments into this folder")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def read(ctx: Context, message_id, network, save_attachments, as_json) -> None:
    """Show a message; with --save-attachments, decrypt its files into a folder."""
    async def work(client):
        return client.read(message_id, Path(save_attachments) if save_attachments else None,
                           network=network)
    message = ctx.run(work)
    if as_json:
        emit_json(message)
        return
    h = message["headers"]
    out(f"from:      {message['from']} (signature verified)")
    out(f"to:        {', '.join(message['to'])}")
    out(f"network:   {message['network']}")
    out(f"sent:      {_time(message['created'])}")
    out(f"type:      {h['type']}, {h['priority']}")
    for label, key in (("reference", "reference"), ("reply to", "in_reply_to"), ("handling", "handling"),
                       ("legal basis", "legal_basis")):
        if h.get(key):
            out(f"{label + ':':<10} {display(h[key])}")
    out(f"subject:   {display(message['subject'])}")
    for a in message["attachments"]:
        where = f" -> {a['saved_to']}" if a["saved_to"] else ""
        out(f"attached:  {sent_name(a['name'])} ({human_size(a['size'])}){where}")
    # The body between two rules it cannot print (its own BODY_RULE characters are escaped):
    # whatever it holds, it cannot pass for header lines or for the end of the message.
    out(f"{BODY_RULE} begin message {message['id']} {BODY_RULE}")
    out(escape(unicodedata.normalize("NFC", message["body"]), also=BODY_RULE[0]))
    out(f"{BODY_RULE} end message {message['id']} {BODY_RULE}")


def sent_name(name: str) -> str:
    """An attachment's name as sent, escaped; quoted when it holds escapes or edge spaces or dots."""
    shown = display(name)
    plain = shown == name and name == name.strip(" .")
    return shown if plain else '"' + shown + '"'


@group.command()
@click.argument("message_id")
@click.option("--network", help="the network of the message (needed when the id is in several)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def retry(ctx: Context, message_id, network, as_json) -> None:
    """Try a message again now: send one of yours left queued, or collect and verify a received one
    that is waiting after a temporary fault or was kept aside."""
    result = ctx.run(lambda c: c.retry(message_id, network))
    if as_json:
        emit_json(result)
        return
    status = result["status"]
    if status == "accepted":
        out(f"{message_id}: accepted by the relay at {_time(result['relay_receipt']['time'])}")
    elif status in ("collected", "verified", "done"):
        out(f"{message_id}: {'verified and stored' if status != 'done' else 'done'}")
    elif status == "waiting":
        raise ClientError(f"{message_id} still cannot be opened ({result['reason']}: "
                          f"{result.get('problem') or 'a temporary fault'}); it will be retried",
                          hint="if this lasts, tell your administrator")
    else:
        raise ClientError(f"{message_id} still fails verification ({result['reason']})")


def _time(ts: int | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
