"""Approving with eyes open: `comity approve` and `comity approve-rotation` sign a key into
the membership log only with the fingerprint its holder read to the administrator out of
band, given with --fingerprint or confirmed on a terminal. A script that gives neither is
refused: approving whatever the relay lists is how a thief's key got in (issue 9).
"""

from __future__ import annotations

import sys

import click

from .errors import ClientError, UsageError
from .output import say


def require_a_way_to_compare(fingerprint: str | None, handle: str) -> None:
    """Refuse at once (nothing unlocked, nothing sent) when nobody can compare a fingerprint."""
    if fingerprint is None and not sys.stdin.isatty():
        raise UsageError(f"refusing to approve {handle} without the fingerprint {handle} read "
                         "to you", hint=f"pass --fingerprint FPR after comparing it with "
                                        f"{handle} out of band, or run on a terminal to confirm it")


def confirm_on_terminal(what: str, handle: str, fingerprints: list[str]) -> str:
    """Show the one fingerprint waiting and ask (default no); return it when confirmed.
    Several different ones are never chosen between here: the caller must name one."""
    distinct = sorted(set(fingerprints))
    if len(distinct) > 1:
        raise UsageError(f"{len(distinct)} competing {what}s for {handle} are waiting: "
                         "name the one to sign",
                         hint=f"pass --fingerprint FPR, the one {handle} reads to you out of band")
    say(f"{what} for {handle}, fingerprint {distinct[0]}")
    say(f"compare it with the fingerprint {handle} reads to you out of band")
    if not click.confirm("sign it?", default=False, err=True):
        raise ClientError("not approved: nothing was signed")
    return distinct[0]
