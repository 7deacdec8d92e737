"""Where the time of the daemon's first pass goes: named phases on the monotonic clock.

The first pass after a boot is what every service ordered ``After=pmem.target`` waits for, so
the daemon measures it and says, at READY, how long each phase took and how much of it was spent
in the processes it ran (mkfs, mount, blkid, wipefs ...).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Phases:
    def __init__(self) -> None:
        self.spans: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.spans[name] = self.spans.get(name, 0.0) + time.monotonic() - start

    def add(self, name: str, seconds: float) -> None:
        self.spans[name] = self.spans.get(name, 0.0) + seconds

    def details(self) -> dict[str, float]:
        """The parts of a phase (``observe:mounts`` ...): logged at debug level."""
        return {name: secs for name, secs in self.spans.items() if ":" in name}

    def summary(self, *, total: float, children: float) -> str:
        """``first pass 2.1 s: start 0.4, config 0.1, devices 0.0, ..., actions 1.1 (children 1.1)``"""
        parts = ", ".join(f"{name} {secs:.1f}" for name, secs in self.spans.items() if ":" not in name)
        return f"first pass {total:.1f} s: {parts} (children {children:.1f})"

    def fields(self, *, total: float, children: float) -> dict[str, str]:
        """The top-level phases as journal fields (PMEMD_SECONDS_<PHASE>), in seconds."""
        out = {f"seconds_{name}": f"{secs:.3f}" for name, secs in self.spans.items() if ":" not in name}
        return {**out, "seconds_total": f"{total:.3f}", "seconds_children": f"{children:.3f}"}


def since_process_start() -> float | None:
    """Seconds since this process was started (interpreter start-up and imports included), from
    its start time in /proc/self/stat; None where that cannot be read."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in clock ticks
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError):
        return None
