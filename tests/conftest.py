"""Shared fixtures. Tier-1/2 helpers live in tests/helpers.py."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

REPO = Path(__file__).resolve().parent.parent
for p in (str(REPO), str(REPO / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

from helpers import RecordingRunner  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

if TYPE_CHECKING:
    from pool import Pool

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


# --- the e2e session: one pool of guest runs for every selected module (tests/e2e/pool.py) ----

_POOLS: list[Pool] = []  # the session's guest pool, for the terminal summary


@pytest.fixture(scope="session")
def guest_pool(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """Every selected e2e module's guest work (its ``guest_work(session)``), started at once,
    longest first, two at a time, the first time an e2e test needs a guest; one .deb for all."""
    sys.path.insert(0, str(REPO / "tests" / "e2e"))
    import pool

    work: dict[str, Callable[[pool.Session], list[pool.Work]]] = {}
    for item in request.session.items:
        module = getattr(item, "module", None)
        if item.get_closest_marker("e2e") and module is not None and hasattr(module, "guest_work"):
            work[module.__name__] = module.guest_work
    p = pool.Pool(int(os.environ.get("PMEMD_E2E_PARALLEL", "2")))
    _POOLS.append(p)
    session = pool.Session(tmp_path_factory)
    p.start([w for guest_work in work.values() for w in guest_work(session)])
    try:
        yield p
    finally:
        p.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for p in _POOLS:
        if p.timings:
            terminalreporter.write_line(f"e2e guest pool ({p.workers} at a time), wall clock of each run:")
            for line in p.summary():
                terminalreporter.write_line(line)
