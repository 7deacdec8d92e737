#!/usr/bin/env python3
"""Capture real host trees from Debian 13 QEMU guests into tests/fixtures/hosts/.

    python3 tests/e2e/capture_fixtures.py [--only NAME ...] [--dest DIR]

Every scenario boots the cached guest image through GRUB (SeaBIOS -> GRUB on
the disk). Boot 1 writes /etc/default/grub.d/99-test.cfg (the memmap= args; no
file for the plain scenario), runs update-grub and reboots, so boot 2 runs with
a grub.cfg that the guest itself generated. Boot 2 runs tools/capture-host-tree
inside the guest. The tree comes back as one tarball and is installed unchanged
(its SHA256SUMS, computed in the guest, are verified on the host) together with
a generated README.md. Nothing in a tree is edited by hand.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import guest  # noqa: E402

CAPTURE_TOOL = REPO / "tools" / "capture-host-tree"
DEFAULT_DEST = REPO / "tests" / "fixtures" / "hosts"


@dataclass
class Scenario:
    name: str
    title: str
    args: str  # memmap= args put in the GRUB drop-in ("" = none)
    nvdimm: str | None = None
    dax_mount: bool = False  # mkfs.ext4 -b 4096 /dev/pmem0 + mount -o dax=always /pmem/fast
    notes: str = ""


SCENARIOS = [
    Scenario("debian13-qemu-plain", "No memmap= at all", ""),
    Scenario("debian13-qemu-memmap", "Two memmap ranges, /dev/pmem0 mounted with DAX",
             "memmap=1G!5G memmap=512M!6G", dax_mount=True,
             notes="Both ranges are 128 MiB aligned and lie inside the 4-9 GiB System RAM "
                   "entry of the firmware map. Before the capture, boot 2 ran "
                   "`mkfs.ext4 -q -F -b 4096 /dev/pmem0` and "
                   "`mount -o dax=always /dev/pmem0 /pmem/fast`, so proc/self/mountinfo "
                   "has a real DAX mount line."),
    Scenario("debian13-qemu-nvdimm", "A QEMU NVDIMM (ACPI NFIT) beside memmap=1G!5G",
             "memmap=1G!5G", nvdimm="1G",
             notes="QEMU adds a 1 GiB NVDIMM (`-device nvdimm`, backed by a sparse file). "
                   "It shows up as a second nd bus with provider ACPI.NFIT, an nmem "
                   "device, and a `Persistent Memory` (not \"(legacy)\") entry in "
                   "/proc/iomem; its namespace mode is raw."),
    Scenario("debian13-qemu-misaligned", "A range that is not 2 MiB aligned",
             "memmap=1G!5G memmap=61M!7001M",
             notes="61M at 7001M (0x1b5900000) is not 2 MiB aligned: the e820 range and "
                   "its nd region exist, but nd_pmem logs `misaligned, unable to map` and "
                   "the namespace fails to probe (-95), so there is no block device for "
                   "it. The 1G!5G range works as /dev/pmem0. (7001M, not 6001M: 6001M "
                   "lies inside 1G!5G, see debian13-qemu-overlap.)"),
    Scenario("debian13-qemu-overlap", "Overlapping ranges: memmap=61M!6001M inside 1G!5G",
             "memmap=1G!5G memmap=61M!6001M",
             notes="6001M is inside 5G..6G, so the two ranges overlap. The kernel does "
                   "not reject or merge them: e820 ends up with THREE adjacent "
                   "`persistent (type 12)` ranges (5G..6001M, 6001M..6062M, 6062M..6G), "
                   "hence three nd regions. The first two are not 2 MiB aligned "
                   "(`misaligned, unable to map`, no block device); only the last "
                   "(82 MiB at 0x17ae00000) becomes a pmem block device."),
]

GUEST_JOB = r"""
set -u
capture() {
    udevadm settle
    out=$HARNESS_OUT
    uname -r >"$out/uname-r"
    cat /proc/cmdline >"$out/proc-cmdline"
    ndctl list -RN >"$out/ndctl-list-RN.json" 2>"$out/ndctl-list-RN.stderr" || true
    python3 "$HARNESS_FILES/capture-host-tree" "$out/tree"
    (cd "$out/tree" && find . -type f | LC_ALL=C sort | xargs -d '\n' sha256sum) >"$out/SHA256SUMS"
    (cd "$out/tree" && find . -type l | LC_ALL=C sort | while read -r l; do
        printf '%s -> %s\n' "$l" "$(readlink "$l")"; done) >"$out/SYMLINKS"
    date -u +%Y-%m-%dT%H:%M:%SZ >"$out/date"
    ls -l /dev/pmem* >"$out/dev-pmem" 2>&1 || true
}
case "$HARNESS_BOOT" in
1)
    if [ -n "$ARGS" ]; then
        mkdir -p /etc/default/grub.d
        printf 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX %s"\n' "$ARGS" >/etc/default/grub.d/99-test.cfg
        cat /etc/default/grub.d/99-test.cfg
    fi
    update-grub
    grep -m1 "^[[:space:]]*linux" /boot/grub/grub.cfg
    echo reboot >"$HARNESS_NEXT"
    ;;
2)
    cat /proc/cmdline
    if [ "$DAX_MOUNT" = 1 ]; then
        udevadm settle
        mkfs.ext4 -q -F -b 4096 /dev/pmem0
        mkdir -p /pmem/fast
        mount -o dax=always /dev/pmem0 /pmem/fast
        grep pmem /proc/self/mountinfo
    fi
    capture
    cat "$HARNESS_OUT/ndctl-list-RN.json"
    ;;
esac
"""


def job_for(sc: Scenario) -> str:
    return (f"ARGS='{sc.args}'\nDAX_MOUNT={1 if sc.dax_mount else 0}\n" + GUEST_JOB)


def verify(tree: Path, sums: Path) -> int:
    n = 0
    for line in sums.read_text().splitlines():
        digest, rel = line.split(None, 1)
        rel = rel.lstrip("*")
        got = hashlib.sha256((tree / rel).read_bytes()).hexdigest()
        if got != digest:
            raise RuntimeError(f"{rel}: sha256 differs from the guest's ({got} != {digest})")
        n += 1
    return n


def readme(sc: Scenario, res: guest.RunResult, image_manifest: dict[str, Any]) -> str:
    out = res.out
    kmsg = (out / "tree/dev/kmsg").read_text(errors="replace")
    pmem_log = [ln.split(";", 1)[-1] for ln in kmsg.splitlines()
                if re.search(r"persistent \(type|nd_pmem|misaligned|probe of namespace|"
                             r"e820_pmem|nfit|pmem\d", ln.split(";", 1)[-1])]
    mountinfo = (out / "tree/proc/self/mountinfo").read_text()
    dax_lines = [ln for ln in mountinfo.splitlines() if "dax" in ln]
    iomem = [ln for ln in (out / "tree/proc/iomem").read_text().splitlines()
             if "ersistent" in ln or "namespace" in ln]
    qemu_cmd = json.loads((out / "run.json").read_text())["qemu"]
    pk = image_manifest.get("packages", {})
    drop_in = (f"`/etc/default/grub.d/99-test.cfg` (written in boot 1, then `update-grub`):\n\n"
               f"```\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX {sc.args}\"\n```\n"
               if sc.args else
               "No drop-in: boot 1 only ran `update-grub` (so grub.cfg is the one the "
               "guest generated) and rebooted.\n")
    boots = ", ".join(f"boot {b.number} {b.seconds:.0f} s" for b in res.boots)
    parts = [
        f"# {sc.name}: {sc.title}\n",
        "A real capture, made by `tools/capture-host-tree` inside a Debian 13 (trixie) "
        "QEMU guest, installed here unchanged by `tests/e2e/capture_fixtures.py` (the "
        "sha256 of every file, computed in the guest, is in `SHA256SUMS`; "
        "`sha256sum -c SHA256SUMS` from this directory checks it). Do not edit the tree "
        "by hand; re-run the script to refresh it.\n",
        f"- Captured: {(out / 'date').read_text().strip()}\n"
        f"- Guest kernel: `{(out / 'uname-r').read_text().strip()}` "
        f"(linux-image-amd64 {pk.get('linux-image-amd64')}), systemd "
        f"{pk.get('systemd-sysv')}, ndctl {pk.get('ndctl')}, grub-pc {pk.get('grub-pc')}\n"
        f"- Accelerator: {res.accel}; {boots}\n"
        f"- Kernel command line (`proc/cmdline`): `{(out / 'proc-cmdline').read_text().strip()}`\n",
        "## How it was booted\n",
        "SeaBIOS booted GRUB from the guest disk (MBR, one ext4 partition labelled "
        "pmemroot); `update-grub` inside the guest generated the `boot/grub/grub.cfg` "
        "captured here, and boot 2 (QEMU restarted on the same qcow2 overlay after the "
        "guest's reboot) ran with it. No `-append`/`-kernel` was used"
        + (": the memmap arguments came from a GRUB drop-in.\n" if sc.args else ".\n"),
        drop_in,
        "QEMU command line (paths are of the harness's temporary run dir):\n",
        f"```\n{qemu_cmd}\n```\n",
    ]
    if sc.notes:
        parts += ["## What this host shows\n", sc.notes + "\n"]
    parts += [
        "## `ndctl list -RN` (in the guest, at capture time)\n",
        f"```\n{(out / 'ndctl-list-RN.json').read_text().strip() or '(no output)'}\n```\n",
        "## Excerpts (from the captured files, for reading convenience)\n",
        "`/proc/iomem` persistent-memory lines:\n",
        "```\n" + ("\n".join(iomem) or "(none)") + "\n```\n",
        "Kernel log lines about pmem (`dev/kmsg`):\n",
        "```\n" + ("\n".join(pmem_log) or "(none)") + "\n```\n",
    ]
    if dax_lines:
        parts += ["DAX mounts in `proc/self/mountinfo`:\n", "```\n" + "\n".join(dax_lines) + "\n```\n"]
    parts += [
        "## Files\n",
        "The tree mirrors absolute paths (`proc/cmdline`, `sys/bus/nd/devices/...`), so "
        "pmemd can read it with `--root` pointing at this directory. `CAPTURE.txt` is "
        "written by the capture tool; `README.md` and `SHA256SUMS` are not part of the "
        "host tree.\n",
    ]
    return "\n".join(parts)


def capture(sc: Scenario, dest_root: Path, channel: str) -> None:
    guest.log(f"=== scenario {sc.name}: {sc.args or '(no memmap)'}")
    td = tempfile.mkdtemp(prefix=f"pmemd-capture-{sc.name}-")
    guest.log(f"{sc.name}: run output in {td} (kept if the capture fails)")
    try:
        res = guest.run_job(job_for(sc), files=[CAPTURE_TOOL], mode="grub", channel=channel,
                            nvdimm=sc.nvdimm, out_dir=Path(td) / "out", max_boots=3)
        for b in res.boots:
            if res.rc(b.number) != 0:
                raise RuntimeError(f"{sc.name}: job failed in boot {b.number}:\n"
                                   f"{res.job_log(b.number)[-3000:]}")
        if len(res.boots) != 2:
            raise RuntimeError(f"{sc.name}: expected 2 boots, got {len(res.boots)}")
        tree = res.out / "tree"
        n = verify(tree, res.out / "SHA256SUMS")
        guest.log(f"{sc.name}: {n} files verified against the guest's sha256")
        dest = dest_root / sc.name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(tree, dest, symlinks=True)
        shutil.copy(res.out / "SHA256SUMS", dest / "SHA256SUMS")
        verify(dest, dest / "SHA256SUMS")
        links_now = sorted(f"./{p.relative_to(dest)} -> {os.readlink(p)}"
                           for p in dest.rglob("*") if p.is_symlink())
        links_guest = sorted((res.out / "SYMLINKS").read_text().splitlines())
        if links_now != links_guest:
            raise RuntimeError(f"{sc.name}: symlinks differ from the guest's")
        manifest = guest.ensure_image().manifest
        (dest / "README.md").write_text(readme(sc, res, manifest))
        guest.log(f"{sc.name}: installed into {dest}")
    except BaseException:
        guest.log(f"{sc.name}: FAILED; console logs and job output are in {td}")
        raise
    shutil.rmtree(td)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", help="scenario name(s) to capture")
    ap.add_argument("--dest", default=str(DEFAULT_DEST))
    ap.add_argument("--channel", choices=("9p", "disk"), default="9p")
    args = ap.parse_args()
    reason = guest.skip_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    if args.only and len(chosen) != len(args.only):
        print(f"unknown scenario; known: {[s.name for s in SCENARIOS]}", file=sys.stderr)
        return 2
    t0 = datetime.datetime.now()
    for sc in chosen:
        capture(sc, Path(args.dest), args.channel)
    guest.log(f"captured {len(chosen)} scenario(s) in {datetime.datetime.now() - t0}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
