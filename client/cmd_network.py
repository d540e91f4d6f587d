"""comity network create, fork, repin, set-relay-key"""

from __future__ import annotations

import click

from keys.errors import KeysError
from keys.identity import parse_fingerprint

from .cli import Context, group, pass_context
from .errors import UsageError
from .output import emit_json, out, say


@group.group()
def network() -> None:
    """Create and inspect networks."""


@network.command("create")
@click.argument("name")
@click.option("--relay", "relay_url", required=True, help="relay URL, e.g. https://relay.example.org")
@click.option("--token", required=True, help="creation token from the relay operator (comity-relay token)")
@click.option("--handle", required=True, help="your handle: 3-64 of a-z 0-9 - .")
@click.option("--name", "name_text", default="", help="your display name")
@click.option("--country", default="", help="your country, ISO 3166 two letters")
@click.option("--organisation", default="", help="your organisation")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def create(ctx: Context, name, relay_url, token, handle, name_text, country, organisation, as_json) -> None:
    """Create network NAME on a relay, with you as its first administrator.

    Creates your identity first if this COMITY_HOME has none.
    """
    async def work(client):
        created = client.ensure_identity(handle, ctx.passphrase(new=not client.has_identity()))
        result = await client.create_network(name, relay_url, token, name_text=name_text,
                                             country=country, organisation=organisation)
        return {**result, "identity_created": created}
    result = ctx.run(work, unlock=False)
    if as_json:
        emit_json(result)
        return
    out(f"created network {result['network']}")
    out(f"network fingerprint  {result['fingerprint']}")
    out(f"relay fingerprint    {result['relay_fingerprint']}")
    if not ctx.quiet:
        say("hint: check the relay fingerprint with the relay operator, out of band")


@network.command("fork")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def fork(ctx: Context, name, as_json) -> None:
    """Show both sides of a fork of network NAME's membership log, to compare out of band."""
    result = ctx.run(lambda c: c.fork_report(name))
    if as_json:
        emit_json(result)
        return
    out(f"the {name} log forked at entry {result['fork_at']}")
    for label, side in (("this machine holds", result["ours"]), ("the relay serves  ", result["theirs"])):
        if side is None:
            out(f"{label}  nothing at that position")
            continue
        out(f"{label}  entry {side['seq']} ({side['kind']}), hash {side['hash']}, signed by "
            f"{', '.join(side['signers']) or 'nobody'}")
    out(f"our head           entry {result['our_head']['seq']}, hash {result['our_head']['hash']}")
    head = result["relay_head"] or {}
    if "error" in head:
        out(f"relay head         unknown: {head['error']}")
    else:
        out(f"relay head         entry {head.get('seq')}, hash {head.get('hash')}")
    if not ctx.quiet:
        say(f"hint: ask an administrator of {name}, out of band, for the hash of the network's head; "
            f"if it is the relay's, run 'comity network repin {name} --head HASH'")


@network.command("repin")
@click.argument("name")
@click.option("--head", "head_hash", required=True,
              help="the head hash an administrator confirmed out of band (as 'network fork' prints it)")
@click.option("--seq", type=int, help="the position of that head, if the administrator gave it")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def repin(ctx: Context, name, head_hash, seq, as_json) -> None:
    """After a fork: adopt the relay's log of NAME, if it verifies and holds the confirmed head."""
    from .forks import parse_head_hash
    wanted = parse_head_hash(head_hash)
    result = ctx.run(lambda c: c.repin(name, wanted, seq))
    if as_json:
        emit_json(result)
        return
    out(f"{name}: the log now follows the relay's, up to entry {result['seq']} (hash {result['hash']})")
    if not ctx.quiet:
        say("hint: 'comity retry ID' verifies again a message kept aside because of the fork")


@network.command("set-relay-key")
@click.argument("name")
@click.argument("fingerprint")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def set_relay_key(ctx: Context, name, fingerprint, as_json) -> None:
    """Name the relay's new key in network NAME's membership log (administrators).

    Run it after the relay operator rotated the relay key (comity-relay rotate-key), with the
    new key's FINGERPRINT as the operator gave it to you out of band. From this entry on the
    relay signs for NAME with the new key and members' clients follow it by themselves.
    """
    try:
        expected = parse_fingerprint(fingerprint)
    except KeysError as exc:
        raise UsageError(exc.message) from None
    result = ctx.run(lambda c: c.set_relay_key(name, expected))
    if as_json:
        emit_json(result)
        return
    out(f"{result['network']}: relay key {result['relay_fingerprint']} named at log entry {result['seq']}")
