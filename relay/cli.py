"""``comity-relay``: run the relay, and mint network creation tokens."""

from __future__ import annotations

import asyncio
import secrets
import sys
from pathlib import Path

import click

from .constants import CREATION_TOKEN_TTL
from .settings import SETTINGS, SettingsError, load_settings


def _settings_options(command):
    # Options come from the settings table, so CLI, config file and docs agree.
    for setting in reversed(SETTINGS):
        kwargs = {"default": None, "help": f"{setting.help} [env {setting.env}; default {setting.default}]"}
        if setting.type is int:
            kwargs["type"] = int
        elif setting.type is not str:
            kwargs["type"] = click.BOOL
        command = click.option(setting.option, setting.name, **kwargs)(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """comity-relay: the store-and-forward relay of comity."""


@main.command()
@click.option("--config", type=click.Path(dir_okay=False), help="TOML settings file")
@click.option("-v", "--verbose", is_flag=True, help="log debug messages")
@_settings_options
def serve(config, verbose, **options) -> None:
    """Run the relay (127.0.0.1:8787, data in ./comity-data by default)."""
    from .app import configure_logging
    from .server import serve as run
    try:
        settings = load_settings(options, config=config)
    except SettingsError as exc:
        _fail(str(exc), usage=True)
    configure_logging(verbose)
    try:
        asyncio.run(run(settings))
    except OSError as exc:
        _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass


@main.command()
@click.option("--network", required=True, help="name of the network the token may create")
@click.option("--data-dir", default=None, help="the relay's data folder [default ./comity-data]")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML settings file")
def token(network, data_dir, config) -> None:
    """Print a one-time token that lets an administrator create NETWORK.

    Works while the relay is running. The token is valid for 24 hours.
    """
    import re
    import time

    from keys.constants import NETWORK_NAME_PATTERN

    from .handlers.networks import creation_token_hash
    from .relaykey import ensure_data_dir
    from .store import Store

    if not re.fullmatch(NETWORK_NAME_PATTERN, network):
        _fail("network names are 3-64 lowercase letters, digits, '.' and '-'", usage=True)
    try:
        settings = load_settings({"data_dir": data_dir}, config=config)
    except SettingsError as exc:
        _fail(str(exc), usage=True)
    value = secrets.token_urlsafe(24)   # 192 bits

    async def add() -> None:
        ensure_data_dir(Path(settings.data_dir))
        store = await Store.open(Path(settings.data_dir) / "relay.db")
        try:
            await store.add_creation_token(network, creation_token_hash(value),
                                           int(time.time()) + CREATION_TOKEN_TTL)
        finally:
            await store.close()
    asyncio.run(add())
    click.echo(value)
    click.echo(f"hint: give this token to the administrator of {network}; "
               "it creates the network once, within 24 hours", err=True)


def _fail(message: str, *, usage: bool = False) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2 if usage else 1)
