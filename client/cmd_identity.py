"""comity whoami"""

from __future__ import annotations

import click

from .cli import Context, group, pass_context
from .output import emit_json, out


@group.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_context
def whoami(ctx: Context, as_json: bool) -> None:
    """Show your handle, fingerprint, networks and encryption keys."""
    async def work(client):
        return client.whoami()
    info = ctx.run(work)
    if as_json:
        emit_json(info)
        return
    out(f"handle       {info['handle']}")
    out(f"fingerprint  {info['fingerprint']}")
    out(f"home         {info['home']}")
    for n in info["networks"]:
        out(f"network      {n['name']} ({n['status']}) at {n['relay']}, fingerprint {n['fingerprint']}")
        if n["head"]:
            out(f"  log head   entry {n['head']['seq']}, hash {n['head']['hash']}")
    for k in info["encryption_keys"]:
        state = "retired" if k["retired_at"] else "current"
        out(f"key v{k['version']}       {state}, {k['age_days']} days old")
