"""``comity-relay``: run the relay, prepare its data folder, mint network creation tokens,
and rotate its key.

Output rules: data on stdout (the listening URL and fingerprint, a token);
everything for humans on stderr. A refusal is one ``error: ...`` line,
optionally followed by ``hint: ...`` lines, exit status 2 for a usage or
settings mistake and 1 for anything else. A traceback means a bug.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import sys
from pathlib import Path

import click

from .constants import CREATION_TOKEN_TTL
from .settings import SETTINGS, SettingsError, load_settings


def _fail(message: str, *, usage: bool = False, hint: str | None = None) -> None:
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    sys.exit(2 if usage else 1)


def _plain(message: str) -> str:
    """Click's messages in our style: no leading capital, no final period, one line."""
    message = " ".join(message.split())
    if message[:1].isupper() and not message[1:2].isupper():
        message = message[0].lower() + message[1:]
    return message.rstrip(".")


#: click >= 8.2 raises this for a group run without a command; older versions print help
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _Group(click.Group):
    """A click group whose usage errors are one ``error:`` line, not click's usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            status = super().main(args, prog_name, complete_var, False, **extra)
        except _NO_ARGS_IS_HELP as exc:     # bare "comity-relay": the help, as click shows it
            click.echo(exc.ctx.get_help(), err=True)
            sys.exit(2)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "comity-relay"
            _fail(_plain(exc.format_message()), usage=True, hint=f"see '{command} --help'")
        except click.ClickException as exc:
            click.echo(f"error: {_plain(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: interrupted", err=True)
            sys.exit(1)
        sys.exit(status if isinstance(status, int) else 0)


def _settings_options(command):
    # Options come from the settings table, so CLI, config file and docs agree.
    for setting in reversed(SETTINGS):
        shown = "unset" if setting.default is None else setting.default
        if setting.kind is bool:
            shown = "on" if setting.default else "off"
        kwargs = {"default": None,
                  "help": f"{setting.help} [env {setting.env}; default {shown}]"}
        if setting.kind is int:
            kwargs["type"] = int
        command = click.option(setting.option, setting.name, **kwargs)(command)
    return command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(None, "--version", package_name="comity", prog_name="comity-relay",
                      message="%(prog)s %(version)s", help="print the version and exit")
def main() -> None:
    """comity-relay: the store-and-forward relay of comity."""


@main.command()
@click.option("--config", type=click.Path(dir_okay=False), envvar="COMITY_RELAY_CONFIG",
              help="TOML settings file [env COMITY_RELAY_CONFIG]")
@click.option("-v", "--verbose", is_flag=True, help="log debug messages")
@_settings_options
def serve(config, verbose, **options) -> None:
    """Run the relay (127.0.0.1:8787, data in ./comity-data by default).

    Prints "listening on URL" and "relay fingerprint ..." on stdout when
    ready. SIGTERM or Ctrl-C stops accepting connections, lets requests in
    flight finish, and exits 0.
    """
    from .app import configure_logging
    from .server import ServeError
    from .server import serve as run
    try:
        settings = load_settings(options, config=config)
    except SettingsError as exc:
        _fail(str(exc), usage=True)
    configure_logging(verbose)
    try:
        if settings.workers > 1:
            from .supervisor import run as run_workers
            sys.exit(run_workers(settings))
        asyncio.run(run(settings))
    except ServeError as exc:
        _fail(exc.message, hint=exc.hint)
    except KeyboardInterrupt:
        pass


@main.command()
@click.option("--network", required=True, help="name of the network the token may create")
@click.option("--data-dir", default=None, help="the relay's data folder [env COMITY_RELAY_DATA_DIR; "
                                               "default ./comity-data]")
@click.option("--config", type=click.Path(dir_okay=False), envvar="COMITY_RELAY_CONFIG",
              help="TOML settings file (for its data_dir) [env COMITY_RELAY_CONFIG]")
def token(network, data_dir, config) -> None:
    """Print a one-time token that lets an administrator create NETWORK.

    Works while the relay is running, on a folder the relay has used or
    'comity-relay init' prepared (never creates one). The token is valid for
    24 hours and creates the network once; the relay keeps only its hash.
    """
    import re
    import time

    from keys.constants import NETWORK_NAME_PATTERN

    from .db import StoreError
    from .handlers.networks import creation_token_hash
    from .store import Store

    if not re.fullmatch(NETWORK_NAME_PATTERN, network):
        _fail("network names are 3-64 lowercase letters, digits, '.' and '-'", usage=True)
    settings = _relay_settings(data_dir, config)
    value = secrets.token_urlsafe(24)   # 192 bits: unguessable within its 24 hours

    async def add() -> None:
        store = await Store.open(Path(settings.data_dir) / "relay.db")
        try:
            await store.add_creation_token(network, creation_token_hash(value),
                                           int(time.time()) + CREATION_TOKEN_TTL)
        finally:
            await store.close()
    try:
        asyncio.run(add())
    except StoreError as exc:
        _fail(f"cannot store the token in {settings.data_dir}: {exc.message}")
    except sqlite3.Error as exc:
        _fail(f"cannot store the token in {settings.data_dir}: {exc}")
    except OSError as exc:
        _fail(f"cannot open the data folder {settings.data_dir}: {exc.strerror or exc}",
              hint="run this as the user the relay runs as (e.g. sudo -u comity)")
    click.echo(value)
    click.echo(f"hint: give this token to the administrator of {network}; "
               "it creates the network once, within 24 hours", err=True)


DATA_DIR_HELP = "the relay's data folder [env COMITY_RELAY_DATA_DIR; default ./comity-data]"
CONFIG_HELP = "TOML settings file (for its data_dir) [env COMITY_RELAY_CONFIG]"


def _relay_settings(data_dir: str | None, config: str | None):
    """The settings of a command that works on an existing relay's data folder.

    Refuses a folder that holds no relay, and creates nothing: a token or a key written
    into a wrong folder would be one no relay honours (issue 10, item 7).
    """
    from .relaykey import holds_relay
    try:
        settings = load_settings({"data_dir": data_dir}, config=config)
    except SettingsError as exc:
        _fail(str(exc), usage=True)
    if not holds_relay(settings.data_path):
        _fail(f"{settings.data_dir} holds no comity relay (no relay.key / relay.db)",
              hint=f"start the relay once with 'comity-relay serve --data-dir {settings.data_dir}', "
                   "or check --data-dir / COMITY_RELAY_DATA_DIR")
    return settings


@main.command()
@click.option("--data-dir", default=None, help=DATA_DIR_HELP)
@click.option("--config", type=click.Path(dir_okay=False), envvar="COMITY_RELAY_CONFIG",
              help=CONFIG_HELP)
def init(data_dir, config) -> None:
    """Prepare a data folder before the first start: the folder, database and keys.

    Prints the relay fingerprint on stdout, to hand to network administrators
    before the relay is reachable. Running it on a prepared folder changes
    nothing and prints the same fingerprint; 'serve' does the same on its own.
    """
    from .server import ServeError
    from .supervisor import prepare
    try:
        settings = load_settings({"data_dir": data_dir}, config=config)
    except SettingsError as exc:
        _fail(str(exc), usage=True)
    try:
        fingerprint = prepare(settings)
    except ServeError as exc:
        _fail(exc.message, hint=exc.hint)
    click.echo(f"relay fingerprint {fingerprint}")
    click.echo(f"hint: {settings.data_dir} is ready; hand the fingerprint to the administrators "
               "of every network you will host", err=True)


@main.command("rotate-key")
@click.option("--status", "show_status", is_flag=True,
              help="list which key each network's log names; change nothing")
@click.option("--retire", is_flag=True,
              help="destroy the previous key once no network names it")
@click.option("--force", is_flag=True,
              help="with --retire: destroy it even though networks still name it")
@click.option("--data-dir", default=None, help=DATA_DIR_HELP)
@click.option("--config", type=click.Path(dir_okay=False), envvar="COMITY_RELAY_CONFIG",
              help=CONFIG_HELP)
def rotate_key(show_status, retire, force, data_dir, config) -> None:
    """Make a new relay key; networks move to it one by one, without downtime.

    Prints the new key's fingerprint on stdout. The running relay (every
    worker) takes it up within a second and holds both keys: it signs for each
    network with the key that network's log names, until an administrator runs
    'comity network set-relay-key NETWORK FINGERPRINT'. --status lists which
    networks still name the previous key; --retire destroys the previous key
    (refused while any network names it, unless --force). One rotation at a time.
    """
    if show_status + retire > 1 or (force and not retire):
        _fail("use --status or --retire, and --force only with --retire", usage=True)
    settings = _relay_settings(data_dir, config)
    from .cli_rotate import fp as _fp
    from .cli_rotate import key_status, rotated
    from .key_rotation import network_keys
    from .relaykey import KeyFileError, RotationRefused, load_relay_keys
    from .relaykey import retire as retire_previous
    from .relaykey import rotate
    data = settings.data_path
    try:
        held = load_relay_keys(data)
        named = asyncio.run(network_keys(data))      # before anything changes
        if not (show_status or retire):
            rotated(rotate(data).public, held[0].public, named)
            return
    except RotationRefused as exc:
        _fail(f"{exc}: {_fp(held[1].public)}",
              hint="run 'comity-relay rotate-key --status', then '--retire' once every network "
                   "names the newest key")
    except KeyFileError as exc:
        _fail(str(exc))
    except (OSError, sqlite3.Error) as exc:
        _fail(f"cannot read the data folder {settings.data_dir}: {getattr(exc, 'strerror', None) or exc}",
              hint="run this as the user the relay runs as (e.g. sudo -u comity)")
    if show_status:
        key_status(held, named)
        return
    if len(held) < 2:
        if retire_previous(data):           # finishes a retirement a crash cut short
            click.echo("hint: finished destroying a previous key a crash left behind", err=True)
        else:
            click.echo("hint: the relay holds one key: nothing to retire", err=True)
        return
    stuck = [n.network for n in named if n.relay_key == held[1].public]
    if stuck and not force:
        _fail(f"{len(stuck)} network(s) still name the previous relay key {_fp(held[1].public)}: "
              + ", ".join(stuck),
              hint=f"their administrators run 'comity network set-relay-key NETWORK "
                   f"\"{_fp(held[0].public)}\"'; --force retires it anyway and locks their "
                   "members out until they do")
    if stuck:
        click.echo(f"warning: {', '.join(stuck)} still name the retired key: their members are "
                   "locked out until an administrator runs 'comity network set-relay-key'", err=True)
    retire_previous(data)
    click.echo(_fp(held[1].public))
    click.echo("hint: the previous key is overwritten and deleted (the running relay drops it "
               "within a second); receipts it signed stay verifiable: the logs name it", err=True)


@main.command()
@click.option("--data-dir", default=None, help=DATA_DIR_HELP)
@click.option("--config", type=click.Path(dir_okay=False), envvar="COMITY_RELAY_CONFIG",
              help=CONFIG_HELP)
@click.option("--accept-loss", is_flag=True,
              help="knowingly write off lost writes: rebase the write mark on the database as "
                   "it is, and record that in the audit log (never repairs a damaged file)")
def check(data_dir, config, accept_loss) -> None:
    """Check the storage of a stopped relay; exit 1 on damage.

    Runs every check the relay runs at start: the database is there if the
    rest of a relay is, passes PRAGMA quick_check, and counts at least as
    many write batches as its write mark (relay.hwm). What to do on each
    refusal: "Damaged storage and lost writes" in docs/operations.md.
    """
    from .datacheck import accept_loss as write_off
    from .datacheck import check_stopped
    from .integrity import RECOVERY, Refused, mark_path
    from .relaykey import DATABASE_FILE, RELAY_KEY_FILE
    from .server import ServeError, lock_data_dir

    try:
        settings = load_settings({"data_dir": data_dir}, config=config)
    except SettingsError as exc:
        _fail(str(exc), usage=True)
    folder = Path(settings.data_dir)
    # Any one of these makes the folder a relay's (check then says what else is missing);
    # none of them: a wrong --data-dir, where check must neither pass nor create a lock file.
    database = folder / DATABASE_FILE
    if not any(path.exists() for path in (folder / RELAY_KEY_FILE, database, mark_path(database))):
        _fail(f"{settings.data_dir} holds no comity relay (no relay.key / relay.db)",
              hint="give the relay's folder with --data-dir or COMITY_RELAY_DATA_DIR")
    try:
        lock = lock_data_dir(folder)            # a running relay moves the mark under us
    except ServeError as exc:
        _fail(exc.message, hint="stop the relay first: check reads a stopped relay")
    try:
        try:
            summary = check_stopped(folder)
        except Refused as refusal:
            if not accept_loss:
                _fail(refusal.message, hint=refusal.hint)
            if refusal.kind == "corrupt":
                _fail(refusal.message, hint="--accept-loss cannot repair a damaged file: restore "
                      f"it from a backup or recover it first; {RECOVERY}")
            try:
                old, counted, aside = write_off(folder, refusal)
                click.echo(f"accepted the loss: the write mark was "
                           f"{old if old is not None else 'unreadable'}, the database counted "
                           f"{counted}; recorded in the audit log as storage-loss-accepted; "
                           f"the files as they were are in {aside}", err=True)
                summary = check_stopped(folder)
            except Refused as again:
                _fail(again.message, hint=again.hint)
        except (sqlite3.Error, OSError) as exc:
            _fail(f"cannot check {folder}: {getattr(exc, 'strerror', None) or exc}")
    finally:
        os.close(lock)
    click.echo(f"ok: {summary.database} passes quick_check ({summary.seconds:.2f} s) and counts "
               f"{summary.counted} write batches, write mark {summary.mark}", err=True)
