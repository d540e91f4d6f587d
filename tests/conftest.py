"""Shared test helpers."""

from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import HealthCheck, settings

VECTORS = pathlib.Path(__file__).resolve().parent / "vectors"

# CI runs on 2 cores next to other work: no per-example deadline, modest example counts.
settings.register_profile(
    "comity", deadline=None, max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("comity")


def load_vectors(relative: str) -> dict:
    return json.loads((VECTORS / relative).read_text(encoding="utf-8"))


@pytest.fixture
def vectors():
    return load_vectors
