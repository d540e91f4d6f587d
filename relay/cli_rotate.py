"""What ``comity-relay rotate-key`` tells the operator: the words, apart from the command.

Data on stdout (a fingerprint; one line per network for ``--status``), guidance on stderr
as ``hint:`` lines, like every ``comity-relay`` command (relay/cli.py).
"""

from __future__ import annotations

import click

from keys.identity import format_fingerprint


def fp(public) -> str:
    return format_fingerprint(public.fingerprint())


def rotated(new, old, named) -> None:
    click.echo(fp(new))
    networks = [n.network for n in named if n.relay_key == old]
    click.echo(f"hint: the running relay takes the new key up within a second and keeps the "
               f"previous one ({fp(old)}) for networks that name it", err=True)
    if networks:
        click.echo(f"hint: send this fingerprint to the administrators of {', '.join(networks)}, "
                   "through a channel they trust; each runs 'comity network set-relay-key "
                   "NETWORK \"FINGERPRINT\"'", err=True)
    click.echo("hint: 'comity-relay rotate-key --status' shows who has moved; '--retire' then "
               "destroys the previous key", err=True)


def key_status(held, named) -> None:
    """One line per network on stdout: name, which held key its log names, fingerprint."""
    which = {held[0].public: "newest"}
    if len(held) > 1:
        which[held[1].public] = "previous"
    for n in named:
        click.echo(f"{n.network}\t{which.get(n.relay_key, 'not-held')}\t{fp(n.relay_key)}")
    stuck = [n.network for n in named if which.get(n.relay_key) != "newest"]
    if len(held) < 2:
        click.echo(f"hint: the relay holds one key, {fp(held[0].public)}", err=True)
    elif stuck:
        click.echo(f"hint: {len(stuck)} network(s) do not name the newest key "
                   f"{fp(held[0].public)} yet", err=True)
    else:
        click.echo("hint: every network names the newest key: 'comity-relay rotate-key --retire' "
                   "destroys the previous one", err=True)
