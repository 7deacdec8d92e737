"""Benchmark: the daemon's memory, idle CPU, edit-to-pass latency and behaviour under an edit storm.

Runs the real daemon on a systemd-boot host tree (no external commands needed) and prints
figures; asserts nothing about time.

    python tests/bench/bench_daemon.py [--idle SECONDS]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from test_daemon import GOOD_EMPTY, GOOD_ONE, Notify, make_sdboot_tree, write_atomic  # noqa: E402

from pmemd.daemon import Daemon, Event, EventKind  # noqa: E402
from pmemd.engine import Target  # noqa: E402
from pmemd.journal import Journal  # noqa: E402
from pmemd.notify import Notifier  # noqa: E402
from pmemd.runner import SubprocessRunner  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def subprocess_figures(idle: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        make_sdboot_tree(root)
        write_atomic(root / "etc/pmem.yaml", GOOD_EMPTY)
        notify = Notify(Path(tmp) / "notify.sock")
        env = {**os.environ, "NOTIFY_SOCKET": str(Path(tmp) / "notify.sock"), "PYTHONPATH": str(REPO),
               "WATCHDOG_USEC": "60000000"}
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "pmemd", "--root", str(root), "daemon"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env["WATCHDOG_PID"] = str(proc.pid)
        try:
            notify.wait_for("READY=1")
            print(f"start to READY=1: {time.monotonic() - t0:.2f} s")
            print(f"RSS after start: {rss_mib(proc.pid):.1f} MiB")
            latencies = []
            for i in range(10):
                text = GOOD_ONE if i % 2 == 0 else GOOD_EMPTY
                want = "STATUS=reboot pending" if i % 2 == 0 else "STATUS=in sync"
                t1 = time.monotonic()
                write_atomic(root / "etc/pmem.yaml", text)
                notify.wait_for(want)
                latencies.append(time.monotonic() - t1)
            print(f"config edit -> end of pass (incl. 0.25 s debounce): median "
                  f"{statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms "
                  f"over {len(latencies)} edits")
            c0 = cpu_seconds(proc.pid)
            time.sleep(idle)
            used = cpu_seconds(proc.pid) - c0
            print(f"CPU time over {idle:.0f} s idle: {used * 1000:.0f} ms; RSS now {rss_mib(proc.pid):.1f} MiB")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            notify.sock.close()


def storm() -> None:
    """1,000 edits in 10 s against the in-process daemon; count the passes."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        make_sdboot_tree(root)
        write_atomic(root / "etc/pmem.yaml", GOOD_EMPTY)
        target = Target.make(str(root))
        statuses: list[str] = []
        notifier = Notifier(send=lambda m: not statuses.append(m))  # type: ignore[func-returns-value]
        d = Daemon(target, SubprocessRunner(), Journal(root=None, sender=None, use_journal=False), notifier)

        def writer() -> None:
            while not statuses:
                time.sleep(0.01)
            start = time.monotonic()
            for i in range(1000):
                write_atomic(root / "etc/pmem.yaml", GOOD_ONE if i % 2 else GOOD_EMPTY)
                time.sleep(max(0.0, start + (i + 1) * 0.01 - time.monotonic()))
            time.sleep(1.0)
            d.events.put(Event(EventKind.STOP))

        t = threading.Thread(target=writer)
        t.start()
        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()):
            rc = d.run()
        t.join()
        last = [s for s in statuses if "STATUS=" in s and "stopping" not in s][-1]
        print(f"1,000 edits in 10 s: {d.passes} passes (first pass included), exit code {rc}, "
              f"final {last.splitlines()[-1]!r}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=float, default=60.0)
    args = ap.parse_args()
    subprocess_figures(args.idle)
    storm()


if __name__ == "__main__":
    main()
