"""comity watch, rotate, approve-rotation, set-role"""

from __future__ import annotations

import asyncio
import signal

import click

from .cli import Context, group, pass_context
from .confirm import confirm_on_terminal, require_a_way_to_compare
from .output import emit_json, out, say


@group.command()
@click.option("--exec", "exec_cmd", help="run this shell command for each new message, the message as JSON on stdin")
@click.option("--once", is_flag=True, help="process what is waiting, then exit")
@click.option("--no-ack", is_flag=True, help="collect without sending acknowledgements")
@pass_context
def watch(ctx: Context, exec_cmd, once, no_ack) -> None:
    """Stay connected: collect, verify and acknowledge messages as they arrive.

    Reconnects with backoff when the relay restarts or the network drops, and
    rotates the encryption key when it is older than the network's policy.
    SIGTERM or Ctrl-C stops it cleanly.
    """
    from .watch import Watcher

    async def work(client):
        watcher = Watcher(client, exec_cmd=exec_cmd, ack=not no_ack,
                          say=(lambda text: None) if ctx.quiet else (lambda text: say(f"watch: {text}")))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        if once:
            return await watcher.once(stop)
        if not ctx.quiet:
            say("watch: waiting for messages (Ctrl-C to stop)")
        return await watcher.run(stop)
    count = ctx.run(work)
    if not ctx.quiet:
        say(f"watch: stopped after {count} new message(s)")


@group.command()
@click.option("--network", help="publish the new key in this network only (default: all)")
@click.option("--identity", is_flag=True, help="rotate the identity key instead (an admin countersigns)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def rotate(ctx: Context, network, identity, as_json) -> None:
    """Replace your encryption key (or, with --identity, your identity key)."""
    async def work(client):
        if identity:
            return await client.rotate_identity(client.default_network(network))
        return await client.rotate(network)
    result = ctx.run(work)
    if as_json:
        emit_json(result)
    elif identity:
        if result["status"] == "done":
            out(f"new identity key {result['fingerprint']} is in force")
        else:
            out(f"new identity key {result['fingerprint']} is waiting for an administrator")
            say("hint: read this fingerprint to an administrator, who runs 'comity approve-rotation "
                "--network NAME YOUR-HANDLE --fingerprint FPR'")
    else:
        out(f"encryption key version {result['version']} published in {', '.join(result['networks'])}")


@group.command("approve-rotation")
@click.option("--network", required=True, help="network name")
@click.argument("handle")
@click.option("--fingerprint", help="the new fingerprint HANDLE read to you out of band (spaces "
                                    "optional); without it, a terminal asks you to confirm")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def approve_rotation(ctx: Context, network, handle, fingerprint, as_json) -> None:
    """Countersign HANDLE's identity rotation (administrators)."""
    require_a_way_to_compare(fingerprint, handle)

    async def work(client):
        wanted = fingerprint
        if wanted is None:
            waiting = await client.rotations_waiting(network, handle)
            wanted = confirm_on_terminal("identity rotation", handle,
                                         [p.fingerprint for p in waiting])
        return await client.approve_rotation(network, handle, fingerprint=wanted)
    result = ctx.run(work)
    if as_json:
        emit_json(result)
        return
    out(f"{handle} now signs with {result['fingerprint']}")
    if result["competing"]:
        say(f"warning: left unsigned {len(result['competing'])} competing identity rotation(s) "
            f"for {handle} ({', '.join(result['competing'])}), signed with {handle}'s old key: "
            f"if {handle} did not make them, someone else holds that key")


@group.command("set-role")
@click.option("--network", required=True, help="network name")
@click.argument("handle")
@click.argument("role", type=click.Choice(["admin", "member"]))
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def set_role(ctx: Context, network, handle, role, as_json) -> None:
    """Make HANDLE an administrator or a plain member (the last admin cannot step down)."""
    result = ctx.run(lambda c: c.set_role(network, handle, role))
    if as_json:
        emit_json(result)
        return
    out(f"{handle} is now {role}")
