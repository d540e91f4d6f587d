"""Relay settings: one table, the documents made from it, and how values are merged.

The settings table in relay/settings.py drives the ``comity-relay serve``
options, the settings file, the table in docs/operations.md and
deploy/relay.toml.example; these tests fail when one of them drifts. The deploy
examples are checked against the constants they depend on.
"""

from __future__ import annotations

import configparser
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from relay import constants as C
from relay.cli import serve
from relay.metrics import HELP
from relay.settings import (SETTINGS, RelaySettings, SettingsError, load_settings,
                            settings_markdown, settings_toml_example)

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS = ROOT / "docs" / "operations.md"
DEPLOY = ROOT / "deploy"
REGENERATE = "regenerate with: python -m relay.settings markdown / toml"


# -- documents generated from the table -----------------------------------------------------------

def test_operations_doc_has_exactly_the_generated_settings_table():
    text = OPERATIONS.read_text(encoding="utf-8")
    start = text.index("<!-- settings table:")
    start = text.index("\n", start) + 1
    end = text.index("<!-- end of settings table -->")
    assert text[start:end].strip() == settings_markdown(), REGENERATE


def test_example_settings_file_is_the_generated_one():
    assert (DEPLOY / "relay.toml.example").read_text(encoding="utf-8") == settings_toml_example(), \
        REGENERATE


def test_example_settings_file_uncommented_gives_valid_settings(tmp_path):
    # Every commented line "# name = value" is a valid setting; as a whole, the defaults.
    lines = []
    for line in (DEPLOY / "relay.toml.example").read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"# ([a-z_]+ = [^#]+?)(\s+# no default: unset)?", line)
        if match and not match.group(2):
            lines.append(match.group(1))
    assert len(lines) == sum(1 for s in SETTINGS if s.default is not None)
    path = tmp_path / "relay.toml"
    path.write_text("\n".join(lines) + "\n")
    assert tomllib.loads((DEPLOY / "relay.toml.example").read_text()) == {}  # all commented out
    assert load_settings(config=str(path), environ={}) == RelaySettings()


def test_every_setting_is_a_serve_option_and_the_other_way_round():
    options = {p.name for p in serve.params} - {"config", "verbose"}
    assert options == {s.name for s in SETTINGS}
    for setting in SETTINGS:
        param = next(p for p in serve.params if p.name == setting.name)
        assert param.help and setting.env in param.help


def test_operations_doc_names_every_metric():
    text = OPERATIONS.read_text(encoding="utf-8")
    for name in HELP:
        assert f"`{name}" in text, name


# -- precedence: option > environment > file > default ---------------------------------------------

def test_precedence_cli_over_env_over_file_over_default(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text('port = 1111\nhost = "10.0.0.1"\nrate_burst = 7\naccess_log = false\n')
    env = {"COMITY_RELAY_PORT": "2222", "COMITY_RELAY_HOST": "10.0.0.2"}

    settings = load_settings({"port": 3333}, config=str(config), environ=env)
    assert settings.port == 3333                       # option beats environment and file
    assert settings.host == "10.0.0.2"                 # environment beats file
    assert settings.rate_burst == 7                    # file beats default
    assert settings.access_log is False
    assert settings.rate_per_second == C.RATE_PER_SECOND   # default when nobody says
    assert settings.data_dir == C.DEFAULT_DATA_DIR

    # An option left out (None, as click passes it) does not override anything.
    assert load_settings({"port": None}, config=str(config), environ={}).port == 1111
    assert load_settings(environ={}) == RelaySettings()


def test_environment_values_are_parsed_strictly():
    assert load_settings(environ={"COMITY_RELAY_ACCESS_LOG": "off"}).access_log is False
    assert load_settings(environ={"COMITY_RELAY_ACCESS_LOG": "Yes"}).access_log is True
    assert load_settings(environ={"COMITY_RELAY_PORT": ""}).port == C.DEFAULT_PORT  # empty = unset
    with pytest.raises(SettingsError, match="COMITY_RELAY_ACCESS_LOG"):
        load_settings(environ={"COMITY_RELAY_ACCESS_LOG": "maybe"})
    with pytest.raises(SettingsError, match="not a whole number"):
        load_settings(environ={"COMITY_RELAY_PORT": "80a"})
    with pytest.raises(SettingsError, match="at most 65535"):
        load_settings(environ={"COMITY_RELAY_PORT": "65536"})


# -- refusals ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("listen = 8787\n", "unknown setting 'listen'"),
    ("[relay]\nport = 1\n", "unknown setting 'relay'"),
    ('port = "8787"\n', "port must be a whole number"),
    ("port = true\n", "port must be a whole number"),
    ("port = -1\n", "port must be at least 0"),
    ("max_json_body = 0\n", "max_json_body must be at least 1024"),
    ('access_log = "yes"\n', "access_log must be true or false"),
    ("host = 1\n", "host must be a non-empty string"),
    ('host = ""\n', "host must be a non-empty string"),
    ('tls_cert = "c.pem"\n', "--tls-cert and --tls-key go together"),
    ('trusted_proxies = "127.0.0.1, proxy.example"\n', "'proxy.example' is not an IP address"),
    ("port = \n", "not valid TOML"),
])
def test_bad_settings_file_is_refused(tmp_path, text, message):
    config = tmp_path / "relay.toml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings(config=str(config), environ={})


def test_dashes_in_settings_file_keys_are_accepted(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text("rate-burst = 9\n")
    assert load_settings(config=str(config), environ={}).rate_burst == 9


def test_missing_settings_file_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="cannot read settings file"):
        load_settings(config=str(tmp_path / "absent.toml"), environ={})


def test_trusted_proxies_parse_addresses_and_networks():
    settings = load_settings(environ={"COMITY_RELAY_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8,::1"})
    assert [str(n) for n in settings.proxy_networks] == ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]
    assert load_settings(environ={}).proxy_networks == ()


# -- deploy examples agree with the code ----------------------------------------------------------

def _serve_flags(command: str) -> list[str]:
    return [word.split("=")[0] for word in shlex.split(command) if word.startswith("--")]


def _known_flag(flag: str) -> bool:
    return any(flag in param.opts or flag in param.secondary_opts for param in serve.params)


def test_systemd_unit_runs_serve_with_real_options_and_waits_for_the_drain():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read_string((DEPLOY / "comity-relay.service").read_text(encoding="utf-8"))
    service = unit["Service"]
    assert " serve " in service["ExecStart"]
    flags = _serve_flags(service["ExecStart"])
    assert {"--data-dir", "--config"} <= set(flags) and all(map(_known_flag, flags))
    assert "--data-dir /var/lib/comity-relay" in service["ExecStart"]
    assert service["ReadWritePaths"] == "/var/lib/comity-relay"
    assert service["User"] == "comity" and service["ProtectSystem"] == "strict"
    assert service["KillSignal"] == "SIGTERM"
    # systemd must not SIGKILL a relay that is still draining.
    assert int(service["TimeoutStopSec"]) > C.SHUTDOWN_GRACE + 2 * C.CLOSE_GRACE


def test_containerfile_runs_serve_on_the_default_port():
    text = (DEPLOY / "Containerfile").read_text(encoding="utf-8")
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M).group(1)
    words = tomllib.loads(f"cmd = {cmd}")["cmd"]
    assert words[:2] == ["comity-relay", "serve"]
    assert all(_known_flag(w) for w in words if w.startswith("--"))
    assert f"EXPOSE {C.DEFAULT_PORT}" in text
    assert f"127.0.0.1:{C.DEFAULT_PORT}/healthz" in text
    assert re.search(r"^USER comity", text, re.M)


def test_nginx_body_limit_matches_the_relay_piece_cap():
    text = (DEPLOY / "nginx.conf.example").read_text(encoding="utf-8")
    size = re.search(r"client_max_body_size (\d+)m;", text).group(1)
    assert int(size) * 1024 * 1024 == C.MAX_BLOB_PIECE >= C.MAX_JSON_BODY
    assert f"server 127.0.0.1:{C.DEFAULT_PORT};" in text
    assert "proxy_request_buffering off;" in text
    assert "$proxy_add_x_forwarded_for" in text


def test_every_relay_command_and_option_has_help():
    from click.testing import CliRunner

    from relay.cli import main
    for name, command in main.commands.items():
        assert command.help, name
        assert all(p.help for p in command.params if p.param_type_name == "option"), name
        result = CliRunner().invoke(main, [name, "--help"], prog_name="comity-relay")
        assert result.exit_code == 0 and "Usage: comity-relay " + name in result.output
