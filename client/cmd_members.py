"""comity invite, enroll, pending, approve, remove, members"""

from __future__ import annotations

import click

from .cli import Context, group, pass_context
from .confirm import confirm_on_terminal, require_a_way_to_compare
from .output import emit_json, out, say, table


@group.command()
@click.option("--network", required=True, help="network name")
@click.option("--handle", required=True, help="handle of the new member")
@click.option("--name", "name_text", default="", help="display name")
@click.option("--country", default="", help="ISO 3166 two-letter country")
@click.option("--organisation", default="", help="organisation")
@click.option("--role", type=click.Choice(["member", "admin"]), default="member", show_default=True,
              help="role the new member gets")
@pass_context
def invite(ctx: Context, network, handle, name_text, country, organisation, role) -> None:
    """Invite a new member; prints the invite code alone on stdout.

    Give the code to the invitee over a channel you trust: whoever holds it can enroll.
    """
    code = ctx.run(lambda c: c.invite(network, handle, role=role, name_text=name_text,
                                      country=country, organisation=organisation))
    click.echo(code)
    if not ctx.quiet:
        say(f"hint: after {handle} runs 'comity enroll', compare the fingerprint {handle} reads to you "
            f"and approve with 'comity approve --network {network} {handle} --fingerprint FPR'")


@group.command()
@click.argument("code")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def enroll(ctx: Context, code, as_json) -> None:
    """Join a network with the invite CODE an administrator gave you."""
    async def work(client):
        return await client.enroll(code, ctx.passphrase(new=not client.has_identity()))
    result = ctx.run(work, unlock=False)
    if as_json:
        emit_json(result)
        return
    out(f"enrolled in {result['network']} as {result['handle']}: waiting for an administrator's approval")
    out(f"your fingerprint  {result['fingerprint']}")
    if not ctx.quiet:
        say("hint: read your fingerprint to the administrator so they can compare it before approving")


@group.command()
@click.option("--network", required=True, help="network name")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def pending(ctx: Context, network, as_json) -> None:
    """List enrollments and identity rotations waiting for approval (administrators)."""
    async def work(client):
        return await client.pending(network), await client.pending_rotations(network)
    enrollments, rotations = ctx.run(work)
    enrollments = [p.__dict__ for p in enrollments]
    rotations = [p.to_json() for p in rotations]
    if as_json:
        emit_json({"enrollments": enrollments, "rotations": rotations})
        return
    if not enrollments and not rotations:
        say("no pending enrollments or identity rotations")
    table([{**r, "check": "ok" if r["verified"] else (r["problem"] or "unverified")} for r in enrollments],
          [("handle", "handle"), ("role", "role"), ("name", "name"), ("country", "country"),
           ("fingerprint", "fingerprint"), ("check", "check")])
    if enrollments and rotations:
        out()
    table([{**r, "check": "CONFLICT" if r["conflict"] else "ok" if r["verified"] else r["problem"]}
           for r in rotations],
          [("handle", "rotating"), ("fingerprint", "new fingerprint"), ("check", "check")])
    for handle in sorted({r["handle"] for r in rotations if r["conflict"]}):
        say(f"warning: competing identity rotations for {handle}: at most one is {handle}'s, so "
            f"someone else may hold {handle}'s current key")
        say(f"hint: approve only the fingerprint {handle} reads to you out of band: 'comity "
            f"approve-rotation --network {network} {handle} --fingerprint FPR'")


@group.command()
@click.option("--network", required=True, help="network name")
@click.argument("handle")
@click.option("--fingerprint", help="the fingerprint HANDLE read to you out of band (spaces optional); "
                                    "without it, a terminal asks you to confirm")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def approve(ctx: Context, network, handle, fingerprint, as_json) -> None:
    """Approve HANDLE's enrollment: sign its add-member entry."""
    require_a_way_to_compare(fingerprint, handle)

    async def work(client):
        wanted = fingerprint
        if wanted is None:
            wanted = confirm_on_terminal("enrollment", handle,
                                         [await client.enrollment_waiting(network, handle)])
        return await client.approve(network, handle, fingerprint=wanted)
    result = ctx.run(work)
    if as_json:
        emit_json(result)
        return
    out(f"approved {result['handle']} ({result['role']}), fingerprint {result['fingerprint']}")


@group.command()
@click.option("--network", required=True, help="network name")
@click.argument("handle")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def remove(ctx: Context, network, handle, as_json) -> None:
    """Remove HANDLE from the network: its access stops at once."""
    result = ctx.run(lambda c: c.remove(network, handle))
    if as_json:
        emit_json(result)
        return
    out(f"removed {handle}")


@group.command()
@click.option("--network", required=True, help="network name")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def members(ctx: Context, network, as_json) -> None:
    """List the active members, as the verified membership log says."""
    rows = ctx.run(lambda c: c.members(network))
    if as_json:
        emit_json(rows)
        return
    table(rows, [("handle", "handle"), ("role", "role"), ("name", "name"), ("country", "country"),
                 ("fingerprint", "fingerprint"), ("encryption_key_version", "key")])
