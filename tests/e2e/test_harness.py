"""Tier 4: boot the real Debian 13 guest and check facts the harness relies on.

Run: sudo python3 -m pytest -m e2e tests/e2e -rs
Two guest runs: one direct-kernel boot (~45 s under TCG) and one GRUB cycle
(two boots, ~2 min under TCG). The first use builds the cached image (~2 min).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import guest

pytestmark = pytest.mark.e2e

_REASON = guest.skip_reason()
if _REASON:
    pytest.skip(f"e2e guest harness unavailable: {_REASON}", allow_module_level=True)

GIB = 1 << 30

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


def test_kernel_version_from_guest(memmap_boot: guest.RunResult) -> None:
    kver = guest.ensure_image().manifest["kernel"]
    assert memmap_boot.read("uname-r").strip() == kver
    assert memmap_boot.read("proc-version").startswith(f"Linux version {kver} ")
    assert "memmap=512M!5G" in memmap_boot.read("cmdline").split()


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
