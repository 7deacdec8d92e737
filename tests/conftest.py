"""Shared fixtures. Tier-1/2 helpers live in tests/helpers.py."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
for p in (str(REPO), str(REPO / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

from helpers import RecordingRunner  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("pmemd", deadline=None, max_examples=200,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pmemd")


@pytest.fixture
def runner() -> Iterator[RecordingRunner]:
    """A deny-by-default recording runner; the test fails if pmemd tried anything unexpected,
    even when the UnexpectedCommand exception was caught somewhere inside pmemd."""
    r = RecordingRunner()
    yield r
    assert not r.unexpected, f"pmemd ran unexpected commands: {r.unexpected}"


@pytest.fixture
def no_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep pmemd's journal on stderr: never send test events to this machine's journald."""
    import pmemd.journal

    monkeypatch.setattr(pmemd.journal, "_journal_sender", lambda: None)
