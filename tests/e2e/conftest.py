"""The e2e session: one pool of guest runs for every selected module (tests/e2e/pool.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pool

_POOL: list[pool.Pool] = []  # the session's pool, for the terminal summary


@pytest.fixture(scope="session")
def guest_pool(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[pool.Pool]:
    """Every selected module's guest work, started at once (longest first, two at a time) the
    first time an e2e test needs a guest; one .deb for all of it."""
    work: dict[str, Callable[[pool.Session], list[pool.Work]]] = {}
    for item in request.session.items:
        module = getattr(item, "module", None)
        if item.get_closest_marker("e2e") and module is not None and hasattr(module, "guest_work"):
            work[module.__name__] = module.guest_work
    p = pool.Pool(int(os.environ.get("PMEMD_E2E_PARALLEL", "2")))
    _POOL.append(p)
    session = pool.Session(tmp_path_factory)
    p.start([w for guest_work in work.values() for w in guest_work(session)])
    try:
        yield p
    finally:
        p.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for p in _POOL:
        if p.timings:
            terminalreporter.write_line(f"e2e guest pool ({p.workers} at a time), wall clock of each run:")
            for line in p.summary():
                terminalreporter.write_line(line)
