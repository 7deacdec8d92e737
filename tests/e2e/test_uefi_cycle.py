"""Tier 4: pmemd's cycle on UEFI guests: OVMF + GRUB EFI, and OVMF + systemd-boot.

Two Debian 13 guests (images `uefi-grub` and `sdboot`, see build.LAYOUTS), booted side by side
(the session's guest pool, two at a time), four boots each; tests/e2e/jobs/uefi-cycle.sh drives both:

1. no memmap; the .deb is installed, the service in sync; a two-namespace config (ext4 at a
   fixed offset, xfs at offset: auto) is picked up by the running daemon, which writes the boot
   config (GRUB EFI: its grub.d drop-in + update-grub; systemd-boot: /etc/kernel/cmdline and
   every entry's options) and flags the reboot.
2. /proc/cmdline differs from boot 1 by exactly pmemd's tokens; the devices sit at the declared
   addresses, formatted and mounted with DAX; then bulk is removed from the config.
3. bulk's token, device and mount are gone, fast is untouched; a second kernel is installed the
   way a kernel package does it (the /etc/kernel/postinst.d hooks: zz-update-grub, or
   zz-systemd-boot -> kernel-install add), after pmemd wrote its tokens.
4. the new kernel is what booted (GRUB's BOOT_IMAGE, systemd-boot's LoaderEntrySelected) and its
   command line carries pmemd's tokens; fast is in sync on it; then ``apt-get purge pmemd``.
5. no memmap= on the command line, no pmemd file left in the boot config, /etc/default/grub and
   /etc/kernel/cmdline as they were before the package was installed.

A third guest (image ``uefi-grub``, jobs/mkconfig-cycle.sh) runs the grub2-mkconfig layout on the
real GRUB: Debian's grub-mkconfig under the RHEL name, ``settings.bootloader: grub2-mkconfig``.

Run: sudo python3 -m pytest -m e2e tests/e2e/test_uefi_cycle.py -rs -s   (about 6-8 min under TCG)
PMEMD_E2E_UEFI_RESULT=<dir> re-checks the evidence of an earlier run (<dir>/<layout>/) without booting.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import guest
from evidence import (
    Cycle,
    actions,
    cycle_of,
    default_entry,
    journal_lines,
    load_result,
    logged,
    mount_lines,
    pmem_tokens,
    step_seconds,
    super_options,
)
from pool import Pool, Session, Work

pytestmark = pytest.mark.e2e

LAYOUTS = ("uefi-grub", "sdboot")
_REASONS = {layout: guest.skip_reason(layout) for layout in LAYOUTS}
if all(_REASONS.values()):
    pytest.skip(f"e2e UEFI guests unavailable: {_REASONS['sdboot']}", allow_module_level=True)

HERE = Path(__file__).resolve().parent
JOB = HERE / "jobs" / "uefi-cycle.sh"
MKCONFIG_JOB = HERE / "jobs" / "mkconfig-cycle.sh"
LIB = HERE / "jobs" / "lib.sh"
FAST, BULK = "memmap=1G!5G", "memmap=512M!4G"  # bulk: offset auto -> the lowest free range, 4G
BOTH = [BULK, FAST, "nokaslr"]
ONE = [FAST, "nokaslr"]
BACKEND = {"uefi-grub": "grub", "sdboot": "systemd-boot"}
STATX_ATTR_DAX = 0x00200000


def guest_work(session: Session) -> list[Work]:
    """One run per layout (5 boots, about 5-6 min under TCG), and the grub2-mkconfig one (3 boots)."""
    if os.environ.get("PMEMD_E2E_UEFI_RESULT"):
        return []
    todo = [layout for layout in LAYOUTS if not _REASONS[layout]]
    root = session.tmp.mktemp("e2e-uefi")
    works = [Work("uefi", layout, 6, functools.partial(
        guest.run_job, f"LAYOUT={layout}\n" + JOB.read_text(), files=[session.deb(), LIB], mode=layout,
        max_boots=5, out_dir=root / layout)) for layout in todo]
    if "uefi-grub" in todo:
        works.append(Work("uefi", "mkconfig", 4, functools.partial(
            guest.run_job, MKCONFIG_JOB.read_text(), files=[session.deb(), LIB], mode="uefi-grub", max_boots=3,
            out_dir=root / "mkconfig")))
    return works


@pytest.fixture(scope="module")
def runs(guest_pool: Pool) -> dict[str, guest.RunResult | BaseException]:
    reuse = os.environ.get("PMEMD_E2E_UEFI_RESULT")
    if reuse:
        return {layout: load_result(Path(reuse) / layout) for layout in (*LAYOUTS, "mkconfig")}
    return logged("pmemd UEFI cycle", guest_pool.results("uefi"))


@pytest.fixture(params=LAYOUTS)
def cycle(request: pytest.FixtureRequest, runs: dict[str, guest.RunResult | BaseException]) -> Cycle:
    return cycle_of(runs, request.param, _REASONS[request.param])


def layout_of(cycle: Cycle) -> str:
    return cycle.res.mode


def added(cycle: Cycle, boot: int) -> Counter[str]:
    """Tokens this boot's /proc/cmdline has more than boot 1's (before pmemd)."""
    return Counter(cycle.cmdline(boot)) - Counter(cycle.ok(1, "cmdline").split())


def lost(cycle: Cycle, boot: int) -> Counter[str]:
    """Tokens of boot 1's /proc/cmdline this boot lacks."""
    return Counter(cycle.ok(1, "cmdline").split()) - Counter(cycle.cmdline(boot))


def boot_config_tokens(cycle: Cycle, boot: int, tag: str) -> dict[str, list[str]]:
    """pmemd's tokens in each place the layout keeps next-boot command lines."""
    if layout_of(cycle) == "uefi-grub":
        lines = cycle.ok(boot, f"{tag}-grubcfg").splitlines()
        return {f"grub.cfg linux line {i}: {ln.split()[1]}": pmem_tokens(ln.split()) for i, ln in enumerate(lines)}
    places = {"/etc/kernel/cmdline": pmem_tokens(cycle.ok(boot, f"{tag}-kernel-cmdline").split())}
    for line in cycle.ok(boot, f"{tag}-entries").splitlines():
        path, _, rest = line.partition(":")
        if rest.startswith("options"):
            places[path] = pmem_tokens(rest.split()[1:])
    return places


def test_five_boots_each_job_ok(cycle: Cycle) -> None:
    res = cycle.res
    assert [b.end for b in res.boots] == ["restart"] * 4 + ["poweroff"], [b.end for b in res.boots]
    for b in res.boots:
        assert res.rc(b.number) == 0, res.job_log(b.number)[-4000:]


def test_guest_booted_by_uefi(cycle: Cycle) -> None:
    for boot in (1, 2, 3, 4):
        assert "/sys/firmware/efi/efivars" in cycle.ok(boot, "efi")
    if layout_of(cycle) == "sdboot":
        entry = cycle.res.path("b1-entry-selected").read_text().strip()
        assert re.fullmatch(r"[0-9a-f]{32}-.+\.conf", entry), entry  # the entry kernel-install wrote
    else:
        assert cycle.ok(1, "cmdline").split()[0].startswith("BOOT_IMAGE=/boot/vmlinuz-")


def test_boot1_package_installs_and_service_runs_in_sync(cycle: Cycle) -> None:
    cycle.check_installed()


def test_boot1_daemon_writes_the_boot_config_and_flags_the_reboot(cycle: Cycle) -> None:
    status = cycle.status(1, "pending")
    assert status.startswith("reboot pending since ") and FAST in status and BULK in status, status
    before = boot_config_tokens(cycle, 1, "pre")
    assert before and not any(before.values()), before
    after = boot_config_tokens(cycle, 1, "after")
    assert after and all(toks == BOTH for toks in after.values()), after
    if layout_of(cycle) == "uefi-grub":
        assert f'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX {BULK} {FAST} nokaslr"' in cycle.ok(1, "after-dropin")
        assert pmem_tokens(default_entry(cycle.ok(1, "after-grubcfg"))) == BOTH
    state = json.loads(cycle.ok(1, "after-state"))
    assert state["kernel_args"] == BOTH and state["backend"] == BACKEND[layout_of(cycle)], state
    assert state["pending_reboot"]["boot_id"]
    assert cycle.ok(1, "after-reboot-required")
    for act in ("set-kernel-args", "reboot"):
        (e,) = actions(cycle.journal(1, "after-journal"), act)
        assert e["PMEMD_RESULT"] == "ok", e


def test_boot2_cmdline_carries_exactly_pmemds_tokens(cycle: Cycle) -> None:
    assert pmem_tokens(cycle.cmdline(2)) == BOTH
    assert added(cycle, 2) == Counter(BOTH)
    assert not lost(cycle, 2)


def test_boot2_devices_at_the_declared_addresses_mounted_with_dax(cycle: Cycle) -> None:
    assert cycle.status(2, "synced") == "in sync: 2/2 namespaces mounted with DAX"
    iomem = cycle.ok(2, "after-iomem")
    assert "100000000-11fffffff : Persistent Memory (legacy)" in iomem  # bulk, auto: 512M at 4G
    assert "140000000-17fffffff : Persistent Memory (legacy)" in iomem  # fast: 1G at 5G
    mi = cycle.ok(2, "after-mountinfo")
    for point, fstype in (("/pmem/fast", "ext4"), ("/pmem/bulk", "xfs")):
        (line,) = mount_lines(mi, point)
        fields = line.split(" - ")[1].split()
        assert fields[0] == fstype and fields[1].startswith("/dev/pmem"), line
        assert "dax=always" in super_options(line), line
    status = {n["name"]: n for n in json.loads(cycle.ok(2, "after-status-json"))["namespaces"]}
    assert {k: (v["running"], v["mount"], v["dax"]) for k, v in status.items()} == {
        "bulk": ("mounted", "/pmem/bulk", True), "fast": ("mounted", "/pmem/fast", True)}
    for ns in ("fast", "bulk"):
        m = re.search(r"stat\.attributes = (0x[0-9a-f]+)", cycle.ok(2, f"{ns}-dax"))
        assert m and int(m.group(1), 16) & STATX_ATTR_DAX, cycle.text(2, f"{ns}-dax")
    entries = cycle.journal(2, "after-journal")
    assert not [e for e in entries if e.get("PMEMD_RESULT") == "failed" or e.get("PRIORITY") == "3"], entries
    for ns in ("fast", "bulk"):
        for act in ("mkfs", "mount", "verify-dax"):
            (e,) = actions(entries, act, ns)
            assert e["PMEMD_RESULT"] == "ok" and e["PMEMD_DEVICE"] == status[ns]["device"], e


def test_boot2_removing_a_namespace_takes_its_token_out_of_the_boot_config(cycle: Cycle) -> None:
    assert cycle.status(2, "pending").startswith("reboot pending since ")
    places = boot_config_tokens(cycle, 2, "removed")
    assert places and all(toks == ONE for toks in places.values()), places
    assert json.loads(cycle.ok(2, "removed-state"))["kernel_args"] == ONE
    assert cycle.ok(2, "removed-reboot-required")


def test_boot3_removed_token_gone_and_the_other_untouched(cycle: Cycle) -> None:
    assert pmem_tokens(cycle.cmdline(3)) == ONE
    assert added(cycle, 3) == Counter(ONE) and not lost(cycle, 3)
    assert cycle.status(3, "synced") == "in sync: 1/1 namespaces mounted with DAX"
    iomem = cycle.ok(3, "after-iomem")
    assert "100000000-11fffffff" not in iomem
    assert "140000000-17fffffff : Persistent Memory (legacy)" in iomem
    mi = cycle.ok(3, "after-mountinfo")
    assert not mount_lines(mi, "/pmem/bulk")
    (line,) = mount_lines(mi, "/pmem/fast")
    assert "dax=always" in super_options(line) and line.split(" - ")[1].split()[0] == "ext4"
    state = json.loads(cycle.ok(3, "after-state"))
    assert set(state["namespaces"]) == {"fast"} and state["kernel_args"] == ONE and state["pending_reboot"] is None


def test_new_kernel_entry_written_after_pmemd_carries_its_tokens(cycle: Cycle) -> None:
    k2 = cycle.text(3, "k2").strip()
    hooks = {"uefi-grub": "zz-update-grub", "sdboot": "zz-systemd-boot"}[layout_of(cycle)]
    cycle.ok(3, f"kernel-hook-{hooks}")
    places = boot_config_tokens(cycle, 3, "newkernel")
    new = {p: t for p, t in places.items() if k2 in p}
    assert new, places  # the hook wrote an entry for the new kernel ...
    assert all(toks == ONE for toks in places.values()), places  # ... and it has pmemd's tokens
    assert cycle.ok(3, "newkernel-status").startswith("in sync")


def test_boot4_new_kernel_booted_with_pmemds_tokens(cycle: Cycle) -> None:
    k2 = cycle.text(3, "k2").strip()
    tokens = cycle.cmdline(4)
    if layout_of(cycle) == "uefi-grub":
        assert tokens[0] == f"BOOT_IMAGE=/boot/vmlinuz-{k2}", tokens  # the new default entry
    else:
        selected = cycle.ok(4, "entry-selected").strip()
        assert selected.endswith(f"-{k2}.conf"), selected
    assert pmem_tokens(tokens) == ONE
    assert cycle.status(4, "synced") == "in sync: 1/1 namespaces mounted with DAX"
    (line,) = mount_lines(cycle.ok(4, "after-mountinfo"), "/pmem/fast")
    assert "dax=always" in super_options(line)
    entries = cycle.journal(4, "after-journal")
    assert not [e for e in entries if e.get("PMEMD_RESULT") == "failed" or e.get("PRIORITY") == "3"], entries


def test_purge_leaves_no_reservation_behind(cycle: Cycle) -> None:
    purge = cycle.ok(4, "purge")
    assert "Purging configuration files for pmemd" in purge
    assert "[ok] boot config" in purge and "[ok] fast: unmount /pmem/fast" in purge  # pmemd reset, from prerm
    assert cycle.rc(4, "purged-mountinfo") == 1  # no pmem mount left (grep found nothing)
    leftovers = [ln for ln in cycle.text(4, "purged-leftovers").splitlines() if "cannot access" not in ln]
    assert not [ln for ln in leftovers if "pmemd" in ln], leftovers
    assert "cannot access '/var/lib/pmemd'" in cycle.text(4, "purged-leftovers")
    final = cycle.ok(5, "final-cmdline").split()
    assert not pmem_tokens(final)

    def plain(tokens: list[str]) -> list[str]:  # without what names the kernel and initrd booted
        return [t for t in tokens if not t.startswith(("BOOT_IMAGE=", "initrd="))]

    assert plain(final) == plain(cycle.ok(1, "cmdline").split())
    assert cycle.text(5, "final-iomem").strip() == "0"
    assert cycle.text(5, "final-default-grub") == cycle.text(1, "pre-default-grub")  # sdboot: no such file
    places = boot_config_tokens(cycle, 5, "final")
    assert places and not any(places.values()), places
    if layout_of(cycle) == "sdboot":
        assert cycle.ok(5, "final-kernel-cmdline").split() == cycle.ok(1, "pre-kernel-cmdline").split()
    else:
        assert cycle.rc(5, "final-dropin") != 0  # cat: no such file


def test_print_guest_evidence(cycle: Cycle, capsys: pytest.CaptureFixture[str]) -> None:
    """The CI log carries what each UEFI guest showed and how long every step took."""
    res = cycle.res
    out = [f"== pmemd UEFI cycle ({layout_of(cycle)}): accel {res.accel}, {len(res.boots)} boots, "
           f"{res.seconds:.0f} s in qemu"]
    out += [f"   boot {b.number}: {b.seconds:.0f} s, ended by {b.end}" for b in res.boots]
    boot_cfg = {"uefi-grub": ("dropin", "grubcfg"), "sdboot": ("kernel-cmdline", "entries", "loader-conf")}
    for b in res.boots:
        out.append(f"---- boot {b.number} ({layout_of(cycle)})")
        for tag in ("after", "removed", "newkernel"):
            for name in ("cmdline", "iomem", "mountinfo", *boot_cfg[layout_of(cycle)]):
                p = res.path(f"b{b.number}-{tag}-{name}")
                if p.exists():
                    out.append(f"# {tag} {name}:\n{p.read_text(errors='replace').rstrip()}")
        for tag in ("after", "removed"):
            if res.path(f"b{b.number}-{tag}-journal").exists():
                out.append(f"# journalctl -u pmemd ({tag}), pmemd's fields:")
                out += journal_lines(cycle, b.number, f"{tag}-journal")
        out.append("# step durations (s): " + ", ".join(f"{n} {s:.1f}" for n, s in step_seconds(res, b.number)))
    with capsys.disabled():
        print("\n" + "\n".join(out))
    assert len(out) > 10


# --- the grub2-mkconfig layout on the real GRUB (third guest) ----------------------------------


@pytest.fixture
def mk(runs: dict[str, guest.RunResult | BaseException]) -> Cycle:
    if _REASONS["uefi-grub"]:
        pytest.skip(f"uefi-grub guests unavailable: {_REASONS['uefi-grub']}")
    res = runs["mkconfig"]
    if not isinstance(res, guest.RunResult):
        pytest.fail(f"the grub2-mkconfig guest run failed: {res}")
    return Cycle(res)


def cmdline_linux(text: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith("GRUB_CMDLINE_LINUX=")]
    return line


def test_mkconfig_three_boots_each_job_ok(mk: Cycle) -> None:
    assert [b.end for b in mk.res.boots] == ["restart", "restart", "poweroff"]
    for b in mk.res.boots:
        assert mk.res.rc(b.number) == 0, mk.res.job_log(b.number)[-4000:]


def test_mkconfig_edits_only_its_tokens_in_etc_default_grub(mk: Cycle) -> None:
    pre, after = mk.ok(1, "pre-default-grub"), mk.ok(1, "after-default-grub")
    assert cmdline_linux(after) == cmdline_linux(pre)[:-1] + f" {BULK} {FAST} nokaslr" + '"'
    changed = [a for a, b in zip(pre.splitlines(), after.splitlines(), strict=True) if a != b]
    assert changed == [cmdline_linux(pre)]  # every other line as it was
    assert "99-pmemd.cfg" not in mk.text(1, "after-grub-d")  # no Debian drop-in on this layout
    assert pmem_tokens(default_entry(mk.ok(1, "after-grubcfg"))) == BOTH  # the real grub-mkconfig made it
    state = json.loads(mk.ok(1, "after-state"))
    assert state["backend"] == "grub2-mkconfig" and state["kernel_args"] == BOTH
    assert "grub2-mkconfig writes /boot/grub/grub.cfg" in mk.text(1, "after-plan")


def test_mkconfig_real_grub_boots_exactly_pmemds_tokens(mk: Cycle) -> None:
    assert pmem_tokens(mk.cmdline(2)) == BOTH
    assert Counter(mk.cmdline(2)) - Counter(mk.ok(1, "cmdline").split()) == Counter(BOTH)
    assert mk.status(2, "synced") == "in sync: 2/2 namespaces mounted with DAX"


def test_mkconfig_purge_gives_etc_default_grub_back_byte_for_byte(mk: Cycle) -> None:
    assert "[ok] boot config (grub2-mkconfig)" in mk.ok(2, "purge")
    assert mk.ok(2, "purged-default-grub-sha") == mk.ok(1, "pre-default-grub-sha")
    assert not pmem_tokens(default_entry(mk.ok(2, "purged-grubcfg")))
    assert not pmem_tokens(mk.ok(3, "final-cmdline").split())
    assert mk.ok(3, "final-default-grub-sha") == mk.ok(1, "pre-default-grub-sha")


def test_mkconfig_print_guest_evidence(mk: Cycle, capsys: pytest.CaptureFixture[str]) -> None:
    res = mk.res
    out = [f"== pmemd grub2-mkconfig cycle (real GRUB EFI, grub-mkconfig as grub2-mkconfig): "
           f"{len(res.boots)} boots, {res.seconds:.0f} s in qemu"]
    for b in res.boots:
        out.append(f"   boot {b.number}: {b.seconds:.0f} s, ended by {b.end}")
        for name in ("cmdline", "after-cmdline", "final-cmdline"):
            p = res.path(f"b{b.number}-{name}")
            if p.exists():
                out.append(f"# boot {b.number} {name}: {p.read_text(errors='replace').strip()}")
        for tag in ("pre", "after", "purged", "final"):
            p = res.path(f"b{b.number}-{tag}-default-grub")
            if p.exists():
                out.append(f"# boot {b.number} {tag} {cmdline_linux(p.read_text())}")
        out.append("# step durations (s): " + ", ".join(f"{n} {s:.1f}" for n, s in step_seconds(res, b.number)))
    with capsys.disabled():
        print("\n" + "\n".join(out))
    assert len(out) > 5
