"""docs/protocol.md names every label, purpose and kind the code uses.

A wire constant added or renamed in keys/ without the protocol doc is a
compatibility break nobody can implement against; this test catches it.
"""

from __future__ import annotations

import pathlib
import re

import pytest

from keys import envelope, evidence, hpke, invite, log, log_head, receipts, relay_status

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")


def _labels_in_code() -> set[str]:
    found = set()
    for path in (ROOT / "keys").glob("*.py"):
        found |= set(re.findall(r'domain_label\("([a-z0-9-]+)"\)', path.read_text(encoding="utf-8")))
    return found


@pytest.mark.parametrize("label", sorted(_labels_in_code()))
def test_every_domain_label_is_documented(label):
    assert f"comity/v1/{label}" in PROTOCOL


@pytest.mark.parametrize("purpose", [log.ENTRY_PURPOSE, envelope.MESSAGE_PURPOSE, hpke.KEY_RECORD_PURPOSE,
                                     receipts.RELAY_PURPOSE, receipts.ACK_PURPOSE, log_head.HEAD_PURPOSE,
                                     evidence.BUNDLE_PURPOSE, evidence.FORMAT,
                                     relay_status.STATUS_PURPOSE, relay_status.STATUS_KIND])
def test_every_signature_purpose_is_documented(purpose):
    assert f"`{purpose}`" in PROTOCOL


@pytest.mark.parametrize("kind", [*log.KINDS, *receipts.RELAY_KINDS, *receipts.ACK_KINDS,
                                  *receipts.ACK_REJECT_REASONS])
def test_every_kind_and_reason_is_documented(kind):
    assert f"`{kind}`" in PROTOCOL


def test_invite_prefix_is_documented():
    assert invite.CODE_PREFIX in PROTOCOL


def test_every_test_the_threat_model_names_exists():
    """docs/threat-model.md's attack table names the test proving each defence: it must be real."""
    import ast
    root = pathlib.Path(__file__).resolve().parents[1]
    text = (root / "docs" / "threat-model.md").read_text(encoding="utf-8")
    table = text.split("## Attacks and the tests that prove the defences", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if re.match(r"^\| (\d+[a-z]?|[wr]\d+) \|", line)]
    assert len(rows) >= 30
    named = 0
    for row in rows:
        cell = row.rstrip(" |").rsplit(" | ", 1)[1]
        current = None
        for ref in re.findall(r"`([^`]+)`", cell):
            path, _, test = ref.partition("::")
            if path.startswith("tests/"):
                current = path
                assert (root / path).exists(), f"{path} (named in docs/threat-model.md) does not exist"
            if test:
                tree = ast.parse((root / current).read_text(encoding="utf-8"))
                names = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
                assert test in names, f"{current}::{test} (named in docs/threat-model.md) does not exist"
                named += 1
    assert named >= len(rows)
