"""Relay settings, declared once.

Each setting has a name, a default, an environment variable and a help text.
This one table drives the ``comity-relay serve`` options, the TOML settings
file (``--config``) and the table in docs/operations.md (see
``settings_markdown``; a test keeps the doc in step). Precedence, highest
first: command-line option, environment variable, settings file, default.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

from . import constants as C


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    type: Callable[[str], Any] = str

    @property
    def env(self) -> str:
        return "COMITY_RELAY_" + self.name.upper()

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", C.DEFAULT_DATA_DIR, "folder for the database, blobs and the relay key"),
    Setting("host", C.DEFAULT_HOST, "address to listen on"),
    Setting("port", C.DEFAULT_PORT, "TCP port to listen on (0 picks a free port)", int),
    Setting("tls_cert", None, "PEM certificate chain: serve HTTPS directly"),
    Setting("tls_key", None, "PEM private key for --tls-cert"),
    Setting("public_url", None, "URL clients use to reach the relay (default: the listening URL)"),
    Setting("max_json_body", C.MAX_JSON_BODY, "largest JSON request body, bytes", int),
    Setting("max_blob_piece", C.MAX_BLOB_PIECE, "largest blob upload piece, bytes", int),
    Setting("rate_per_second", C.RATE_PER_SECOND, "requests per second per member (token bucket)", int),
    Setting("rate_burst", C.RATE_BURST, "burst size of the per-member rate limit", int),
    Setting("access_log", True, "write a structured access log line per request to stderr",
            lambda s: s.lower() in ("1", "true", "yes", "on")),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class RelaySettings:
    data_dir: str = C.DEFAULT_DATA_DIR
    host: str = C.DEFAULT_HOST
    port: int = C.DEFAULT_PORT
    tls_cert: str | None = None
    tls_key: str | None = None
    public_url: str | None = None
    max_json_body: int = C.MAX_JSON_BODY
    max_blob_piece: int = C.MAX_BLOB_PIECE
    rate_per_second: int = C.RATE_PER_SECOND
    rate_burst: int = C.RATE_BURST
    access_log: bool = True

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


assert {f.name for f in fields(RelaySettings)} == set(_BY_NAME), "SETTINGS and RelaySettings disagree"


class SettingsError(ValueError):
    """the relay settings are invalid"""


def load_settings(options: dict[str, Any] | None = None, *, config: str | None = None,
                  environ: dict[str, str] | None = None) -> RelaySettings:
    """Merge defaults, settings file, environment and explicit options."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if config:
        try:
            with open(config, "rb") as fh:
                file_values = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read settings file {config}: {exc}") from None
        for key, value in file_values.items():
            key = key.replace("-", "_")
            if key not in _BY_NAME:
                raise SettingsError(f"unknown setting {key!r} in {config}")
            values[key] = value
    for setting in SETTINGS:
        if setting.env in environ:
            try:
                values[setting.name] = setting.type(environ[setting.env])
            except ValueError:
                raise SettingsError(f"{setting.env}: not a valid value") from None
    for key, value in (options or {}).items():
        if value is not None:
            values[key] = value
    settings = RelaySettings(**values)
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise SettingsError("--tls-cert and --tls-key go together")
    if not 0 <= settings.port <= 65535:
        raise SettingsError("--port must be between 0 and 65535")
    return settings


def settings_markdown() -> str:
    """The settings table for docs/operations.md."""
    rows = ["| setting | option | environment | default | meaning |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        default = "" if s.default is None else f"`{s.default}`"
        rows.append(f"| `{s.name}` | `{s.option}` | `{s.env}` | {default} | {s.help} |")
    return "\n".join(rows)
