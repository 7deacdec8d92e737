"""Tier 4: boot the real Debian 13 guest and check facts the harness relies on.

Run: sudo PMEMD_E2E_HARNESS_FACTS=1 python3 -m pytest -m e2e tests/e2e/test_harness.py -rs
Guest runs (with PMEMD_E2E_HARNESS_FACTS=1; about 5 min under TCG): one direct-kernel boot, one
GRUB cycle (two boots), one boot of each UEFI image. They are opt-in: every cycle test boots the
same images through the same boot loaders and asserts more (the exact /proc/iomem ranges, the
devices at their addresses, the command line GRUB and systemd-boot passed), and CI's time goes
to those. The *_fake_* tests play qemu with a shell script (no guest) and always run.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import guest

pytestmark = pytest.mark.e2e

_REASON = guest.skip_reason()
if _REASON:
    pytest.skip(f"e2e guest harness unavailable: {_REASON}", allow_module_level=True)

GIB = 1 << 30
guest_facts = pytest.mark.skipif(not os.environ.get("PMEMD_E2E_HARNESS_FACTS"),
                                 reason="harness facts in a guest: set PMEMD_E2E_HARNESS_FACTS=1 (the cycle tests "
                                 "cover them)")

FACTS_JOB = r"""
set -x
o=$HARNESS_OUT
uname -r >$o/uname-r
cat /proc/version >$o/proc-version
cat /proc/cmdline >$o/cmdline
for d in /sys/firmware/memmap/*; do
    echo "$(cat $d/start) $(cat $d/end) $(cat $d/type)"
done >$o/firmware-memmap
udevadm settle
[ -b /dev/pmem0 ] && echo yes >$o/pmem0-is-block
readlink -f /sys/block/pmem0 >$o/pmem0-sysfs
for r in /sys/bus/nd/devices/region*; do
    echo "$(basename $r) $(cat $r/resource) $(cat $r/size)"
done >$o/regions
cat /sys/bus/nd/devices/ndbus0/provider >$o/provider
grep -i 'persistent' /proc/iomem >$o/iomem-pmem
"""


@pytest.fixture(scope="module")
def memmap_boot(tmp_path_factory: pytest.TempPathFactory) -> guest.RunResult:
    """One direct-kernel boot with memmap=512M!5G."""
    res = guest.run_job(FACTS_JOB, append="memmap=512M!5G",
                        out_dir=tmp_path_factory.mktemp("e2e-memmap"))
    assert [b.end for b in res.boots] == ["poweroff"]
    assert res.rc(1) == 0, res.job_log(1)
    return res


@guest_facts
def test_kernel_version_from_guest(memmap_boot: guest.RunResult) -> None:
    kver = guest.ensure_image().manifest["kernel"]
    assert memmap_boot.read("uname-r").strip() == kver
    assert memmap_boot.read("proc-version").startswith(f"Linux version {kver} ")
    assert "memmap=512M!5G" in memmap_boot.read("cmdline").split()


@guest_facts
def test_firmware_memmap_has_ram_above_4g(memmap_boot: guest.RunResult) -> None:
    entries = []
    for line in memmap_boot.read("firmware-memmap").splitlines():
        start, end, typ = line.split(" ", 2)
        entries.append((int(start, 16), int(end, 16), typ))
    high = [(s, e) for s, e, t in entries if t == "System RAM" and s >= 4 * GIB]
    assert high, entries
    # -machine pc -m 8G: 3 GiB below the PCI hole, the other 5 GiB at 4-9 GiB
    assert (4 * GIB, 9 * GIB - 1) in high
    # the firmware map does not show the memmap= range
    assert not any("ersistent" in t for _, _, t in entries)


@guest_facts
def test_memmap_boot_yields_pmem0_at_5g(memmap_boot: guest.RunResult) -> None:
    assert memmap_boot.read("pmem0-is-block").strip() == "yes"
    regions = dict((ln.split()[0], ln.split()[1:]) for ln in
                   memmap_boot.read("regions").splitlines())
    assert regions == {"region0": ["0x140000000", str(512 << 20)]}
    assert int(regions["region0"][0], 16) == 0x140000000
    assert memmap_boot.read("provider").strip() == "e820"
    sysfs = memmap_boot.read("pmem0-sysfs").strip()
    assert sysfs.endswith("/region0/namespace0.0/block/pmem0"), sysfs
    assert "140000000-15fffffff : Persistent Memory (legacy)" in memmap_boot.read("iomem-pmem")


GRUB_JOB = r"""
set -x
cat /proc/cmdline >$HARNESS_OUT/cmdline-boot$HARNESS_BOOT
if [ "$HARNESS_BOOT" = 1 ]; then
    mkdir -p /etc/default/grub.d
    cat >/etc/default/grub.d/99-test.cfg <<'EOF'
GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX memmap=256M!6G"
EOF
    update-grub
    echo reboot >$HARNESS_NEXT
else
    udevadm settle
    cat /sys/bus/nd/devices/region0/resource >$HARNESS_OUT/region0-resource
fi
"""


@guest_facts
def test_grub_cycle_update_grub_decides_next_cmdline(tmp_path: Path) -> None:
    """Boot 1 adds a GRUB drop-in and reboots; boot 2 (via GRUB) has the memmap range."""
    res = guest.run_job(GRUB_JOB, mode="grub", out_dir=tmp_path / "out")
    assert [b.end for b in res.boots] == ["restart", "poweroff"]
    assert res.rc(1) == 0 and res.rc(2) == 0, res.job_log(1) + res.job_log(2)
    assert "memmap" not in res.read("cmdline-boot1")
    cmd2 = res.read("cmdline-boot2").split()
    assert cmd2[0].startswith("BOOT_IMAGE=/boot/vmlinuz-")
    assert "memmap=256M!6G" in cmd2
    assert res.read("region0-resource").strip() == "0x180000000"


UEFI_JOB = r"""
o=$HARNESS_OUT
cat /proc/cmdline >$o/cmdline
ls -d /sys/firmware/efi/efivars >$o/efi
for d in /sys/firmware/memmap/*; do
    echo "$(cat $d/start) $(cat $d/end) $(cat $d/type)"
done >$o/firmware-memmap
findmnt -rno TARGET,FSTYPE >$o/mounts
"""


@pytest.fixture(scope="module")
def uefi_boots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, guest.RunResult | BaseException]:
    """One boot of each UEFI image (OVMF, q35), both at once."""
    layouts = [m for m in ("uefi-grub", "sdboot") if not guest.skip_reason(m)]
    if not layouts:
        pytest.skip(f"UEFI guests unavailable: {guest.skip_reason('sdboot')}")
    root = tmp_path_factory.mktemp("e2e-uefi-facts")
    return guest.run_jobs({m: {"script": UEFI_JOB, "mode": m, "out_dir": root / m} for m in layouts})


@guest_facts
@pytest.mark.parametrize("mode, esp", [("uefi-grub", "/boot/efi"), ("sdboot", "/boot")])
def test_uefi_boot_firmware_memmap_has_ram_above_4g(uefi_boots: dict[str, guest.RunResult | BaseException],
                                                     mode: str, esp: str) -> None:
    res = uefi_boots.get(mode)
    if res is None:
        pytest.skip(f"{mode}: {guest.skip_reason(mode)}")
    assert isinstance(res, guest.RunResult), res
    assert [b.end for b in res.boots] == ["poweroff"] and res.rc(1) == 0, res.job_log(1)
    assert res.read("efi").strip() == "/sys/firmware/efi/efivars"  # booted by OVMF, not SeaBIOS
    assert "console=ttyS0,115200" in res.read("cmdline").split()
    assert f"{esp} vfat" in res.read("mounts").splitlines()
    entries = []
    for line in res.read("firmware-memmap").splitlines():
        start, end, typ = line.split(" ", 2)
        entries.append((int(start, 16), int(end, 16), typ))
    # -machine q35 -m 8G under OVMF: RAM below 2 GiB (cut by OVMF's reserved and ACPI NVS
    # pieces), the PCI hole, then the other 6 GiB at 4-10 GiB: the cycle's regions (4-6 GiB) fit
    assert (4 * GIB, 10 * GIB - 1, "System RAM") in entries, entries
    assert not [e for e in entries if e[2] == "System RAM" and 2 * GIB <= e[0] < 4 * GIB], entries
    assert not any("ersistent" in t for _, _, t in entries)


# --------------------------------------------------------------------------- expected panics

# The kernel prints its command line twice: x86's "Command line: ..." (KERN_INFO, on the console
# only with loglevel>=7) and "Kernel command line: ..." (KERN_NOTICE, loglevel>=6); `quiet`
# (console loglevel 4) hides both, so a regex on them needs loglevel=6 on the command line.
TRIAL_REGEX = r"[Cc]ommand line:.*pmemd\.trial=1"
# A panic in real guests, expected and then survived, is proven by test_trial_cycle.py (a trial
# boot crashed on purpose on BIOS GRUB and on systemd-boot); here the matching logic, on a shell
# script that plays qemu's console.

def _fake_boot(tmp_path: Path, lines: list[str], *, then: str = "exit 0", timeout: float = 30,
               expect: str | None = TRIAL_REGEX) -> guest.BootInfo:
    script = "".join(f"printf '%s\\n' {shlex.quote(ln)}; " for ln in lines) + then
    return guest._one_boot(["sh", "-c", script], 1, tmp_path, timeout, False, tag="fake",
                           expect_panic=re.compile(expect) if expect else None)


TRIAL_CONSOLE = ["[    0.104780] Kernel command line: root=/dev/vda1 ro panic=5 pmemd.trial=1",
                 "[   20.000000] sysrq: Trigger a crash",
                 "[   20.000100] Kernel panic - not syncing: sysrq triggered crash",
                 "[   20.000200] Rebooting in 5 seconds.."]
PLAIN_CONSOLE = [TRIAL_CONSOLE[0].replace(" pmemd.trial=1", ""), *TRIAL_CONSOLE[1:]]


def test_fake_expected_panic_waits_for_qemu_to_exit(tmp_path: Path) -> None:
    t0 = time.monotonic()
    info = _fake_boot(tmp_path, TRIAL_CONSOLE, then="sleep 4.5; exit 0")
    assert info.end == "panic" and info.job_boot is None
    assert info.panic_at is not None and info.seconds - info.panic_at > 4  # waited past the 3 s grace
    assert time.monotonic() - t0 > 4
    # the panic's own line counts too (the regex test_trial_cycle.py uses), also when qemu exits at once
    info = _fake_boot(tmp_path, PLAIN_CONSOLE, expect=r"sysrq triggered crash")
    assert info.end == "panic"


def test_fake_unexpected_panic_still_raises(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(guest.GuestPanic, match="did not match"):
        _fake_boot(tmp_path, PLAIN_CONSOLE, then="exec sleep 60")
    assert time.monotonic() - t0 < 15  # PANIC_GRACE after the panic, not the boot timeout
    with pytest.raises(guest.GuestPanic):  # no expect_panic at all: as before
        _fake_boot(tmp_path, TRIAL_CONSOLE, then="exec sleep 60", expect=None)
    with pytest.raises(guest.GuestPanic, match="qemu exited"):  # a quick reset is no excuse
        _fake_boot(tmp_path, PLAIN_CONSOLE)


def test_fake_expected_panic_without_reset_times_out(tmp_path: Path) -> None:
    with pytest.raises(guest.GuestError, match="did not exit within 5 s") as exc:
        _fake_boot(tmp_path, TRIAL_CONSOLE, then="exec sleep 60", timeout=5)
    assert not isinstance(exc.value, guest.GuestPanic)


def test_fake_boot_reads_harness_boot_from_the_console(tmp_path: Path) -> None:
    info = _fake_boot(tmp_path, ["HARNESS: boot 2: job runner started (uptime 30.1 s)",
                                 "reboot: Power down"])
    assert (info.end, info.job_boot, info.panic_at) == ("poweroff", 2, None)


def test_run_result_maps_qemu_boots_to_job_boots(tmp_path: Path) -> None:
    res = guest.RunResult(out=tmp_path, accel="tcg", mode="kernel", boots=[
        guest.BootInfo(1, 50.0, "restart", tmp_path / "c1", job_boot=1),
        guest.BootInfo(2, 40.0, "panic", tmp_path / "c2", panic_at=30.0),
        guest.BootInfo(3, 50.0, "poweroff", tmp_path / "c3", job_boot=2)])
    (tmp_path / "job-boot2.rc").write_text("0\n")
    assert res.non_panic_boots == [1, 3] and res.job_boots == [1, 2]
    assert res.rc(res.job_boot(3) or 0) == 0 and res.job_boot(2) is None
