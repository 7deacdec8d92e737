"""Reading the evidence the cycle jobs leave (``b<boot>-<name>``, ``.rc``, ``.secs``), shared by
test_cycle.py (BIOS GRUB) and test_uefi_cycle.py (GRUB EFI, systemd-boot).

Only the job's files, the CLI's output and the journal are read: nothing of pmemd's internals.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import guest
import pytest

REPO = Path(__file__).resolve().parents[2]


class Cycle:
    def __init__(self, res: guest.RunResult) -> None:
        self.res = res

    def text(self, boot: int, name: str) -> str:
        p = self.res.path(f"b{boot}-{name}")
        assert p.exists(), f"boot {boot} left no {name}; job log:\n{self.res.job_log(boot)[-4000:]}"
        return p.read_text(errors="replace")

    def rc(self, boot: int, name: str) -> int:
        return int(self.text(boot, f"{name}.rc").strip())

    def ok(self, boot: int, name: str) -> str:
        assert self.rc(boot, name) == 0, f"boot {boot} {name}:\n{self.text(boot, name)}"
        return self.text(boot, name)

    def check_installed(self) -> None:
        """Boot 1: no memmap yet; the .deb installed, the service enabled, active, in sync."""
        assert "memmap" not in self.ok(1, "cmdline")
        assert "Setting up pmemd" in self.ok(1, "install")
        # /run/pmem.d from tmpfiles.d, /var/lib/pmemd from the unit's StateDirectory=
        assert self.ok(1, "tmpfiles").splitlines() == ["directory 755 root:root /run/pmem.d",
                                                       "directory 755 root:root /var/lib/pmemd"]
        assert self.ok(1, "is-enabled").strip() == "enabled"
        assert self.ok(1, "is-active").strip() == "active"
        assert self.status(1, "empty") == "in sync: no namespaces configured"
        assert "namespaces: {}" in self.ok(1, "etc-config")

    def status(self, boot: int, tag: str) -> str:
        return self.text(boot, f"status-{tag}").strip()

    def journal(self, boot: int, name: str) -> list[dict[str, Any]]:
        entries = [json.loads(ln) for ln in self.ok(boot, name).splitlines() if ln.startswith("{")]
        return [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "pmemd"]

    def cmdline(self, boot: int) -> list[str]:
        return self.ok(boot, "after-cmdline").split()


def pmem_tokens(tokens: list[str]) -> list[str]:
    return [t for t in tokens if t.startswith("memmap=") or t == "nokaslr"]


def blkid(text: str) -> dict[str, str]:
    return dict(ln.split("=", 1) for ln in text.splitlines() if "=" in ln)


def default_entry(grubcfg: str) -> list[str]:
    """Arguments of the first `linux` line of grub.cfg: the entry GRUB boots by default."""
    return grubcfg.splitlines()[0].split()


def mount_lines(mountinfo: str, point: str) -> list[str]:
    return [ln for ln in mountinfo.splitlines() if ln.split()[4] == point]


def super_options(line: str) -> list[str]:
    """The filesystem's own options: the last field of a mountinfo line (where dax=always is)."""
    return line.split(" - ", 1)[1].split()[2].split(",")


def actions(entries: list[dict[str, Any]], action: str, namespace: str | None = None) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("PMEMD_ACTION") == action
            and (namespace is None or e.get("PMEMD_NAMESPACE") == namespace)]


def build_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("dpkg-buildpackage") is None:
        pytest.skip("dpkg-buildpackage missing (tools/test installs debhelper and dh-python)")
    out = tmp_path_factory.mktemp("deb")
    subprocess.run(["bash", str(REPO / "packaging" / "build-deb"), "--no-lintian", str(out)],
                   check=True, capture_output=True, timeout=900)
    return next(out.glob("pmemd_*_all.deb"))


def logged(what: str, runs: dict[str, Any]) -> dict[str, guest.RunResult | BaseException]:
    """Each run's boots in the log; anything but a RunResult is the exception its run raised."""
    for name, res in runs.items():
        if isinstance(res, guest.RunResult):
            guest.log(f"{what} ({name}): {len(res.boots)} boots, {res.seconds:.0f} s in qemu: "
                      + ", ".join(f"boot {b.number} {b.seconds:.0f} s ({b.end})" for b in res.boots))
        else:
            guest.log(f"{what} ({name}) FAILED: {res}")
    return runs


def cycle_of(runs: dict[str, guest.RunResult | BaseException], name: str, reason: str | None) -> Cycle:
    """The evidence of one guest's run, or the test skipped (no guests here) or failed (the run did)."""
    if reason:
        pytest.skip(f"{name} guests unavailable: {reason}")
    res = runs[name]
    if not isinstance(res, guest.RunResult):
        pytest.fail(f"the {name} guest run failed: {res}")
    return Cycle(res)


def load_result(out: Path) -> guest.RunResult:
    """A finished run's result directory, read back (run.json + the unpacked files)."""
    meta = json.loads((out / "run.json").read_text())
    boots = [guest.BootInfo(b["n"], b["seconds"], b["end"], out / f"console-boot{b['n']}.log",
                            job_boot=b.get("job_boot", b["n"]), panic_at=b.get("panic_at")) for b in meta["boots"]]
    return guest.RunResult(out, meta["accel"], meta["mode"], boots)


def step_seconds(res: guest.RunResult, boot: int) -> list[tuple[str, float]]:
    """(step, seconds) of one boot's `ev` steps and STATUS waits, in the order they ran."""
    out = []
    for p in res.out.glob(f"b{boot}-*.secs"):
        name = p.name.removeprefix(f"b{boot}-").removesuffix(".secs")
        out.append((p.stat().st_mtime, name, float(p.read_text().strip() or 0)))
    return [(name, secs) for _, name, secs in sorted(out)]


def journal_lines(cycle: Cycle, boot: int, name: str) -> list[str]:
    """pmemd's journal entries of one boot, one line each: its PMEMD_* fields and the message."""
    lines = []
    for e in cycle.journal(boot, name):
        fields = {k: v for k, v in e.items() if k.startswith("PMEMD_") or k in ("MESSAGE_ID", "PRIORITY")}
        lines.append(f"  {json.dumps(fields, sort_keys=True)} {e['MESSAGE']}")
    return lines
