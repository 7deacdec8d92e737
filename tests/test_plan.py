"""Tier 1 (and a little tier 2): the planner, ``(config, facts, owned) -> Plan``, as tables.

Facts come from ``helpers.make_facts`` (pure) or, where the observer's own behaviour matters
(which devices it probes), from a host tree read with a deny-by-default RecordingRunner.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, TypeVar

import pytest
from helpers import BIG_64G, GIB, QEMU_PC_16G, HostTree, RecordingRunner, config, make_facts
from hypothesis import given, settings
from hypothesis import strategies as st

from pmemd.actions import (
    Action,
    ClearReboot,
    Forget,
    Kind,
    Label,
    Mkdir,
    Mkfs,
    MkfsReason,
    Mount,
    Reboot,
    SetKernelArgs,
    SetMode,
    Unmount,
    to_json,
)
from pmemd.diagnose import diagnose
from pmemd.facts import HostFacts, IomemEntry, MountEntry, NdNamespace, NdRegion, PathFact, Signature
from pmemd.fsroot import Root
from pmemd.model import Config
from pmemd.observe import observe
from pmemd.parse import parse_cmdline
from pmemd.plan import Plan, plan
from pmemd.plan_fs import dax_option, mkfs_argv, xfs_needs_reflink0
from pmemd.state import Owned, OwnedFs, OwnedNamespace, PendingReboot
from pmemd.validate import Placement

TOK = "memmap=1G!5G"
FAST = {"size": "1G", "offset": "5G", "filesystem": {"type": "ext4", "label": "fast"},
        "mount": {"path": "/pmem/fast", "options": ["noatime"]}}


A = TypeVar("A", bound=Action)


def nth(p: Plan, i: int, cls: type[A]) -> A:
    """The plan's i-th action, which must be a ``cls``."""
    act = p.actions[i]
    assert isinstance(act, cls), act
    return act


def kinds(p: Plan) -> list[str]:
    return [a.kind.value for a in p.actions]


def errors(p: Plan) -> list[str]:
    return [i.message for i in p.errors]


def region(idx: int, start: int | None, size: int, *, provider: str = "e820", mode: str = "memory",
           blockdev: str | None = "auto", chardev: str | None = None, holder: str | None = "") -> NdRegion:
    dev = f"pmem{idx}" if blockdev == "auto" else blockdev
    return NdRegion(f"region{idx}", "ndbus0" if provider == "e820" else "ndbus1", provider, start, size, 0,
                    (NdNamespace(f"namespace{idx}.0", mode, size, dev, chardev, holder),))


def legacy(start: int, size: int, idx: int = 0) -> IomemEntry:
    return IomemEntry(start, start + size, "Persistent Memory (legacy)", (f"namespace{idx}.0",))


def booted(*, tokens: tuple[str, ...] = (TOK,), sig: Signature | None = None, **kw: Any) -> HostFacts:
    """A host that booted with ``tokens`` and made pmem0 for 1G!5G."""
    kw.setdefault("regions", (region(0, 5 * GIB, GIB),))
    kw.setdefault("iomem", (legacy(5 * GIB, GIB),))
    kw.setdefault("signatures", (sig or Signature("/dev/pmem0", True),))
    kw.setdefault("owned_tokens", tokens)
    facts: HostFacts = make_facts(cmdline="root=/dev/vda1 ro " + " ".join(tokens), **kw)
    return facts


OWNED = Owned(kernel_args=(TOK,), backend="grub", namespaces={"fast": OwnedNamespace(5 * GIB, GIB)})

# --- a fresh host: boot arguments first ------------------------------------------------------


def test_fresh_host_plans_boot_args_then_the_reboot_gate() -> None:
    p = plan(config({"fast": FAST}), make_facts(), Owned())
    assert kinds(p) == ["set-kernel-args", "reboot"]
    assert [a.label for a in p.actions] == [Label.NEEDS_REBOOT, Label.NEEDS_REBOOT]
    assert nth(p, 0, SetKernelArgs).add == (TOK,) and nth(p, 0, SetKernelArgs).remove == ()
    assert p.actions[0].summary == "boot config (grub): add memmap=1G!5G"
    assert p.actions[1].summary == "flag a pending reboot (/run/reboot-required): memmap=1G!5G added"
    assert p.reboot_needed and p.desired_args == (TOK,)
    (view,) = p.namespaces
    assert (view.token, view.running, view.configured) == (TOK, "declared", False)
    assert p.after_reboot == (
        "fast: verify the pmem device at [0x140000000-0x17fffffff] (cmdline, /proc/iomem, e820 nd region, "
        "block device)",
        "fast: mkfs.ext4 -q -b 4096 -L fast /dev/pmemN if it is blank (refuse foreign data)",
        "fast: mount on /pmem/fast (dax=always,noatime) and verify DAX",
    )


def test_plan_is_json_serialisable() -> None:
    p = plan(config({"fast": FAST}), make_facts(), Owned())
    assert json.loads(json.dumps([to_json(a) for a in p.actions]))[0]["kind"] == "set-kernel-args"


@pytest.mark.parametrize(("policy", "summary"), [
    ("never", "record that a reboot is needed (reboot: never)"),
    ("flag", "flag a pending reboot (/run/reboot-required)"),
    ("schedule", "schedule a reboot at Sun 03:00"),
    ("now", "reboot now"),
])
def test_reboot_policies(policy: str, summary: str) -> None:
    p = plan(config({"fast": FAST}, reboot=policy), make_facts(), Owned())
    reboot = nth(p, 1, Reboot)
    assert reboot.summary.startswith(summary) and reboot.policy.value == policy and reboot.window == "Sun 03:00"


def test_kaslr_auto_on_a_small_host_adds_nokaslr() -> None:
    p = plan(config({"fast": FAST}, kaslr="auto"), make_facts(firmware=QEMU_PC_16G), Owned())
    assert nth(p, 0, SetKernelArgs).add == (TOK, "nokaslr")
    assert any(n.startswith("nokaslr: settings.kaslr: auto and this host has") for n in p.notes)


def test_a_users_own_nokaslr_is_neither_written_nor_taken_over() -> None:
    facts = make_facts(firmware=QEMU_PC_16G, cmdline="root=/dev/vda1 ro nokaslr")
    p = plan(config({"fast": FAST}, kaslr="auto"), facts, Owned())
    assert nth(p, 0, SetKernelArgs).add == (TOK,)  # what pmemd will record as its own


def test_an_admins_identical_memmap_is_used_as_it_is() -> None:
    facts = make_facts(cmdline=f"root=/dev/vda1 ro {TOK}", regions=(region(0, 5 * GIB, GIB),),
                       iomem=(legacy(5 * GIB, GIB),), signatures=(Signature("/dev/pmem0", True),))
    p = plan(config({"fast": FAST}), facts, Owned())
    assert "set-kernel-args" not in kinds(p)  # nothing to add, and the token is not pmemd's to record
    assert any("already in the boot config, set outside pmemd" in n for n in p.notes)
    assert kinds(p) == ["mkfs", "mkdir", "mount", "verify-dax"]


# --- refusals before anything is written ----------------------------------------------------


def test_grubby_host_with_a_foreign_memmap_plans_like_any_other() -> None:
    """The grubby layout carries the foreign token along in its own call (not the planner's job)."""
    facts = make_facts(layout="grubby", cmdline="root=/dev/vda1 ro memmap=1G!8G")
    p = plan(config({"fast": FAST}), facts, Owned())
    assert kinds(p) == ["set-kernel-args", "reboot"]
    assert nth(p, 0, SetKernelArgs).add == (TOK,)
    assert any("memmap=1G!8G" in i.message and i.severity == "warning" for i in p.issues)


def test_grub_host_with_a_foreign_memmap_keeps_it() -> None:
    facts = make_facts(layout="grub", cmdline="root=/dev/vda1 ro memmap=1G!8G")
    p = plan(config({"fast": FAST}), facts, Owned())
    assert kinds(p) == ["set-kernel-args", "reboot"]
    assert nth(p, 0, SetKernelArgs).add == (TOK,) and nth(p, 0, SetKernelArgs).remove == ()
    assert any("memmap=1G!8G" in i.message and i.severity == "warning" for i in p.issues)


def test_next_boot_memory_limit_is_an_error_and_stops_everything() -> None:
    facts = make_facts(next_args=["root=/dev/vda1", "memmap=4GB!12G"])
    p = plan(config({"fast": FAST}), facts, Owned())
    assert p.actions == ()
    assert any("the next-boot arguments contain memmap=4GB!12G, which would limit usable RAM" in e
               for e in errors(p))


def test_running_memory_limit_is_a_warning() -> None:
    p = plan(config({"fast": FAST}), make_facts(cmdline="root=/dev/vda1 mem=60G", next_args=["root=/dev/vda1"]),
             Owned())
    assert kinds(p) == ["set-kernel-args", "reboot"]
    assert any(i.severity == "warning" and "the running command line has mem=60G" in i.message for i in p.issues)


def test_unknown_boot_loader() -> None:
    p = plan(config({"fast": FAST}), make_facts(layout="unknown"), Owned())
    assert p.actions == () and "no supported boot loader found" in errors(p)[0]
    p = plan(config({"fast": FAST}), make_facts(next_args=None), Owned())
    assert p.actions == () and "cannot read the next-boot kernel arguments" in errors(p)[0]


def test_validation_errors_plan_nothing() -> None:
    p = plan(config({"fast": {**FAST, "offset": "3G"}}), make_facts(), Owned())
    assert p.actions == () and p.namespaces == () and "below 4 GiB" in errors(p)[0]


# --- after the reboot: verify the region before touching it ---------------------------------


def test_blank_device_gets_mkfs_ext4_with_4k_blocks_then_mkdir_mount_verify() -> None:
    p = plan(config({"fast": FAST}), booted(), OWNED)
    assert kinds(p) == ["mkfs", "mkdir", "mount", "verify-dax"]
    mkfs = nth(p, 0, Mkfs)
    assert mkfs.label is Label.DESTRUCTIVE and mkfs.device == "/dev/pmem0" and mkfs.reason is MkfsReason.BLANK
    assert mkfs.argv == ("mkfs.ext4", "-q", "-b", "4096", "-L", "fast")
    mnt = nth(p, 2, Mount)
    assert mnt.options == ("dax=always", "noatime") and mnt.path == "/pmem/fast"
    assert [a.label for a in p.actions[1:]] == [Label.LIVE] * 3
    assert p.namespaces[0].running == "present" and p.namespaces[0].device == "/dev/pmem0"


@pytest.mark.parametrize(("release", "reflink0", "dax"), [
    ("6.12.117+deb13-amd64", False, "dax=always"),
    ("6.0.0", False, "dax=always"),
    ("5.15.0-91-generic", True, "dax=always"),
    ("5.8.0", True, "dax=always"),
    ("5.4.0-150-generic", True, "dax"),
    ("4.18.0-513.5.1.el8_9.x86_64", True, "dax"),
    (None, True, "dax=always"),
])
def test_xfs_reflink_and_dax_option_by_kernel(release: str | None, reflink0: bool, dax: str) -> None:
    ns = {**FAST, "filesystem": {"type": "xfs", "label": "fast"}}
    p = plan(config({"fast": ns}), booted(kernel_release=release), OWNED)
    mkfs = nth(p, 0, Mkfs)
    assert mkfs.argv[:4] == ("mkfs.xfs", "-q", "-b", "size=4096")
    assert (mkfs.argv[4:6] == ("-m", "reflink=0")) is reflink0
    assert nth(p, 2, Mount).options[0] == dax
    assert xfs_needs_reflink0(release) is reflink0 and dax_option(release) == dax


def test_extra_mkfs_options_go_before_the_device() -> None:
    from pmemd.model import Namespace

    ns = Namespace.model_validate({"size": "1G", "filesystem": {"type": "ext4", "options": ["-E", "nodiscard"]}})
    assert mkfs_argv(ns, "6.1.0") == ("mkfs.ext4", "-q", "-b", "4096", "-E", "nodiscard")


def test_foreign_signature_is_refused() -> None:
    sig = Signature("/dev/pmem0", True, (("UUID", "1234"), ("TYPE", "xfs")), ("xfs",))
    p = plan(config({"fast": FAST}), booted(sig=sig), OWNED)
    assert p.actions == ()
    (err,) = errors(p)
    assert "/dev/pmem0 holds data pmemd did not write (xfs (UUID=1234)); pmemd will not format it" in err
    assert "on_foreign_data: wipe" in err


def test_foreign_signature_with_on_foreign_data_wipe() -> None:
    sig = Signature("/dev/pmem0", True, (("PTTYPE", "gpt"),), ("gpt", "PMBR"))
    p = plan(config({"fast": {**FAST, "on_foreign_data": "wipe"}}), booted(sig=sig), OWNED)
    assert kinds(p) == ["mkfs", "mkdir", "mount", "verify-dax"]
    assert nth(p, 0, Mkfs).reason == "wipe" and "WIPE /dev/pmem0 (gpt, PMBR)" in p.actions[0].summary


def test_a_signature_only_wipefs_sees_is_not_blank() -> None:
    sig = Signature("/dev/pmem0", True, (), ("ext4",))
    p = plan(config({"fast": FAST}), booted(sig=sig), OWNED)
    assert p.actions == () and "holds data pmemd did not write (ext4)" in errors(p)[0]


def test_unprobed_device_is_not_formatted() -> None:
    sig = Signature("/dev/pmem0", False, error="blkid failed: `blkid` exited 4")
    p = plan(config({"fast": FAST}), booted(sig=sig), OWNED)
    assert p.actions == () and "cannot tell what /dev/pmem0 holds: blkid failed" in errors(p)[0]


def test_pmemd_own_filesystem_is_reused_not_reformatted() -> None:
    sig = Signature("/dev/pmem0", True, (("UUID", "u-1"), ("TYPE", "ext4")), ("ext4",))
    owned = dataclasses.replace(OWNED, namespaces={"fast": OwnedNamespace(5 * GIB, GIB, OwnedFs("u-1", "ext4"))})
    p = plan(config({"fast": FAST}), booted(sig=sig), owned)
    assert kinds(p) == ["mkdir", "mount", "verify-dax"]
    assert p.namespaces[0].running == "formatted"


def test_region_shrunk_by_the_kernel_is_failed_with_a_diagnosis_and_no_mkfs() -> None:
    """The kernel cut its own image out of the range: iomem and the nd region are split."""
    split = (IomemEntry(5 * GIB, 5 * GIB + 256 * 2**20, "Persistent Memory (legacy)", ("namespace0.0",)),
             IomemEntry(5 * GIB + 512 * 2**20, 6 * GIB, "Persistent Memory (legacy)", ("namespace1.0",)))
    regions = (region(0, 5 * GIB, 256 * 2**20), region(1, 5 * GIB + 512 * 2**20, 512 * 2**20))
    facts = booted(iomem=split, regions=regions, problems=(".text .data .bss are not marked as E820_TYPE_RAM!",),
                   signatures=(Signature("/dev/pmem0", True), Signature("/dev/pmem1", True)))
    p = plan(config({"fast": FAST}), facts, OWNED)
    assert "mkfs" not in kinds(p) and p.actions == ()
    (view,) = p.namespaces
    assert view.running == "failed"
    assert view.diagnosis[0].startswith("the kernel changed the region: /proc/iomem has Persistent Memory (legacy) "
                                        "[0x140000000-0x14fffffff], Persistent Memory (legacy) "
                                        "[0x160000000-0x17fffffff] instead of [0x140000000-0x17fffffff]")
    assert "no e820 nd region with this exact address and size" in view.diagnosis
    assert ".text .data .bss are not marked as E820_TYPE_RAM!" in view.diagnosis
    assert errors(p)[0].startswith("region memmap=1G!5G did not come up as declared: ")


def test_region_whose_namespace_has_no_block_device_is_failed() -> None:
    """docs/facts.md, "QEMU guests": `misaligned, unable to map` / `probe of namespace2.0 failed with error -95`."""
    facts = booted(regions=(region(0, 5 * GIB, GIB, blockdev=None),), signatures=(),
                   problems=("nd_pmem: probe of namespace0.0 failed with error -95",))
    p = plan(config({"fast": FAST}), facts, OWNED)
    assert p.actions == ()
    assert p.namespaces[0].running == "failed" and p.namespaces[0].device_pending
    assert p.namespaces[0].diagnosis == (
        "region0 exists but its namespace has no device (not probed yet, or the probe failed)",
        "nd_pmem: probe of namespace0.0 failed with error -95")


@pytest.mark.parametrize(("regions", "diagnosis"), [
    ((), "no e820 nvdimm region: is the nd_e820 module loaded? (modprobe nd_e820) "
         "(not probed yet, or the probe failed)"),
    ((region(0, None, GIB),), "region addresses are unreadable (run as root)"),
    ((region(0, 5 * GIB, GIB, provider="ACPI.NFIT"),), "no e820 nvdimm region: is the nd_e820 module loaded? "
                                                       "(modprobe nd_e820) (not probed yet, or the probe failed)"),
])
def test_region_missing_or_unreadable(regions: tuple[NdRegion, ...], diagnosis: str) -> None:
    p = plan(config({"fast": FAST}), booted(regions=regions, signatures=()), OWNED)
    assert p.actions == () and diagnosis in p.namespaces[0].diagnosis


@pytest.mark.parametrize(("message", "fails"), [
    ("EXT4-fs (loop0): DAX unsupported by block device.", False),  # someone else's disk
    ("EXT4-fs (pmem0): DAX unsupported by block device.", True),
    ("XFS (pmem0): DAX unsupported by block device. Turning off DAX.", True),
    ("nd_pmem namespace3.0: [mem 0x800000000-0x83fffffff flags 0x200] misaligned, unable to map", False),
    ("nd_pmem namespace0.0: probe with driver nd_pmem failed with error -95", True),
    ("nd_pmem: probe of namespace1.0 failed with error -6", False),
    ("WARNING: CPU: 0 PID: 1 at mm/memremap.c:202 devm_memremap_pages attempted on mixed region "
     "[mem 0x140000000-0x147ffffff flags 0x200]", True),
    (".text .data .bss are not marked as E820_TYPE_RAM!", True),  # names no region: could be any
])
def test_kernel_log_problems_are_attributed_to_their_region(message: str, fails: bool) -> None:
    p = plan(config({"fast": FAST}), booted(problems=(message,)), OWNED)
    assert (p.namespaces[0].running == "failed") is fails
    assert (message in p.namespaces[0].diagnosis) is fails


def test_missing_iomem_range_is_failed() -> None:
    p = plan(config({"fast": FAST}), booted(iomem=()), OWNED)
    assert p.namespaces[0].running == "failed"
    assert "memmap=1G!5G is on the command line but /proc/iomem has no Persistent Memory (legacy) range there" in \
        p.namespaces[0].diagnosis


def test_a_namespace_error_stops_only_its_own_chain() -> None:
    cfg = config({"fast": FAST, "bulk": {"size": "1G", "offset": "7G", "filesystem": {"type": "ext4"}}})
    tokens = (TOK, "memmap=1G!7G")
    facts = booted(tokens=tokens, regions=(region(0, 5 * GIB, GIB), region(1, 7 * GIB, GIB)),
                   iomem=(legacy(5 * GIB, GIB), legacy(7 * GIB, GIB, 1)),
                   signatures=(Signature("/dev/pmem0", True, (("TYPE", "xfs"),), ("xfs",)),
                               Signature("/dev/pmem1", True)))
    owned = Owned(kernel_args=tokens, namespaces={"fast": OwnedNamespace(5 * GIB, GIB),
                                                  "bulk": OwnedNamespace(7 * GIB, GIB)})
    p = plan(cfg, facts, owned)
    assert [(a.kind.value, a.namespace) for a in p.actions] == [("mkfs", "bulk")]
    assert [i.namespace for i in p.errors] == ["fast"]


# --- real NVDIMMs are never touched (tree + recording runner) -------------------------------


def nvdimm_host(tmp_path: Path) -> HostTree:
    """A host booted with memmap=1G!5G (e820, pmem0) that also has a real NVDIMM (ACPI.NFIT) whose
    region sits at 1G!5G's size elsewhere, with a block device pmem1 (docs/facts.md: QEMU NVDIMM)."""
    t = booted_tree(tmp_path)
    t.nd_region(1, 0x480000000, GIB, provider="ACPI.NFIT", bus="ndbus1", mode="raw")
    return t


def booted_tree(tmp_path: Path) -> HostTree:
    """A Debian GRUB host where pmemd's drop-in put memmap=1G!5G, booted with it: pmem0."""
    t = HostTree(tmp_path / "host")
    t.firmware_map(QEMU_PC_16G).cmdline(f"root=/dev/vda1 ro {TOK}").debian_grub().pmemd_dropin((TOK,))
    t.nd_region(0, 5 * GIB, GIB)
    return t


def test_acpi_nfit_devices_are_never_probed_or_touched(tmp_path: Path, runner: RecordingRunner) -> None:
    t = nvdimm_host(tmp_path)
    pmem0 = str(t.p("/dev/pmem0"))
    runner.expect("blkid", "-p", "-o", "export", pmem0, returncode=2)  # nothing found
    runner.expect("wipefs", "--no-act", "--json", pmem0, stdout="")
    facts = observe(Root(t.path), runner)
    assert [r.provider for r in facts.regions] == ["e820", "ACPI.NFIT"]
    assert [s.device for s in facts.signatures] == ["/dev/pmem0"]  # pmem1 (NFIT) was not even probed
    p = plan(config({"fast": FAST}), facts, OWNED)
    assert kinds(p) == ["mkfs", "mkdir", "mount", "verify-dax"]
    assert {a.device for a in p.actions if a.device} == {"/dev/pmem0"}
    assert not any("pmem1" in json.dumps(dataclasses.asdict(a)) for a in p.actions)


def test_namespace_over_an_nfit_range_is_failed_not_formatted(tmp_path: Path, runner: RecordingRunner) -> None:
    t = nvdimm_host(tmp_path)
    pmem0 = str(t.p("/dev/pmem0"))
    runner.expect("blkid", "-p", "-o", "export", pmem0, returncode=2)
    runner.expect("wipefs", "--no-act", "--json", pmem0, stdout="")
    facts = observe(Root(t.path), runner)
    cfg = config({"nv": {"size": "1G", "offset": hex(0x480000000), "filesystem": {"type": "ext4"}}})
    facts = dataclasses.replace(facts, cmdline=parse_cmdline("root=/dev/vda1 memmap=1G!18G"))
    p = plan(cfg, facts, Owned(kernel_args=("memmap=1G!18G",)))
    assert not [a for a in p.actions if a.kind in (Kind.MKFS, Kind.MOUNT, Kind.SET_MODE)]


def test_foreign_signature_found_by_the_observer(tmp_path: Path, runner: RecordingRunner) -> None:
    """blkid and wipefs answered by the recording runner, as they would on a device with xfs."""
    t = booted_tree(tmp_path)
    pmem0 = str(t.p("/dev/pmem0"))
    runner.expect("blkid", "-p", "-o", "export", pmem0,
                  stdout=f"DEVNAME={pmem0}\nUUID=9b2c\nBLOCK_SIZE=4096\nTYPE=xfs\nUSAGE=filesystem\n")
    runner.expect("wipefs", "--no-act", "--json", pmem0, stdout=json.dumps(
        {"signatures": [{"device": "pmem0", "offset": "0x0", "type": "xfs", "uuid": "9b2c", "label": None}]}))
    facts = observe(Root(t.path), runner)
    p = plan(config({"fast": FAST}), facts, OWNED)
    assert p.actions == () and "holds data pmemd did not write (xfs (UUID=9b2c))" in errors(p)[0]
    p = plan(config({"fast": {**FAST, "on_foreign_data": "wipe"}}), facts, OWNED)
    assert kinds(p)[0] == "mkfs" and nth(p, 0, Mkfs).reason == "wipe"


def test_a_failing_detector_means_not_blank(tmp_path: Path, runner: RecordingRunner) -> None:
    t = booted_tree(tmp_path)
    pmem0 = str(t.p("/dev/pmem0"))
    runner.expect("blkid", "-p", "-o", "export", pmem0, returncode=2)
    runner.expect("wipefs", "--no-act", "--json", pmem0, returncode=1, stderr="wipefs: error: probing failed")
    facts = observe(Root(t.path), runner)
    assert facts.signatures[0].probed is False
    p = plan(config({"fast": FAST}), facts, OWNED)
    assert p.actions == () and "wipefs failed" in errors(p)[0]


# --- mounts ----------------------------------------------------------------------------------


def mount(device: str, path: str, fstype: str = "ext4", super_opts: str = "rw,dax=always") -> MountEntry:
    return MountEntry(100, "259:0", "/", path, ("rw", "relatime"), fstype, device, tuple(super_opts.split(",")))


def test_mounted_with_dax_is_converged() -> None:
    sig = Signature("/dev/pmem0", True, (("UUID", "u-1"), ("TYPE", "ext4")), ("ext4",))
    owned = dataclasses.replace(OWNED, namespaces={"fast": OwnedNamespace(5 * GIB, GIB, OwnedFs("u-1", "ext4"),
                                                                          "/pmem/fast")})
    p = plan(config({"fast": FAST}), booted(sig=sig, mounts=(mount("/dev/pmem0", "/pmem/fast"),)), owned)
    assert p.in_sync and p.actions == () and p.issues == ()
    assert (p.namespaces[0].running, p.namespaces[0].dax) == ("mounted", True)


@pytest.mark.parametrize(("m", "fragment"), [
    (mount("/dev/pmem0", "/mnt"), "/dev/pmem0 is mounted at /mnt, not /pmem/fast"),
    (mount("/dev/pmem0", "/pmem/fast", "xfs", "rw,attr2,dax=never,inode64"), "mounted at /pmem/fast without DAX"),
    (mount("/dev/pmem0", "/pmem/fast", "xfs"), "/dev/pmem0 holds xfs, not ext4"),
])
def test_mount_problems(m: MountEntry, fragment: str) -> None:
    p = plan(config({"fast": FAST}), booted(mounts=(m,)), OWNED)
    assert p.actions == () and any(fragment in e for e in errors(p)), errors(p)


def test_a_non_dax_mount_pmemd_made_is_unmounted_not_just_reported() -> None:
    """pmemd records the mount path before mounting; killed between the mount and verify-dax,
    it finds its own mount without DAX on the next pass and takes it down (then mounts again)."""
    m = mount("/dev/pmem0", "/pmem/fast", "xfs", "rw,attr2,dax=never,inode64")
    owned = dataclasses.replace(OWNED, namespaces={"fast": OwnedNamespace(5 * GIB, GIB, mount_path="/pmem/fast")})
    p = plan(config({"fast": FAST}), booted(mounts=(m,)), owned)
    assert kinds(p) == ["unmount"] and errors(p) == []
    assert nth(p, 0, Unmount).path == "/pmem/fast" and "no DAX" in p.actions[0].summary


def test_pmemd_own_unfinished_mkfs_is_made_again_never_mounted() -> None:
    """The state says pmemd started mkfs with UUID u-1 but never saw it finish (killed): the
    device may hold half a filesystem, so it is made again; any other UUID there is foreign."""
    sig = Signature("/dev/pmem0", True, (("UUID", "u-1"), ("TYPE", "ext4")), ("ext4",))
    unfinished = OwnedNamespace(5 * GIB, GIB, OwnedFs("u-1", "ext4", complete=False))
    p = plan(config({"fast": FAST}), booted(sig=sig), dataclasses.replace(OWNED, namespaces={"fast": unfinished}))
    assert kinds(p) == ["mkfs", "mkdir", "mount", "verify-dax"]
    assert nth(p, 0, Mkfs).reason == "redo" and "did not finish" in p.actions[0].summary
    other = Signature("/dev/pmem0", True, (("UUID", "u-2"), ("TYPE", "ext4")), ("ext4",))
    p = plan(config({"fast": FAST}), booted(sig=other), dataclasses.replace(OWNED, namespaces={"fast": unfinished}))
    assert p.actions == () and "did not write" in errors(p)[0]


def test_pmemd_own_filesystem_of_another_type_is_not_called_foreign() -> None:
    """The config switched fast from xfs to ext4 while pmemd's xfs is still on the device."""
    sig = Signature("/dev/pmem0", True, (("UUID", "u-1"), ("TYPE", "xfs")), ("xfs",))
    owned = dataclasses.replace(OWNED, namespaces={"fast": OwnedNamespace(5 * GIB, GIB, OwnedFs("u-1", "xfs"))})
    p = plan(config({"fast": FAST}), booted(sig=sig), owned)
    assert p.actions == ()
    (err,) = errors(p)
    assert "holds the xfs filesystem pmemd made, but the config now asks for ext4" in err
    assert "did not write" not in err and "on_foreign_data: wipe" in err


def test_mount_point_taken_by_something_else() -> None:
    p = plan(config({"fast": FAST}), booted(mounts=(mount("/dev/sdb1", "/pmem/fast"),)), OWNED)
    assert p.actions == ()
    assert "/pmem/fast already has /dev/sdb1 (ext4) mounted" in errors(p)[0]


def test_mount_point_through_a_symlink_is_refused() -> None:
    facts = booted(paths=(PathFact("/pmem/fast", True, True, ("/pmem",)),))
    p = plan(config({"fast": FAST}), facts, OWNED)
    assert p.actions == () and "/pmem is a symlink" in errors(p)[0]


def test_mount_point_that_is_a_file_is_refused() -> None:
    facts = booted(paths=(PathFact("/pmem/fast", True, False),))
    p = plan(config({"fast": FAST}), facts, OWNED)
    assert p.actions == () and "/pmem/fast exists and is not a directory" in errors(p)[0]


def test_existing_mount_point_needs_no_mkdir() -> None:
    p = plan(config({"fast": FAST}), booted(paths=(PathFact("/pmem/fast", True, True),)), OWNED)
    assert kinds(p) == ["mkfs", "mount", "verify-dax"]


def test_nested_mount_points_are_refused() -> None:
    cfg = config({"fast": FAST, "inner": {"size": "1G", "offset": "7G", "filesystem": {"type": "ext4"},
                                          "mount": {"path": "/pmem/fast/inner"}}})
    p = plan(cfg, make_facts(), Owned())
    assert any("/pmem/fast/inner is inside namespace fast's mount /pmem/fast" in e for e in errors(p))


# --- modes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("want", "sysfs", "holder", "convert"), [
    ("fsdax", "memory", "", False),
    ("fsdax", "memory", "pfn0.0", False),
    ("fsdax", "dax", "dax0.0", True),
    ("devdax", "memory", "", True),
    ("devdax", "dax", "dax0.0", False),
    ("raw", "raw", "", False),
    ("raw", "memory", "", False),  # what `ndctl create-namespace --mode=raw` leaves on 6.1 (docs/facts.md)
    ("raw", "memory", "pfn0.0", True),
])
def test_namespace_mode(want: str, sysfs: str, holder: str, convert: bool) -> None:
    ns: dict[str, Any] = {"size": "1G", "offset": "5G", "mode": want}
    dev = "pmem0" if sysfs != "dax" else None
    facts = booted(regions=(region(0, 5 * GIB, GIB, mode=sysfs, blockdev=dev,
                                   chardev="dax0.0" if sysfs == "dax" else None, holder=holder),))
    p = plan(config({"fast": ns}), facts, OWNED)
    if convert:
        act = nth(p, 0, SetMode)
        assert len(p.actions) == 1 and act.label is Label.DESTRUCTIVE
        assert (act.nd_namespace, act.mode) == ("namespace0.0", want)
    else:
        assert p.actions == () and p.issues == ()


def test_mode_change_of_a_mounted_device_is_refused() -> None:
    ns = {"size": "1G", "offset": "5G", "mode": "devdax"}
    p = plan(config({"fast": ns}), booted(mounts=(mount("/dev/pmem0", "/data"),)), OWNED)
    assert p.actions == () and "unmount it before pmemd changes the mode to devdax" in errors(p)[0]


# --- removing namespaces -------------------------------------------------------------------


def test_removed_namespace_unmounts_and_drops_only_its_own_token() -> None:
    tokens = (TOK, "memmap=1G!8G")  # 1G!8G is the admin's, not pmemd's
    owned = dataclasses.replace(OWNED, namespaces={"fast": OwnedNamespace(5 * GIB, GIB, OwnedFs("u", "ext4"),
                                                                          "/pmem/fast")})
    facts = booted(tokens=tokens, owned_tokens=(TOK,), mounts=(mount("/dev/pmem0", "/pmem/fast"),))
    p = plan(config({}), facts, owned)
    assert kinds(p) == ["set-kernel-args", "reboot", "unmount"]
    args = nth(p, 0, SetKernelArgs)
    assert args.add == () and args.remove == (TOK,)
    assert nth(p, 1, Reboot).removed == (TOK,)
    unmount = nth(p, 2, Unmount)
    assert unmount.path == "/pmem/fast" and unmount.device == "/dev/pmem0"


def test_removed_unmounted_namespace_is_forgotten() -> None:
    p = plan(config({}), booted(), OWNED)
    assert kinds(p) == ["set-kernel-args", "reboot", "forget"]


# --- pending reboots -------------------------------------------------------------------------


def test_pending_reboot_is_not_flagged_twice() -> None:
    facts = make_facts(next_args=["root=/dev/vda1", "ro", "quiet", TOK], owned_tokens=(TOK,))
    owned = dataclasses.replace(OWNED, pending_reboot=PendingReboot("2026-11-25T22:00:00", "boot-1", "x",
                                                                    added=(TOK,)))
    p = plan(config({"fast": FAST}), facts, owned)
    assert p.actions == () and p.reboot_needed and p.namespaces[0].running == "configured"


def test_pending_reboot_is_cleared_once_the_reboot_happened() -> None:
    owned = dataclasses.replace(OWNED, pending_reboot=PendingReboot("2026-11-25T22:00:00", "boot-0", "x",
                                                                    added=(TOK,)))
    p = plan(config({"fast": FAST}), booted(), owned)
    assert kinds(p)[0] == "clear-reboot"
    clear = nth(p, 0, ClearReboot)
    assert clear.summary == "clear the pending reboot: the reboot happened and the arguments are in effect"
    assert not clear.cancel_scheduled


def test_schedule_without_a_scheduled_time_is_planned_again() -> None:
    facts = make_facts(next_args=["root=/dev/vda1", TOK], owned_tokens=(TOK,))
    pending = PendingReboot("2026-11-25T22:00:00", "boot-1", "x", added=(TOK,))
    owned = dataclasses.replace(OWNED, pending_reboot=pending)
    assert kinds(plan(config({"fast": FAST}, reboot="schedule"), facts, owned)) == ["reboot"]
    owned = dataclasses.replace(owned, pending_reboot=dataclasses.replace(pending, scheduled_for="2026-11-29T03:00"))
    assert kinds(plan(config({"fast": FAST}, reboot="schedule"), facts, owned)) == []


# --- plan after apply is empty (a simulated executor, kernel and reboot) -----------------------


def _set_mode(r: NdRegion, nd_namespace: str, want: str) -> NdRegion:
    """What ``ndctl create-namespace --mode=`` leaves in sysfs (modes as the kernel shows them)."""
    nss = tuple(dataclasses.replace(
        n, mode={"fsdax": "memory", "devdax": "dax", "raw": "memory"}[want],
        blockdev=None if want == "devdax" else n.blockdev or r.name.replace("region", "pmem"),
        chardev=r.name.replace("region", "dax") + ".0" if want == "devdax" else None,
        holder={"fsdax": "pfn", "devdax": "dax", "raw": ""}[want])
        if n.name == nd_namespace else n for n in r.namespaces)
    return dataclasses.replace(r, namespaces=nss)


@dataclasses.dataclass
class World:
    """What the executor, the boot loader and the kernel would make of a plan, in memory."""

    facts: HostFacts
    owned: Owned
    cfg: Config | None = None
    reboots: int = 0

    def apply(self, p: Plan) -> None:
        f, o = self.facts, self.owned
        for a in p.actions:
            match a:
                case SetKernelArgs():
                    nxt = tuple(t for t in (f.boot.default_args or ()) if t not in a.remove and t not in a.add) + a.add
                    entries = (dataclasses.replace(f.boot.entries[0], args=nxt),)
                    f = dataclasses.replace(f, boot=dataclasses.replace(f.boot, entries=entries, owned_tokens=a.add))
                    spaces = {r.name: o.namespaces.get(r.name) or OwnedNamespace(r.start, r.size) for r in a.ranges}
                    o = dataclasses.replace(o, kernel_args=a.add, namespaces={**o.namespaces, **spaces})
                case Reboot():
                    when = "2026-11-29T03:00:00" if a.policy.value == "schedule" else None
                    o = dataclasses.replace(o, pending_reboot=PendingReboot("now", f.boot_id, a.reason, a.added,
                                                                            a.removed, when))
                case ClearReboot():
                    o = dataclasses.replace(o, pending_reboot=None)
                case SetMode():
                    f = dataclasses.replace(f, regions=tuple(_set_mode(r, a.nd_namespace, a.mode) for r in f.regions))
                case Mkfs():
                    uuid = f"uuid-{a.dev}"
                    sigs = tuple(s for s in f.signatures if s.device != a.dev)
                    f = dataclasses.replace(f, signatures=(*sigs, Signature(a.dev, True, (
                        ("UUID", uuid), ("TYPE", a.fstype)), (a.fstype,))))
                    o = o.with_namespace(a.ns, dataclasses.replace(
                        o.namespaces[a.ns], filesystem=OwnedFs(uuid, a.fstype, a.fslabel)))
                case Mkdir():
                    f = dataclasses.replace(f, paths=(*f.paths, PathFact(a.path, True, True)))
                case Mount():
                    f = dataclasses.replace(f, mounts=(*f.mounts, mount(a.dev, a.path, a.fstype,
                                                                        "rw," + ",".join(a.options))))
                    o = o.with_namespace(a.ns, dataclasses.replace(o.namespaces[a.ns], mount_path=a.path))
                case Unmount():
                    f = dataclasses.replace(f, mounts=tuple(m for m in f.mounts if m.mount_point != a.path))
                    o = o.with_namespace(a.ns, dataclasses.replace(o.namespaces[a.ns], mount_path=None))
                case Forget():
                    o = o.with_namespace(a.ns, None)
        self.facts, self.owned = f, o

    def reboot(self) -> None:
        """The kernel boots the next-boot arguments: one e820 region per PRAM range, blank."""
        self.reboots += 1
        cl = parse_cmdline(" ".join(self.facts.boot.default_args or ()))
        pram = sorted(cl.pram, key=lambda e: e.start or 0)
        regions = tuple(region(i, e.start, e.size) for i, e in enumerate(pram))
        iomem = tuple(legacy(e.start or 0, e.size, i) for i, e in enumerate(pram))
        sigs = tuple(Signature(f"/dev/pmem{i}", True) for i in range(len(pram)))
        self.facts = dataclasses.replace(self.facts, cmdline=cl, regions=regions, iomem_pmem=iomem, signatures=sigs,
                                         mounts=(), boot_id=f"boot-{self.reboots + 1}")


def converge(cfg: Config, world: World, max_rounds: int = 12) -> Plan:
    world.cfg = cfg
    for _ in range(max_rounds):
        p = plan(cfg, world.facts, world.owned)
        assert not p.errors, [str(i) for i in p.errors]
        if p.actions:
            world.apply(p)
            continue
        if p.reboot_needed:
            world.reboot()
            continue
        return p
    raise AssertionError("no convergence")


def test_plan_after_apply_is_empty_for_the_example_config() -> None:
    import yaml

    data = yaml.safe_load((Path(__file__).parent.parent / "examples/pmem.yaml").read_text())
    cfg = Config.model_validate(data)
    world = World(make_facts(firmware=QEMU_PC_16G), Owned())
    final = converge(cfg, world)
    assert final.in_sync and world.reboots == 1
    assert plan(cfg, world.facts, world.owned).actions == ()
    assert {v.name: (v.running, v.dax) for v in final.namespaces} == {"fast": ("mounted", True),
                                                                      "bulk": ("mounted", True)}
    assert set(world.facts.boot.default_args or ()) >= {"memmap=1G!5G", "memmap=512M!4G", "nokaslr"}
    # Removing a namespace converges too, and only its token leaves the boot config.
    cfg2 = Config.model_validate({**data, "namespaces": {"fast": data["namespaces"]["fast"]}})
    converge(cfg2, world)
    assert "memmap=512M!4G" not in (world.facts.boot.default_args or ())
    assert "bulk" not in world.owned.namespaces and "memmap=1G!5G" in world.owned.kernel_args


namespace_specs = st.fixed_dictionaries({
    "size": st.integers(1, 16).map(lambda n: f"{n * 128}M"),
    "fixed": st.one_of(st.none(), st.integers(32, 120).map(lambda n: f"{n * 128}M")),
    "mode": st.sampled_from(["fsdax", "fsdax", "devdax", "raw"]),
    "fs": st.sampled_from(["ext4", "xfs", None]),
    "mount": st.booleans(),
})


@settings(max_examples=60)
@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), namespace_specs, min_size=1, max_size=4),
       st.sampled_from(["auto", "keep"]), st.sampled_from(["never", "flag", "schedule"]))
def test_plan_after_apply_is_empty_property(specs: dict[str, dict[str, Any]], kaslr: str, reboot: str) -> None:
    namespaces: dict[str, Any] = {}
    for name, s in specs.items():
        ns: dict[str, Any] = {"size": s["size"], "mode": s["mode"]}
        if s["fixed"]:
            ns["offset"] = s["fixed"]
        if s["fs"] and s["mode"] == "fsdax":
            # xfs needs 300 MiB or more (the config rejects less; tested in test_config)
            ns["filesystem"] = {"type": "ext4" if int(s["size"][:-1]) < 300 else s["fs"]}
            if s["mount"]:
                ns["mount"] = {"path": f"/pmem/{name}"}
        namespaces[name] = ns
    cfg = config(namespaces, kaslr=kaslr, reboot=reboot)
    world = World(make_facts(firmware=BIG_64G), Owned())
    first = plan(cfg, world.facts, world.owned)
    if first.errors:  # e.g. two fixed offsets overlap: nothing may be planned at all
        assert first.actions == ()
        return
    final = converge(cfg, world)
    assert final.actions == () and final.errors == ()
    for v in final.namespaces:
        assert v.running in ("present", "formatted", "mounted"), v
        if cfg.namespaces[v.name].mount:
            assert v.running == "mounted" and v.dax
    assert world.reboots == 1
    # ... and emptying the config converges back to a host without pmemd's arguments.
    converge(config({}, kaslr=kaslr, reboot=reboot), world)
    assert not [t for t in world.facts.boot.default_args or () if re.match(r"memmap=|nokaslr", t)]
    assert world.owned.kernel_args == () and world.owned.namespaces == {}


# --- real captures from Debian 13 QEMU guests (tests/fixtures/hosts/debian13-qemu-*) -------------

ADOPT = {"fast": {"size": "1G", "offset": "5G"}}  # exactly the guest's own memmap=1G!5G


def captured(name: str, tmp_path: Path) -> HostTree:
    from helpers import copy_fixture

    return copy_fixture(name, tmp_path / name)


def captured_with_devices(name: str, tmp_path: Path, runner: RecordingRunner) -> tuple[HostTree, Any]:
    """A captured tree whose /dev/pmem0 and /dev/pmem1 the fake blkid/wipefs answer for."""
    from helpers import FakeDevices

    t = captured(name, tmp_path)
    t.write("/dev/pmem0", "")
    t.write("/dev/pmem1", "")
    devices = FakeDevices(t.path)
    devices.install(runner)
    return t, devices


def test_capture_memmap_observed(tmp_path: Path, runner: RecordingRunner) -> None:
    """memmap=1G!5G memmap=512M!6G; pmem0 mounted with dax=always by the capture job."""
    t = captured("debian13-qemu-memmap", tmp_path)
    facts = observe(Root(t.path), runner)  # no /dev nodes in a capture: nothing to probe
    assert runner.calls == []
    assert [(r.name, r.provider, r.start, r.size, r.namespaces[0].mode, r.namespaces[0].blockdev)
            for r in facts.regions] == [("region0", "e820", 5 * GIB, GIB, "memory", "pmem0"),
                                        ("region1", "e820", 6 * GIB, GIB // 2, "memory", "pmem1")]
    assert [(e.start, e.end) for e in facts.iomem_pmem] == [(5 * GIB, 6 * GIB), (6 * GIB, 6 * GIB + GIB // 2)]
    (m,) = [m for m in facts.mounts if m.source == "/dev/pmem0"]
    assert (m.mount_point, m.fstype, m.dax) == ("/pmem/fast", "ext4", True)
    pram = [(r.start, r.type) for r in facts.kernel_log.user_map if r.type.startswith("persistent")]
    assert pram == [(5 * GIB, "persistent (type 12)"), (6 * GIB, "persistent (type 12)")]
    assert facts.kernel_log.problems == ()
    assert facts.boot.layout == "grub" and facts.boot.owned_tokens == ()  # the drop-in is 99-test.cfg
    assert {"memmap=1G!5G", "memmap=512M!6G"} <= set(facts.boot.default_args or ())


def test_capture_memmap_adopted_and_mounted_is_in_sync(tmp_path: Path, runner: RecordingRunner) -> None:
    t = captured("debian13-qemu-memmap", tmp_path)
    cfg = config({"fast": {"size": "1G", "offset": "5G", "filesystem": {"type": "ext4"},
                           "mount": {"path": "/pmem/fast"}}})
    p = plan(cfg, observe(Root(t.path), runner, mount_paths=("/pmem/fast",)), Owned())
    assert p.actions == () and p.errors == ()
    assert (p.namespaces[0].running, p.namespaces[0].device, p.namespaces[0].dax) == ("mounted", "/dev/pmem0", True)
    assert [i.message.split(" ")[0] for i in p.issues] == ["memmap=512M!6G"]  # the other one is foreign


def test_capture_memmap_second_region_is_formatted_when_blank(tmp_path: Path, runner: RecordingRunner) -> None:
    t, devices = captured_with_devices("debian13-qemu-memmap", tmp_path, runner)
    cfg = config({**ADOPT, "bulk": {"size": "512M", "offset": "6G", "filesystem": {"type": "xfs"}}})
    p = plan(cfg, observe(Root(t.path), runner), Owned())
    assert [c[-1] for c in runner.calls] == [devices.dev("pmem1")] * 2  # pmem0 is mounted: not probed
    assert [(a.kind.value, a.device) for a in p.actions] == [("mkfs", "/dev/pmem1")]
    assert nth(p, 0, Mkfs).argv == ("mkfs.xfs", "-q", "-b", "size=4096")  # 6.12: reflink is fine


def test_capture_misaligned_foreign_region_does_not_fail_pmemds_region(tmp_path: Path,
                                                                       runner: RecordingRunner) -> None:
    """memmap=61M!7001M is not 2 MiB aligned: its namespace1.0 fails to probe (6.12 wording:
    "probe with driver nd_pmem failed"). That is namespace1.0's problem, not namespace0.0's."""
    t = captured("debian13-qemu-misaligned", tmp_path)
    facts = observe(Root(t.path), runner)
    assert facts.kernel_log.problems == (
        "nd_pmem namespace1.0: [mem 0x1b5900000-0x1b95fffff flags 0x200] misaligned, unable to map",
        "nd_pmem namespace1.0: probe with driver nd_pmem failed with error -95")
    bad = next(r for r in facts.regions if r.name == "region1")
    assert (bad.start, bad.size, bad.namespaces[0].blockdev) == (0x1B5900000, 61 * 2**20, None)
    p = plan(config(ADOPT), facts, Owned())
    assert p.errors == () and p.namespaces[0].running == "present"
    assert any(i.severity == "warning" and i.message.startswith("memmap=61M!7001M ") for i in p.issues)


def test_capture_misaligned_region_declared_by_pmemd_is_failed(tmp_path: Path, runner: RecordingRunner) -> None:
    """Had pmemd declared the broken range (validation would refuse 61M, so the placement is made
    up here): the diagnosis names the probe failure."""
    t = captured("debian13-qemu-misaligned", tmp_path)
    facts = observe(Root(t.path), runner)
    state, diagnosis = diagnose(facts, Placement("odd", 0x1B5900000, 61 * 2**20, False, "test"))
    assert state == "failed"
    assert diagnosis == ("region1 exists but its namespace has no device (not probed yet, or the probe failed)",
                         "nd_pmem namespace1.0: [mem 0x1b5900000-0x1b95fffff flags 0x200] misaligned, unable to map",
                         "nd_pmem namespace1.0: probe with driver nd_pmem failed with error -95")


def test_capture_overlap_is_refused_by_validation(tmp_path: Path, runner: RecordingRunner) -> None:
    """memmap=1G!5G plus 61M!6001M inside it: the kernel made three regions, two unusable."""
    t = captured("debian13-qemu-overlap", tmp_path)
    facts = observe(Root(t.path), runner)
    assert [(r.start, r.size, r.namespaces[0].blockdev) for r in facts.regions] == [
        (0x140000000, 0x1771 * 2**20 - 0x1400 * 2**20, None), (0x177100000, 61 * 2**20, None),
        (0x17AE00000, 82 * 2**20, "pmem2")]
    p = plan(config(ADOPT), facts, Owned())
    assert p.actions == ()
    assert "overlaps memmap=61M!6001M (not set by pmemd) [0x177100000-0x17adfffff]" in errors(p)[0]


def test_capture_overlap_diagnosis_of_the_split_region(tmp_path: Path, runner: RecordingRunner) -> None:
    """Whatever validation says, the region 1G!5G itself is diagnosed as failed: the kernel split
    it and none of the pieces is the declared range."""
    t = captured("debian13-qemu-overlap", tmp_path)
    facts = observe(Root(t.path), runner)
    state, diagnosis = diagnose(facts, Placement("fast", 5 * GIB, GIB, False, "x"))
    assert state == "failed"
    assert diagnosis[0] == ("the kernel changed the region: /proc/iomem has Persistent Memory (legacy) "
                            "[0x140000000-0x1770fffff], Persistent Memory (legacy) [0x177100000-0x17adfffff], "
                            "Persistent Memory (legacy) [0x17ae00000-0x17fffffff] instead of "
                            "[0x140000000-0x17fffffff]")
    assert diagnosis[1] == "no e820 nd region with this exact address and size"
    assert diagnosis[2:] == tuple(facts.kernel_log.problems)  # all four nd_pmem lines concern its pieces
    assert len(diagnosis) == 6


def test_capture_nvdimm_is_never_probed_or_planned(tmp_path: Path, runner: RecordingRunner) -> None:
    """A QEMU NVDIMM (ACPI.NFIT, namespace mode raw, pmem1) beside memmap=1G!5G (pmem0)."""
    t, devices = captured_with_devices("debian13-qemu-nvdimm", tmp_path, runner)
    facts = observe(Root(t.path), runner)
    assert [(r.provider, r.start, r.namespaces[0].mode) for r in facts.regions] == [
        ("e820", 5 * GIB, "memory"), ("ACPI.NFIT", 9 * GIB, "raw")]
    assert {c[-1] for c in runner.calls} == {devices.dev("pmem0")}  # pmem1 is a real NVDIMM: hands off
    assert [(e.name, e.start) for e in facts.iomem_pmem] == [("Persistent Memory (legacy)", 5 * GIB),
                                                             ("Persistent Memory", 9 * GIB)]
    cfg = config({"fast": {"size": "1G", "offset": "5G", "filesystem": {"type": "ext4"}},
                  "nv": {"size": "1G", "offset": "9G", "filesystem": {"type": "ext4"}}})
    p = plan(cfg, facts, Owned())
    assert p.actions == ()  # the NVDIMM range is not firmware System RAM: refused outright
    assert any(i.key == "namespaces.nv.offset" and "not inside one firmware System RAM entry" in i.message
               for i in p.errors)
    p = plan(config({"fast": cfg.namespaces["fast"].model_dump(mode="json")}), facts, Owned())
    assert [(a.kind.value, a.device) for a in p.actions] == [("mkfs", "/dev/pmem0")]


# --- the state file ----------------------------------------------------------------------------

_names = st.text(alphabet="abcdef-", min_size=1, max_size=6)
_owned = st.builds(
    Owned,
    kernel_args=st.lists(st.sampled_from(["memmap=1G!5G", "memmap=512M!4G", "nokaslr"]), unique=True).map(tuple),
    backend=st.sampled_from([None, "grub", "grubby", "systemd-boot"]),
    namespaces=st.dictionaries(_names, st.builds(
        OwnedNamespace, start=st.integers(0, 2**40), size=st.integers(0, 2**40),
        filesystem=st.one_of(st.none(), st.builds(OwnedFs, uuid=_names, type=st.sampled_from(["ext4", "xfs"]),
                                                  label=st.one_of(st.none(), _names))),
        mount_path=st.one_of(st.none(), _names.map(lambda n: "/pmem/" + n)),
        verified=st.one_of(st.none(), st.just("applied"), _names.map(lambda n: "failed: " + n)),
        verified_boot_id=st.one_of(st.none(), _names)), max_size=3),
    pending_reboot=st.one_of(st.none(), st.builds(
        PendingReboot, since=st.just("2026-11-25T22:00:00"), boot_id=st.one_of(st.none(), _names), reason=_names,
        added=st.lists(_names, max_size=2).map(tuple), removed=st.lists(_names, max_size=2).map(tuple),
        scheduled_for=st.one_of(st.none(), st.just("2026-11-29T03:00:00")))),
)


@given(_owned)
def test_state_file_round_trips(owned: Owned) -> None:
    from pmemd.state import dumps, loads

    text = dumps(owned)
    assert loads(text) == owned
    assert json.loads(text)["version"] == 1


@pytest.mark.parametrize("text", ["{not json", '{"namespaces": {"x": {"size": 1}}}', '{"pending_reboot": {"x": 1}}',
                                  "[1, 2]"])
def test_damaged_state_file_is_a_clear_error(text: str) -> None:
    from pmemd.state import StateError, loads

    with pytest.raises(StateError, match=r"is damaged .*; move it aside to start over"):
        loads(text)


def test_absent_state_file_is_empty() -> None:
    from pmemd.state import loads

    assert loads(None) == Owned() and loads("  \n") == Owned()


def test_every_action_type_has_exactly_one_handler_and_a_distinct_kind() -> None:
    from typing import get_args

    from pmemd.execute import _HANDLERS

    types = get_args(Action)
    assert set(types) == set(_HANDLERS)
    assert sorted(t.kind.value for t in types) == sorted(k.value for k in Kind)


def test_the_start_wait_sees_a_booted_region_without_its_device(tmp_path: Path) -> None:
    """The daemon polls this at start instead of observing everything: it must agree with the
    diagnosis on what counts as pending (no e820 region at all, or a region without a device)."""
    import shutil

    from pmemd.observe import booted_regions_have_devices

    t = captured("debian13-qemu-memmap", tmp_path)  # memmap=1G!5G memmap=512M!6G, both up
    root = Root(t.path)
    assert booted_regions_have_devices(root)
    block = t.path / "sys/bus/nd/devices/region0/namespace0.0/block"
    shutil.move(block, tmp_path / "block")  # the driver has not bound yet
    assert not booted_regions_have_devices(root)
    shutil.move(tmp_path / "block", block)
    shutil.rmtree(t.path / "sys/bus/nd/devices")  # nd_e820 not loaded yet
    (t.path / "sys/bus/nd/devices").mkdir()
    assert not booted_regions_have_devices(root)
    # no memmap= booted: nothing to wait for; a region whose probe failed (61M is not 2 MiB
    # aligned) looks like one not probed yet, as in the diagnosis: waited for, at most settle_max
    assert booted_regions_have_devices(Root(captured("debian13-qemu-plain", tmp_path).path))
    assert not booted_regions_have_devices(Root(captured("debian13-qemu-misaligned", tmp_path).path))


def test_tokens_pmemd_took_out_are_not_foreign_until_the_reboot() -> None:
    """Replacing every namespace: after the boot config is written, the old tokens stay on the
    running command line until the reboot. They are pmemd's (the pending reboot removes them):
    not a foreign reservation that eats the RAM headroom or blocks the new ranges."""
    g = 1 << 30
    qemu_8g = [(0, 0x9fbff, "System RAM"), (0x100000, 3 * g - 1, "System RAM"), (4 * g, 9 * g - 1, "System RAM")]
    old = ("memmap=512M!4G", "memmap=1G!5G")
    new = tuple(f"memmap=384M!{4096 + 384 * i}M".replace("!4096M", "!4G") for i in range(8))
    eight = {f"ns{i}": {"size": "384M", "offset": "auto"} for i in range(1, 9)}
    cfg = Config.model_validate({"version": 1, "settings": {"reboot": "flag"}, "namespaces": eight})
    facts = make_facts(firmware=qemu_8g, cmdline="root=/dev/vda1 ro " + " ".join(old),
                       next_args=["root=/dev/vda1", "ro", *new], owned_tokens=new)
    pending = PendingReboot(since="2026-12-02T10:00:00", boot_id="boot-1", reason="", added=new, removed=old)
    p = plan(cfg, facts, Owned(kernel_args=new, pending_reboot=pending))
    assert not p.errors, p.issues
    assert [v.token for v in p.namespaces] == list(new)
    # the same ranges set by someone else are foreign: 1.5 GiB less headroom than min_free_ram allows
    p = plan(cfg, facts, Owned(kernel_args=new))
    assert any("not set by pmemd" in i.message for i in p.errors), p.issues
