"""comity demo"""

from __future__ import annotations

from .cli import Context, group, pass_context


@group.command()
@pass_context
def demo(ctx: Context) -> None:
    """A self-contained walk-through: relay, network, enrollment, a request with an attachment.

    Runs a relay on a free loopback port in a temporary folder and removes everything afterwards.
    """
    from .demo import run_demo
    run_demo(quiet=ctx.quiet)
