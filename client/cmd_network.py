"""comity network create, comity network set-relay-key"""

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


@network.command("set-relay-key")
@click.argument("name")
@click.argument("fingerprint")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def set_relay_key(ctx: Context, name, fingerprint, as_json) -> None:
    """Name the relay's new key in network NAME's membership log (administrators).

    Run it after the relay operator rotated the relay key, with the new key's FINGERPRINT as
    the operator gave it to you out of band. Members' clients then accept the relay again.
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
