"""Benchmark: boot -> READY of the packaged service in a Debian 13 guest (GRUB, TCG).

After every reboot emulated pmem is blank, and every service ordered ``After=pmem.target`` waits
for pmemd's first pass (verify, mkfs, mount, verify DAX, READY). Three boots with two namespaces
(ext4 1G, xfs 512M), then three with eight (384M each, ext4 and xfs in turn); per boot it prints
systemd's start -> READY, the time pmemd spent waiting for its child processes (from the journal
line pmemd writes at READY), pmemd's own share (the difference) and pmemd's per-phase figures,
then median and spread. Figures, not asserts: under TCG every figure is inflated.

Run: PMEMD_BENCH=1 tools/test tests/e2e/test_boot_bench.py -s     (about 10 min under TCG)
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import guest

pytestmark = pytest.mark.e2e

_REASON = guest.skip_reason() or ("" if os.environ.get("PMEMD_BENCH") else "a benchmark: set PMEMD_BENCH=1")
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

JOB = Path(__file__).resolve().parent / "jobs" / "boot-bench.sh"
from evidence import Cycle, build_deb  # noqa: E402

BOOTS = {2: (2, 3, 4), 8: (5, 6, 7)}
ORDER = ("start", "config", "devices", "observe", "plan", "actions")  # the phases, as pmemd logs them


def first_pass(cycle: Cycle, boot: int) -> dict[str, float]:
    """The PMEMD_SECONDS_* fields of the journal entry pmemd writes at READY, in seconds."""
    (entry,) = [e for e in cycle.journal(boot, "bench-journal") if "PMEMD_SECONDS_TOTAL" in e]
    return {k.removeprefix("PMEMD_SECONDS_").lower(): float(v) for k, v in entry.items()
            if k.startswith("PMEMD_SECONDS_")}


def start_to_ready(cycle: Cycle, boot: int) -> float:
    props = dict(ln.split("=", 1) for ln in cycle.ok(boot, "timestamps").split())
    return (int(props["ActiveEnterTimestampMonotonic"]) - int(props["ExecMainStartTimestampMonotonic"])) / 1e6


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def test_boot_to_ready(tmp_path_factory: pytest.TempPathFactory) -> None:
    deb = build_deb(tmp_path_factory)
    res = guest.run_job(JOB.read_text(), files=[deb, JOB.with_name("lib.sh")], mode="grub", max_boots=7,
                        out_dir=tmp_path_factory.mktemp("e2e-boot-bench"))
    cycle = Cycle(res)
    assert [b.end for b in res.boots] == ["restart"] * 6 + ["poweroff"], res.job_log(len(res.boots))[-3000:]
    lines = ["boot -> READY, packaged service under TCG (seconds):"]
    for count, boots in BOOTS.items():
        ready, children, own = [], [], []
        for boot in boots:
            phases = first_pass(cycle, boot)
            total = start_to_ready(cycle, boot)
            ready.append(total)
            children.append(phases["children"])
            own.append(total - phases["children"])
            names = [*ORDER, *sorted(set(phases) - {*ORDER, "total", "children"})]
            detail = ", ".join(f"{k} {phases[k]:.2f}" for k in names if k in phases)
            warm = (f"after boot: python3 -c pass {cycle.text(boot, 'floor.secs').strip()} s, "
                    f"import pmemd.daemon {cycle.text(boot, 'importtime.secs').strip()} s")
            lines.append(f"  {count} ns, boot {boot}: start->READY {total:.2f}, children {phases['children']:.2f}, "
                         f"pmemd's own {own[-1]:.2f} ({own[-1] / phases['children']:.1f}x children); {detail}; "
                         f"{warm}")
        ratio = statistics.median(o / c for o, c in zip(own, children, strict=True))
        lines.append(f"  {count} ns: start->READY {spread(ready)}; children {spread(children)}; "
                     f"own {spread(own)}; own/children median {ratio:.2f}")
    guest.log("\n".join(lines))
    print("\n".join(lines))
