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
