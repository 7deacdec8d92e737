"""Tier 4: pmemd's whole life on a real kernel, GRUB, systemd and journald.

Two guests (the session's guest pool), the same .deb in both: Debian 13 (kernel 6.12, systemd 257, GRUB 2.12,
pydantic 2) and Debian 12 (kernel 6.1, systemd 252, GRUB 2.06, pydantic 1.10). Each is booted
through GRUB five times, with a QEMU NVDIMM beside the emulated pmem (tests/e2e/jobs/cycle.sh
drives it; the evidence of every boot is asserted here, for each release):

1. no memmap; the .deb is installed; the enabled service reports an in-sync STATUS;
   a misaligned region and one overlapping the firmware's reserved range are refused before GRUB
   is touched; a two-namespace config (ext4 at a fixed offset, xfs at offset: auto) is picked up
   by the running daemon: GRUB drop-in, update-grub, pending reboot, /run/reboot-required.
2. booted with exactly pmemd's arguments: /dev/pmem* at the declared addresses, formatted,
   mounted with DAX (mountinfo and STATX_ATTR_DAX read by xfs_io), in-sync STATUS, journal fields.
3. blank again after the reboot, re-formatted and mounted; no duplicate arguments; one namespace
   removed from the config -> its token leaves GRUB, reboot flagged.
4. the removed namespace's device and mount are gone, the other is untouched; a filesystem pmemd
   did not write is not formatted; then `reboot: now` (and a devdax namespace added) makes pmemd
   reboot the guest itself.
5. after pmemd's own reboot: both namespaces back, a devdax namespace made by the real ndctl;
   the NVDIMM's filesystem is intact.

Run: sudo python3 -m pytest -m e2e tests/e2e/test_cycle.py -rs -s   (about 12-15 min under TCG)
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import guest

pytestmark = pytest.mark.e2e

_REASON = guest.skip_reason()
# release -> boot mode of its GRUB (BIOS) image
RELEASES = {"trixie": "grub", "bookworm": "bookworm-grub"}
if _REASON:
    pytest.skip(f"e2e guest harness unavailable: {_REASON}", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
JOB = Path(__file__).resolve().parent / "jobs" / "cycle.sh"
LIB = JOB.with_name("lib.sh")  # the shell shared with the UEFI cycles, sourced by the job
FAST, BULK = "memmap=1G!5G", "memmap=512M!4G"  # bulk: offset auto -> lowest free range, 4G
DEV = "memmap=512M!4608M"  # devdax, offset auto, added in boot 4: the next free range after bulk
STATX_ATTR_DAX = 0x00200000
sys.path.insert(0, str(REPO))
from evidence import (  # noqa: E402
    Cycle,
    actions,
    blkid,
    default_entry,
    load_result,
    logged,
    mount_lines,
    pmem_tokens,
    step_seconds,
    super_options,
)
from pool import Pool, Session, Work  # noqa: E402

from pmemd.journal import MESSAGE_IDS  # noqa: E402


def guest_work(session: Session) -> list[Work]:
    """One run per release, 5 GRUB boots each (about 7-9 min under TCG)."""
    if os.environ.get("PMEMD_E2E_CYCLE_RESULT"):
        return []
    root = session.tmp.mktemp("e2e-cycle")
    return [Work("cycle", rel, 8, functools.partial(
        guest.run_job, JOB.read_text(), files=[session.deb(), LIB], mode=mode, nvdimm="1G", max_boots=5,
        out_dir=root / rel)) for rel, mode in RELEASES.items()]


@pytest.fixture(scope="module")
def cycles(guest_pool: Pool) -> dict[str, Cycle | BaseException]:
    """Both releases' cycles, with the same .deb."""
    reuse = os.environ.get("PMEMD_E2E_CYCLE_RESULT")
    if reuse:  # re-check the evidence of an earlier run without booting: <dir>/<release>
        return {rel: Cycle(load_result(Path(reuse) / rel)) for rel in RELEASES}
    runs = logged("pmemd cycle", guest_pool.results("cycle"))
    return {rel: res if isinstance(res, BaseException) else Cycle(res) for rel, res in runs.items()}


@pytest.fixture(scope="module", params=list(RELEASES))
def cycle(request: pytest.FixtureRequest, cycles: dict[str, Cycle | BaseException]) -> Cycle:
    res = cycles[request.param]
    if isinstance(res, BaseException):
        raise res
    return res


def test_five_boots_and_the_fourth_ended_by_pmemd(cycle: Cycle) -> None:
    res = cycle.res
    logs = "\n".join(res.job_log(b.number)[-3000:] for b in res.boots)
    assert [b.end for b in res.boots] == ["restart"] * 4 + ["poweroff"], logs
    for boot in (1, 2, 3, 5):
        assert res.rc(boot) == 0, res.job_log(boot)[-4000:]
    # boot 4 never returned from its job: pmemd's `systemctl reboot` ended it
    assert res.rc(4) is None and not res.path("b4-not-rebooted").exists()
    assert cycle.text(4, "done").strip() == "waiting for pmemd to reboot"


def test_boot1_package_installs_and_service_runs_in_sync(cycle: Cycle) -> None:
    cycle.check_installed()


@pytest.mark.parametrize("case, expect", [
    ("misaligned", "/etc/pmem.yaml:7:13: error: namespaces.bad.offset: 5000M is not a multiple of 128 MiB"),
    ("reserved", "/etc/pmem.yaml:7:13: error: namespaces.bad.offset: range [0xfd00000000-0xfd3fffffff] is "
                 "not inside one firmware System RAM entry (it touches: Reserved [0xfd00000000-0xffffffffff])"),
])
def test_boot1_bad_regions_refused_before_grub_is_touched(cycle: Cycle, case: str, expect: str) -> None:
    assert cycle.status(1, case).startswith("error: ")
    assert cycle.rc(1, f"{case}-validate") == 1
    assert expect in cycle.text(1, f"{case}-validate")
    assert cycle.ok(1, f"{case}-sha") == cycle.ok(1, "pre-sha")  # /etc/default/grub, grub.cfg
    assert "99-pmemd.cfg" not in cycle.text(1, f"{case}-dropin")
    assert cycle.rc(1, f"{case}-reboot-required") != 0


def test_boot1_daemon_writes_grub_and_flags_the_reboot(cycle: Cycle) -> None:
    assert cycle.status(1, "pending").startswith("reboot pending since ")
    assert FAST in cycle.status(1, "pending") and BULK in cycle.status(1, "pending")
    dropin = cycle.ok(1, "after-dropin")
    assert f'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX {BULK} {FAST} nokaslr"' in dropin
    assert pmem_tokens(default_entry(cycle.ok(1, "after-grubcfg"))) == [BULK, FAST, "nokaslr"]
    pre, post = ({ln.split()[1]: ln.split()[0] for ln in cycle.ok(1, t).splitlines()} for t in ("pre-sha", "after-sha"))
    assert post["/etc/default/grub"] == pre["/etc/default/grub"]  # the user's file is never rewritten
    assert post["/boot/grub/grub.cfg"] != pre["/boot/grub/grub.cfg"]  # update-grub ran
    assert cycle.ok(1, "after-reboot-required")
    state = json.loads(cycle.ok(1, "after-state"))
    assert state["kernel_args"] == [BULK, FAST, "nokaslr"] and state["backend"] == "grub"
    assert state["pending_reboot"]["boot_id"]
    status = json.loads(cycle.ok(1, "after-status-json"))
    assert {n["name"]: n["running"] for n in status["namespaces"]} == {"bulk": "configured", "fast": "configured"}
    entries = cycle.journal(1, "after-journal")
    for act in ("set-kernel-args", "reboot"):
        (e,) = actions(entries, act)
        assert e["MESSAGE_ID"] == MESSAGE_IDS[act] and e["PMEMD_RESULT"] == "ok", e
        assert e["_SYSTEMD_UNIT"] == "pmemd.service"


@pytest.mark.parametrize("boot", [2, 3])
def test_regions_formatted_and_mounted_with_dax(cycle: Cycle, boot: int) -> None:
    assert cycle.status(boot, "synced") == "in sync: 2/2 namespaces mounted with DAX"
    tokens = cycle.cmdline(boot)
    assert tokens[0].startswith("BOOT_IMAGE=")  # booted by GRUB
    assert pmem_tokens(tokens) == [BULK, FAST, "nokaslr"]  # exactly pmemd's, once each
    iomem = cycle.ok(boot, "after-iomem")
    assert "100000000-11fffffff : Persistent Memory (legacy)" in iomem
    assert "140000000-17fffffff : Persistent Memory (legacy)" in iomem
    mi = cycle.ok(boot, "after-mountinfo")
    for point, fstype in (("/pmem/fast", "ext4"), ("/pmem/bulk", "xfs")):
        (line,) = mount_lines(mi, point)
        fields = line.split(" - ")[1].split()
        assert fields[0] == fstype and fields[1].startswith("/dev/pmem"), line
        assert "dax=always" in super_options(line), line
    status = json.loads(cycle.ok(boot, "after-status-json"))
    by_name = {n["name"]: n for n in status["namespaces"]}
    assert {k: (v["running"], v["mount"], v["dax"]) for k, v in by_name.items()} == {
        "bulk": ("mounted", "/pmem/bulk", True), "fast": ("mounted", "/pmem/fast", True)}
    sysstat = cycle.ok(boot, "after-systemctl-status")
    assert "Active: active (running)" in sysstat
    assert 'Status: "in sync: 2/2 namespaces mounted with DAX"' in sysstat
    entries = cycle.journal(boot, "after-journal")
    # the daemon waited for the devices before its first pass: no region was reported failed
    assert not [e for e in entries if e.get("PMEMD_RESULT") == "failed" or e.get("PRIORITY") == "3"], entries
    for ns in ("fast", "bulk"):
        for act in ("mkfs", "mount", "verify-dax"):
            (e,) = actions(entries, act, ns)
            assert e["PMEMD_RESULT"] == "ok" and e["MESSAGE_ID"] == MESSAGE_IDS[act], e
            assert e["PMEMD_DEVICE"] == by_name[ns]["device"], e
        (v,) = actions(entries, "verify-region", ns)
        assert v["PMEMD_RESULT"] == "ok" and "applied" in v["MESSAGE"], v


def test_boot2_service_device_access_is_not_restricted(cycle: Cycle) -> None:
    # ProtectClock= (DeviceAllow=char-rtc) would close the device policy on systemd 252
    props = dict(ln.split("=", 1) for ln in cycle.ok(2, "unit-devices").splitlines())
    # (systemctl show leaves out an empty DeviceAllow=)
    assert props["DevicePolicy"] == "auto" and props.get("DeviceAllow", "") == "", props


def test_boot2_files_carry_statx_attr_dax(cycle: Cycle) -> None:
    for ns in ("fast", "bulk"):
        m = re.search(r"stat\.attributes = (0x[0-9a-f]+)", cycle.ok(2, f"{ns}-dax"))
        assert m and int(m.group(1), 16) & STATX_ATTR_DAX, cycle.text(2, f"{ns}-dax")


@pytest.mark.parametrize("boot", [2, 3, 4, 5])
def test_each_boot_times_the_first_pass(cycle: Cycle, boot: int) -> None:
    entries = cycle.journal(boot, "after-journal")
    (line,) = [e for e in entries if "PMEMD_SECONDS_TOTAL" in e]  # one service start per boot
    assert re.fullmatch(r"first pass \d+\.\d s: start \d+\.\d, config .*observe .*actions .*"
                        r"\(children \d+\.\d\)", line["MESSAGE"]), line
    assert float(line["PMEMD_SECONDS_TOTAL"]) >= float(line["PMEMD_SECONDS_CHILDREN"]) > 0
    commands = {e["PMEMD_COMMAND"] for e in entries if e.get("PRIORITY") == "7" and "PMEMD_COMMAND" in e}
    assert {"blkid", "wipefs", "mount"} <= commands, commands  # each command of the pass, at debug level
    assert {"mkfs.ext4", "mkfs.xfs"} <= commands or boot == 4, commands  # boot 4: only fast is left
    (mkfs,) = actions(entries, "mkfs", "fast")
    assert float(mkfs["PMEMD_SECONDS"]) > 0  # each action with its duration


def test_boot3_devices_came_back_blank_and_were_formatted_again(cycle: Cycle) -> None:
    for ns in ("fast", "bulk"):
        assert cycle.rc(3, f"{ns}-marker") != 0  # the file written in boot 2 is gone with the RAM
        before, after = blkid(cycle.ok(2, f"{ns}-blkid")), blkid(cycle.ok(3, f"{ns}-blkid"))
        assert before["LABEL"] == after["LABEL"] == ns
        assert before["UUID"] != after["UUID"]
    state = json.loads(cycle.ok(3, "after-state"))
    assert state["kernel_args"] == [BULK, FAST, "nokaslr"] and state["pending_reboot"] is None
    dropin = cycle.ok(3, "after-dropin")
    assert dropin.count("memmap=") == 2 and dropin.count("nokaslr") == 1
    for line in cycle.ok(3, "after-grubcfg").splitlines():
        toks = pmem_tokens(line.split())
        assert len(toks) == len(set(toks)) == 3, line


def test_boot3_removing_a_namespace_takes_its_token_out_of_grub(cycle: Cycle) -> None:
    assert cycle.status(3, "pending").startswith("reboot pending since ")
    assert f"{BULK} removed" in cycle.status(3, "pending") or BULK in cycle.status(3, "pending")
    assert BULK not in cycle.ok(3, "removed-dropin") and FAST in cycle.ok(3, "removed-dropin")
    assert pmem_tokens(default_entry(cycle.ok(3, "removed-grubcfg"))) == [FAST, "nokaslr"]
    assert cycle.ok(3, "removed-reboot-required")
    assert json.loads(cycle.ok(3, "removed-state"))["kernel_args"] == [FAST, "nokaslr"]


def test_boot4_removed_namespace_is_gone_and_the_other_untouched(cycle: Cycle) -> None:
    assert cycle.status(4, "synced") == "in sync: 1/1 namespaces mounted with DAX"
    assert pmem_tokens(cycle.cmdline(4)) == [FAST, "nokaslr"]
    iomem = cycle.ok(4, "after-iomem")
    assert "100000000-11fffffff" not in iomem and "140000000-17fffffff : Persistent Memory (legacy)" in iomem
    mi = cycle.ok(4, "after-mountinfo")
    assert not mount_lines(mi, "/pmem/bulk")
    (line,) = mount_lines(mi, "/pmem/fast")
    assert "dax=always" in super_options(line)
    state = json.loads(cycle.ok(4, "after-state"))
    assert set(state["namespaces"]) == {"fast"} and state["kernel_args"] == [FAST, "nokaslr"]


def test_boot4_foreign_filesystem_is_not_formatted(cycle: Cycle) -> None:
    before, after = blkid(cycle.ok(4, "foreign-before")), blkid(cycle.ok(4, "foreign-after"))
    assert before["LABEL"] == "foreign" and after == before
    assert cycle.ok(4, "foreign-data").strip() == "not pmemd's"
    assert not mount_lines(cycle.text(4, "foreign-mountinfo"), "/pmem/fast")
    status = cycle.status(4, "foreign")
    assert "holds data pmemd did not write" in status and "on_foreign_data: wipe" in status, status
    errors = [e for e in cycle.journal(4, "foreign-journal")
              if "did not write" in e["MESSAGE"] and e["PRIORITY"] == "3"]
    assert errors and errors[0].get("PMEMD_NAMESPACE") == "fast", errors


def test_boot5_reboot_now_rebooted_the_guest_and_both_are_back(cycle: Cycle) -> None:
    prev = cycle.journal(5, "previous-journal")
    (e,) = [x for x in actions(prev, "reboot") if "rebooting now" in x["MESSAGE"]]
    assert e["PMEMD_RESULT"] == "ok"
    # nothing ran after the reboot was started (fast's wiped device waited for the next boot)
    after = prev[prev.index(e) + 1:]
    assert not [x for x in after if x.get("PMEMD_ACTION") not in ("pass", None)], after
    assert pmem_tokens(cycle.cmdline(5)) == [BULK, DEV, FAST, "nokaslr"]
    assert cycle.status(5, "synced") == "in sync: 2/2 namespaces mounted with DAX"
    assert json.loads(cycle.ok(5, "after-state"))["pending_reboot"] is None


def test_boot5_devdax_namespace_made_by_the_real_ndctl(cycle: Cycle) -> None:
    (e,) = actions(cycle.journal(5, "after-journal"), "set-mode", "dev")
    assert e["PMEMD_RESULT"] == "ok" and e["MESSAGE_ID"] == MESSAGE_IDS["set-mode"], e
    assert e["MESSAGE"].endswith(f"{e['PMEMD_DEVICE']} is now devdax"), e
    assert "120000000-13fffffff : Persistent Memory (legacy)" in cycle.ok(5, "after-iomem")
    namespaces = [ns for r in json.loads(cycle.ok(5, "after-ndctl"))["regions"] for ns in r["namespaces"]]
    (dax,) = [ns for ns in namespaces if ns.get("mode") == "devdax"]
    assert dax["chardev"] in cycle.ok(5, "dax-devices").split()
    status = {n["name"]: n for n in json.loads(cycle.ok(5, "after-status-json"))["namespaces"]}
    assert status["dev"]["device"] == f"/dev/{dax['chardev']}", status["dev"]


def test_boot5_the_cli_runs_on_this_release(cycle: Cycle) -> None:
    for i in (1, 2, 3):
        assert cycle.rc(5, f"plan-{i}") == 0, cycle.text(5, f"plan-{i}")  # in sync: exit 0
        assert "in sync" in cycle.text(5, f"plan-{i}")
    assert int(cycle.ok(5, "deb-size")) > 0


def test_nvdimm_is_left_alone(cycle: Cycle) -> None:
    nv = cycle.text(1, "nvdev").strip()
    assert nv.startswith("/dev/pmem")
    first, last = blkid(cycle.ok(1, "nv-blkid")), blkid(cycle.ok(5, "nv-blkid"))
    assert first["LABEL"] == "nvdata" and first["UUID"] == last["UUID"]
    assert cycle.ok(5, "nv-data").strip() == "written by the test in boot 1"
    nvdev5 = cycle.text(5, "nvdev").strip()
    for boot in (2, 3, 4, 5):
        for e in cycle.journal(boot, "after-journal"):
            assert e.get("PMEMD_DEVICE") != nvdev5, e
        assert not [ln for ln in cycle.ok(boot, "after-mountinfo").splitlines() if f" {nvdev5} " in ln]


def test_print_guest_evidence(cycle: Cycle, capsys: pytest.CaptureFixture[str]) -> None:
    """The CI log carries what the guest showed (the issue asks for it on every run)."""
    out = [f"== pmemd e2e cycle ({cycle.res.mode}, {cycle.text(1, 'cmdline').split()[0]}): accel {cycle.res.accel}, "
           f"{len(cycle.res.boots)} boots, {cycle.res.seconds:.0f} s in qemu"]
    out += [f"   boot {b.number}: {b.seconds:.0f} s, ended by {b.end}" for b in cycle.res.boots]
    for boot in (1, 2, 3, 4, 5):
        out.append(f"---- boot {boot}")
        out.append("# steps: " + ", ".join(f"{name} {secs:.1f} s" for name, secs in step_seconds(cycle.res, boot)))
        for name in ("after-cmdline", "after-iomem", "after-ndctl", "after-mountinfo", "after-systemctl-status"):
            p = cycle.res.path(f"b{boot}-{name}")
            if p.exists():
                out.append(f"# {name.removeprefix('after-')}:\n{p.read_text(errors='replace').rstrip()}")
        p = cycle.res.path(f"b{boot}-after-journal")
        if p.exists():
            out.append("# journalctl -u pmemd -o json (pmemd's fields):")
            for e in cycle.journal(boot, "after-journal"):
                fields = {k: v for k, v in e.items() if k.startswith("PMEMD_") or k in ("MESSAGE_ID", "PRIORITY")}
                out.append(f"  {json.dumps(fields, sort_keys=True)} {e['MESSAGE']}")
    sec = cycle.res.path("b5-security")
    if sec.exists():
        out += [ln for ln in sec.read_text().splitlines() if "Overall exposure" in ln]
    if cycle.res.path("b5-plan-1.secs").exists():
        plan, floor = ([cycle.text(5, f"{what}-{i}.secs").strip() for i in (1, 2, 3)] for what in ("plan", "floor"))
        out.append(f"# pmemd plan: {', '.join(plan)} s; python3 -c 'import pydantic, yaml': {', '.join(floor)} s; "
                   f".deb {cycle.text(5, 'deb-size').strip()} bytes")
    with capsys.disabled():
        print("\n" + "\n".join(out))
    assert len(out) > 10
