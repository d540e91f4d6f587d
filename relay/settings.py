"""Relay settings, declared once.

Each setting has a name, a default, a kind (text, whole number or on/off), an
environment variable and a help text. This one table drives the
``comity-relay serve`` options, the TOML settings file (``--config``), the
table in docs/operations.md (``settings_markdown``) and
deploy/relay.toml.example (``settings_toml_example``); tests/test_settings.py
keeps both files in step. Precedence, highest first: command-line option,
environment variable, settings file, default.

Regenerate the two files with ``python -m relay.settings markdown`` and
``python -m relay.settings toml > deploy/relay.toml.example``.
"""

from __future__ import annotations

import os
import sys
import textwrap
import tomllib
from dataclasses import dataclass, fields
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

from . import constants as C

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    kind: type = str                  # str, int or bool
    #: smallest allowed value of an int setting
    minimum: int | None = None
    #: largest allowed value of an int setting
    maximum: int | None = None
    #: shown in the example settings file for a setting with no default
    example: str | None = None

    @property
    def env(self) -> str:
        return "COMITY_RELAY_" + self.name.upper()

    @property
    def option(self) -> str:
        flag = self.name.replace("_", "-")
        return f"--{flag}/--no-{flag}" if self.kind is bool else f"--{flag}"

    def parse_text(self, text: str) -> Any:
        """The value of an environment variable; ``SettingsError`` if it does not parse."""
        if self.kind is int:
            try:
                return int(text.strip())
            except ValueError:
                raise SettingsError(f"{self.env}: {text!r} is not a whole number") from None
        if self.kind is bool:
            if text.strip().lower() in _TRUE:
                return True
            if text.strip().lower() in _FALSE:
                return False
            raise SettingsError(f"{self.env}: {text!r} is not one of {', '.join(_TRUE + _FALSE)}")
        return text

    def check(self, value: Any, where: str) -> Any:
        """``value`` if it has the setting's kind and range; ``SettingsError`` otherwise."""
        if self.kind is int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise SettingsError(f"{where}: {self.name} must be a whole number")
            if self.minimum is not None and value < self.minimum:
                raise SettingsError(f"{where}: {self.name} must be at least {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise SettingsError(f"{where}: {self.name} must be at most {self.maximum}")
        elif self.kind is bool:
            if not isinstance(value, bool):
                raise SettingsError(f"{where}: {self.name} must be true or false")
        elif not isinstance(value, str) or not value:
            raise SettingsError(f"{where}: {self.name} must be a non-empty string")
        return value


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", C.DEFAULT_DATA_DIR, "folder for the database, blobs and the relay key"),
    Setting("host", C.DEFAULT_HOST,
            "address to listen on (keep 127.0.0.1 behind a reverse proxy)"),
    Setting("port", C.DEFAULT_PORT, "TCP port to listen on (0 picks a free port)", int, 0, 65535),
    Setting("tls_cert", None, "PEM certificate chain: serve HTTPS directly",
            example="/etc/comity-relay/tls/fullchain.pem"),
    Setting("tls_key", None, "PEM private key for the certificate of tls_cert",
            example="/etc/comity-relay/tls/privkey.pem"),
    Setting("max_json_body", C.MAX_JSON_BODY, "largest JSON request body, bytes", int, 1024),
    Setting("max_blob_piece", C.MAX_BLOB_PIECE, "largest blob upload piece, bytes", int, 1024),
    Setting("rate_per_second", C.RATE_PER_SECOND,
            "requests per second per member (token bucket refill)", int, 1),
    Setting("rate_burst", C.RATE_BURST, "burst size of the per-member rate limit", int, 1),
    Setting("workers", 1, "worker processes serving requests; more than 1 uses more cores "
            "(set it to the number of cores for throughput)", int, 1, 64),
    Setting("keepalive_timeout", C.KEEPALIVE_TIMEOUT,
            "seconds an idle kept-alive connection stays open waiting for its next request",
            int, 1, 3600),
    Setting("header_timeout", C.HEADER_TIMEOUT,
            "seconds a connection has to send a request's complete headers", int, 1, 3600),
    Setting("body_timeout", C.BODY_TIMEOUT,
            "seconds a request body may go without a byte arriving before the request is "
            "refused and its connection closed (a stalled upload releases its blob)",
            int, 1, 3600),
    Setting("max_connections", 0,
            "open connections per process before idle ones are closed and new ones refused; "
            "0 derives it from the file-handle limit (ulimit -n)", int, 0),
    Setting("access_log", True, "write a structured access log line per request to stderr", bool),
    Setting("trusted_proxies", None,
            "comma-separated addresses or networks of reverse proxies whose X-Forwarded-For "
            "names the client (for rate limits and the access log)", example="127.0.0.1, ::1"),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class RelaySettings:
    data_dir: str = C.DEFAULT_DATA_DIR
    host: str = C.DEFAULT_HOST
    port: int = C.DEFAULT_PORT
    tls_cert: str | None = None
    tls_key: str | None = None
    max_json_body: int = C.MAX_JSON_BODY
    max_blob_piece: int = C.MAX_BLOB_PIECE
    rate_per_second: int = C.RATE_PER_SECOND
    rate_burst: int = C.RATE_BURST
    workers: int = 1
    keepalive_timeout: int = C.KEEPALIVE_TIMEOUT
    header_timeout: int = C.HEADER_TIMEOUT
    body_timeout: int = C.BODY_TIMEOUT
    max_connections: int = 0
    access_log: bool = True
    trusted_proxies: str | None = None

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def proxy_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """``trusted_proxies`` parsed (``SettingsError`` if an item is not an address)."""
        networks = []
        for item in (self.trusted_proxies or "").split(","):
            if item.strip():
                try:
                    networks.append(ip_network(item.strip(), strict=False))
                except ValueError:
                    raise SettingsError(f"trusted_proxies: {item.strip()!r} is not an IP "
                                        "address or network") from None
        return tuple(networks)


assert [f.name for f in fields(RelaySettings)] == list(_BY_NAME), "SETTINGS and RelaySettings disagree"
assert all(getattr(RelaySettings, s.name) == s.default for s in SETTINGS), "defaults disagree"


class SettingsError(ValueError):
    """the relay settings are invalid"""


def _read_file(config: str) -> dict[str, Any]:
    try:
        with open(config, "rb") as fh:
            file_values = tomllib.load(fh)
    except OSError as exc:
        raise SettingsError(f"cannot read settings file {config}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"settings file {config} is not valid TOML: {exc}") from None
    values = {}
    for key, value in file_values.items():
        name = key.replace("-", "_")
        setting = _BY_NAME.get(name)
        if setting is None:
            # A typo must not silently fall back to a default (say, listening on all addresses).
            raise SettingsError(f"unknown setting {key!r} in {config}")
        values[name] = setting.check(value, config)
    return values


def load_settings(options: dict[str, Any] | None = None, *, config: str | None = None,
                  environ: dict[str, str] | None = None) -> RelaySettings:
    """Merge defaults, settings file, environment and explicit options (``None`` = not given)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = _read_file(config) if config else {}
    for setting in SETTINGS:
        if environ.get(setting.env, "") != "":
            values[setting.name] = setting.check(setting.parse_text(environ[setting.env]),
                                                 setting.env)
    for key, value in (options or {}).items():
        if key not in _BY_NAME:
            raise SettingsError(f"unknown setting {key!r}")
        if value is not None:
            values[key] = _BY_NAME[key].check(value, _BY_NAME[key].option.split("/")[0])
    settings = RelaySettings(**values)
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise SettingsError("--tls-cert and --tls-key go together")
    settings.proxy_networks            # refuse an unparsable list now, not at the first request
    return settings


def _default_text(setting: Setting) -> str:
    if setting.default is None:
        return ""
    if setting.kind is bool:
        return "`true`" if setting.default else "`false`"
    return f"`{setting.default}`"


def settings_markdown() -> str:
    """The settings table for docs/operations.md."""
    rows = ["| setting | option | environment | default | meaning |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        rows.append(f"| `{s.name}` | `{s.option}` | `{s.env}` | {_default_text(s)} | {s.help} |")
    return "\n".join(rows)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def settings_toml_example() -> str:
    """deploy/relay.toml.example: every setting, commented out, with its default."""
    lines = [
        "# comity-relay settings file: comity-relay serve --config FILE",
        "#",
        "# Generated from relay/settings.py (python -m relay.settings toml); do not edit by hand.",
        "# Every setting is shown commented out with its default. Precedence, highest first:",
        "# command-line option, environment variable, this file, default. Unknown keys are",
        "# refused, so a typo cannot silently fall back to a default.",
    ]
    for s in SETTINGS:
        lines += [""] + ["# " + line for line in textwrap.wrap(s.help, 88)]
        lines.append(f"# (option {s.option.split('/')[0]}, environment {s.env})")
        if s.default is None:
            lines.append(f"# {s.name} = {_toml_value(s.example)}    # no default: unset")
        else:
            lines.append(f"# {s.name} = {_toml_value(s.default)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["markdown"]:
        print(settings_markdown())
    elif sys.argv[1:] == ["toml"]:
        sys.stdout.write(settings_toml_example())
    else:
        sys.exit("usage: python -m relay.settings markdown|toml")
