"""The session's guest work, started together: two guests at a time across every e2e module.

Each e2e module that boots guests has ``guest_work(session: Session) -> list[Work]``. The session's
``guest_pool`` fixture (tests/conftest.py) collects the work of every selected module when
the first e2e test needs it and starts it on ``workers`` threads (two by default, env
PMEMD_E2E_PARALLEL: under TCG a guest has one vCPU, so two fill a 2-core host), longest first,
so that one module's long guest runs beside another module's short ones instead of a core
waiting for the slower of a module's pair. A module's tests then wait for their own group.
"""

from __future__ import annotations

import concurrent.futures
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import guest
import pytest
from evidence import build_deb


@dataclass(frozen=True)
class Work:
    group: str  # the module's key: "cycle", "trial", ...
    name: str  # its run within the group: "grub", "sdboot", ...
    minutes: float  # expected wall time under TCG (the order of the start: longest first)
    run: Callable[[], Any]


@dataclass
class Session:
    """What a module's work may need: temp dirs, and the one .deb of the session (built on first use)."""

    tmp: pytest.TempPathFactory
    _deb: Path | None = None

    def deb(self) -> Path:
        if self._deb is None:
            self._deb = build_deb(self.tmp)
        return self._deb


@dataclass
class Timing:
    started: float | None = None
    ended: float | None = None
    error: str | None = None


@dataclass
class Pool:
    workers: int
    t0: float = field(default_factory=time.monotonic)
    futures: dict[tuple[str, str], concurrent.futures.Future[Any]] = field(default_factory=dict)
    timings: dict[tuple[str, str], Timing] = field(default_factory=dict)
    _ex: concurrent.futures.ThreadPoolExecutor | None = None
    _old_term: Any = None

    def start(self, works: Iterable[Work]) -> None:
        self._ex = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, self.workers),
                                                         thread_name_prefix="e2e-pool")
        if threading.current_thread() is threading.main_thread():
            # a SIGTERM to pytest becomes SystemExit in the waiting test: close() then kills qemu
            self._old_term = signal.signal(signal.SIGTERM, guest._sigterm)
        for w in sorted(works, key=lambda w: -w.minutes):
            key = (w.group, w.name)
            guest.log(f"e2e pool: queued {w.group}/{w.name} (about {w.minutes:.0f} min)")
            self.timings[key] = Timing()
            self.futures[key] = self._ex.submit(self._timed, key, w.run)

    def _timed(self, key: tuple[str, str], run: Callable[[], Any]) -> Any:
        t = self.timings[key]
        t.started = time.monotonic()
        guest.log(f"e2e pool: {key[0]}/{key[1]} started at +{t.started - self.t0:.0f} s")
        try:
            return run()
        except BaseException as exc:
            t.error = f"{type(exc).__name__}: {exc}"[:300]
            raise
        finally:
            t.ended = time.monotonic()
            guest.log(f"e2e pool: {key[0]}/{key[1]} ended at +{t.ended - self.t0:.0f} s "
                      f"({t.ended - t.started:.0f} s){' FAILED: ' + t.error if t.error else ''}")

    def results(self, group: str) -> dict[str, Any]:
        """{name: result or the exception it raised} of one group, once all of it has ended."""
        out: dict[str, Any] = {}
        for (g, name), fut in self.futures.items():
            if g == group:
                exc = fut.exception()
                out[name] = exc if exc is not None else fut.result()
        return out

    def close(self) -> None:
        """Cancel what has not started, kill every qemu still running, wait for the threads."""
        if self._ex is None:
            return
        for fut in self.futures.values():
            fut.cancel()
        if not all(f.done() for f in self.futures.values()):
            guest.stop_all()
        self._ex.shutdown(wait=True)
        guest.resume()
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)

    def summary(self) -> list[str]:
        """One line per run: when it started and ended (seconds from the pool's start)."""
        lines = []
        for (g, name), t in sorted(self.timings.items(), key=lambda kv: kv[1].started or float("inf")):
            if t.started is None:
                lines.append(f"   {g}/{name}: never started")
                continue
            end = f"+{t.ended - self.t0:.0f} s, {t.ended - t.started:.0f} s" if t.ended else "still running"
            lines.append(f"   {g}/{name}: started +{t.started - self.t0:.0f} s, ended {end}"
                         + (f", FAILED: {t.error}" if t.error else ""))
        return lines
