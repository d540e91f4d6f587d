"""``comity``: the command line, a thin layer over client.api.

Each command family lives in its own module (cmd_network, cmd_members,
cmd_messages, cmd_identity, cmd_demo); this module holds the group, the
passphrase rules and the one place where errors become ``error: ...`` lines.
Exit status: 0 success, 1 failure, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable

import click

from .api import Comity
from .errors import ClientError, UsageError
from .home import ENV_PASSPHRASE
from .keystore import check_new_passphrase
from .output import error, warning


class Context:
    def __init__(self, passphrase_file: str | None, quiet: bool):
        self.passphrase_file = passphrase_file
        self.quiet = quiet

    def passphrase(self, *, new: bool = False) -> str:
        """``COMITY_PASSPHRASE``, else ``--passphrase-file``, else a prompt.

        ``new``: it will seal a new keystore, so it must be long enough, whatever its source.
        """
        value = self._passphrase(new)
        return check_new_passphrase(value) if new else value

    def _passphrase(self, new: bool) -> str:
        value = os.environ.get(ENV_PASSPHRASE)
        if value:
            return value
        if self.passphrase_file:
            try:
                text = Path(self.passphrase_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot read the passphrase file: {exc.strerror}") from None
            value = text.rstrip("\r\n")
            if not value:
                raise UsageError("the passphrase file is empty")
            return value
        if not sys.stdin.isatty():
            raise UsageError("no passphrase: set COMITY_PASSPHRASE or use --passphrase-file",
                             hint="or run the command on a terminal to be asked")
        if new:
            first = check_new_passphrase(getpass.getpass("new passphrase for this identity: "))
            if getpass.getpass("repeat the passphrase: ") != first:
                raise UsageError("the passphrases differ")
            return first
        return getpass.getpass("passphrase: ")

    def run(self, work: Callable[[Comity], Awaitable[Any]], *, unlock: bool = True) -> Any:
        """Open the client (unlocked unless told otherwise), run ``work``, close."""
        async def main() -> Any:
            client = Comity.at()
            try:
                if unlock:
                    client.unlock(self.passphrase())
                return await work(client)
            finally:
                for text in client.notices:      # security warnings: shown even with --quiet
                    warning(text)
                client.notices.clear()
                await client.close()
        return asyncio.run(main())


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--passphrase-file", type=click.Path(dir_okay=False),
              help="read the passphrase from this file (COMITY_PASSPHRASE takes precedence)")
@click.option("-q", "--quiet", is_flag=True, help="no progress bars or notes on stderr")
@click.version_option(package_name="comity", message="comity %(version)s")
@click.pass_context
def group(ctx: click.Context, passphrase_file: str | None, quiet: bool) -> None:
    """comity: end-to-end encrypted requests between judicial cooperation focal points.

    State lives in COMITY_HOME (default: your user data folder). Every command
    that prints data takes --json.
    """
    ctx.obj = Context(passphrase_file, quiet)


def _quiet_anywhere(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_object(Context).quiet = True


def _add_quiet(command: click.Command) -> None:
    """Accept -q/--quiet after the command name too (``comity send ... --quiet``).

    Hidden: it is the group's option, documented once in docs/cli.md.
    """
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _add_quiet(sub)
    elif not any(getattr(p, "name", None) == "quiet" for p in command.params):
        command.params.append(click.Option(["-q", "--quiet"], is_flag=True, hidden=True,
                                           expose_value=False, callback=_quiet_anywhere,
                                           help="no progress bars or notes on stderr"))


def main() -> None:
    from . import (cmd_demo, cmd_evidence, cmd_identity, cmd_keys, cmd_members,  # noqa: F401
                   cmd_messages, cmd_network)  # (importing registers the commands)
    _add_quiet(group)
    try:
        group.main(standalone_mode=False, prog_name="comity")
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        message = exc.format_message().rstrip(".")
        error(message[:1].lower() + message[1:] if message else "usage error",
              hint=f"see '{exc.ctx.command_path if exc.ctx else 'comity'} --help'")
        sys.exit(2)
    except click.ClickException as exc:
        error(exc.format_message())
        sys.exit(exc.exit_code)
    except ClientError as exc:
        error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
