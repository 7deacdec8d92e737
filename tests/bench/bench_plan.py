"""Benchmark: observe + plan on a synthetic large host, and the whole `pmemd plan` process.

Host: 10,000 mountinfo lines, 64 firmware memory-map entries, 32 namespaces (16 of them already
present and mounted with DAX). Prints figures; asserts nothing about time.

    python tests/bench/bench_plan.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pmemd.engine import Target, assess  # noqa: E402
from pmemd.units import render  # noqa: E402

GIB = 1 << 30


def build(root: Path) -> Path:
    (root / "proc/self").mkdir(parents=True)
    # 64 firmware entries: 32 x (8 GiB System RAM, 128 MiB Reserved), starting at 4 GiB.
    start = 4 * GIB
    ram_entries = []
    for i in range(64):
        size = 8 * GIB if i % 2 == 0 else 128 << 20
        kind = "System RAM" if i % 2 == 0 else "Reserved"
        d = root / f"sys/firmware/memmap/{i}"
        d.mkdir(parents=True)
        (d / "start").write_text(f"{start:#x}\n")
        (d / "end").write_text(f"{start + size - 1:#x}\n")
        (d / "type").write_text(kind + "\n")
        if kind == "System RAM":
            ram_entries.append(start)
        start += size
    tokens, ns_yaml, iomem, mounts = [], [], [], []
    nd = root / "sys/devices/platform/e820_pmem/ndbus0"
    nd.mkdir(parents=True)
    (nd / "provider").write_text("e820\n")
    bus = root / "sys/bus/nd/devices"
    bus.mkdir(parents=True)
    os.symlink("../../../devices/platform/e820_pmem/ndbus0", bus / "ndbus0")
    for i in range(32):
        at = ram_entries[i] + GIB
        ns_yaml.append(f"  ns{i:02d}:\n    size: 1G\n    offset: {render(at)}\n"
                       f"    filesystem: {{type: ext4}}\n    mount: {{path: /pmem/ns{i:02d}}}\n")
        if i < 16:
            tokens.append(f"memmap=1G!{render(at)}")
            end = at + GIB - 1
            iomem.append(f"{at:x}-{end:x} : Persistent Memory (legacy)\n  {at:x}-{end:x} : namespace{i}.0\n")
            r = nd / f"region{i}"
            (r / f"namespace{i}.0/block/pmem{i}").mkdir(parents=True)
            (r / "resource").write_text(f"{at:#x}\n")
            (r / "size").write_text(f"{GIB}\n")
            (r / "numa_node").write_text("0\n")
            (r / f"namespace{i}.0/mode").write_text("memory\n")
            (r / f"namespace{i}.0/size").write_text(f"{GIB}\n")
            os.symlink(f"../../../devices/platform/e820_pmem/ndbus0/region{i}", bus / f"region{i}")
            mounts.append(f"{100 + i} 1 259:{i} / /pmem/ns{i:02d} rw,relatime shared:1 - ext4 /dev/pmem{i} "
                          "rw,dax=always\n")
    for i in range(10_000 - len(mounts)):
        mounts.append(f"{1000 + i} 1 0:{50 + i % 200} / /srv/m{i} rw,nosuid,nodev shared:9 - tmpfs tmpfs "
                      "rw,size=1024k\n")
    (root / "proc/self/mountinfo").write_text("".join(mounts))
    (root / "proc/iomem").write_text("".join(iomem))
    (root / "proc/cmdline").write_text("root=/dev/sda1 ro " + " ".join(tokens) + "\n")
    (root / "etc/default").mkdir(parents=True)
    (root / "etc/default/grub").write_text('GRUB_CMDLINE_LINUX=""\n')
    (root / "boot/grub").mkdir(parents=True)
    (root / "boot/grub/grub.cfg").write_text(
        "menuentry 'Debian' {\n\tlinux /vmlinuz root=/dev/sda1 ro " + " ".join(tokens) + "\n}\n")
    cfg = root / "etc/pmem.yaml"
    cfg.write_text("version: 1\nsettings: {kaslr: keep, min_free_ram: 4G}\nnamespaces:\n" + "".join(ns_yaml))
    os.chmod(cfg, 0o644)
    return cfg


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root)
        target = Target.make(str(root))
        a = assess(target, None)  # warm-up; no runner: no blkid on the synthetic tree
        assert not a.plan.errors, a.plan.errors
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            assess(target, None)
            times.append(time.perf_counter() - t0)
        print(f"observe+plan in-process (10,000 mounts, 64 firmware entries, 32 namespaces): "
              f"median {statistics.median(times) * 1000:.1f} ms, min {min(times) * 1000:.1f} ms, "
              f"max {max(times) * 1000:.1f} ms over {len(times)} runs; {len(a.plan.actions)} actions")
        walls = []
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for _ in range(10):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pmemd", "--root", str(root), "plan"], env=env,
                           stdout=subprocess.DEVNULL, check=False)
            walls.append(time.perf_counter() - t0)
        print(f"`pmemd plan` whole process: median {statistics.median(walls) * 1000:.0f} ms, "
              f"min {min(walls) * 1000:.0f} ms over {len(walls)} runs")
        probe = subprocess.run(
            [sys.executable, "-c",
             "import sys; from pmemd.cli import main; main(['--root', sys.argv[1], 'plan'])\n"
             "print('loaded:', sorted(m for m in sys.modules if m.split('.')[0] in ('watchdog', 'systemd')))",
             str(root)], env=env, capture_output=True, text=True, check=False)
        print("modules of watchdog/systemd imported by `pmemd plan`:", probe.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
