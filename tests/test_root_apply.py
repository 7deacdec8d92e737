"""Tier 3: ``pmemd apply`` with real mkfs, blkid, wipefs and mount on a loop device.

The host tree (tests/rootfixtures.py) has memmap=1G!5G in effect and already in the boot config,
so the plan is only mkfs → mkdir → mount → verify DAX. A loop device cannot do DAX, which is what
these tests prove pmemd notices: ext4 refuses the ``dax=always`` mount outright, xfs mounts
without DAX (silent fallback) and pmemd's verify step must fail and unmount again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import rootfixtures as rf
from rootfixtures import leak_check  # noqa: F401  (session-wide check for leaked loops/mounts)

pytestmark = rf.pytestmark_root

KERNEL = os.uname().release


def _kernel_at_least(major: int, minor: int) -> bool:
    parts = KERNEL.split("-")[0].split(".")
    return (int(parts[0]), int(parts[1])) >= (major, minor)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[rf.HostTree]:
    with rf.host_tree(tmp_path) as t:
        yield t


@pytest.fixture
def xfs_host(tmp_path: Path) -> Iterator[rf.HostTree]:
    with rf.host_tree(tmp_path, size=rf.XFS_IMAGE_SIZE) as t:
        yield t


@pytest.fixture
def kmsg() -> Iterator[rf.KernelLog]:
    log = rf.KernelLog()
    yield log
    log.close()


def _kinds(run: rf.CliRun) -> list[tuple[str, str]]:
    return [(a["kind"], a["result"]) for a in run.actions()]


def _action_log(t: rf.HostTree) -> list[dict[str, str]]:
    text = t.read("/var/lib/pmemd/actions.jsonl") or ""
    return [json.loads(line) for line in text.splitlines()]


# --- 1. blank device: real mkfs, then a mount that cannot have DAX ----------------------------


@rf.needs("dumpe2fs")
def test_ext4_blank_device_is_formatted_and_dax_mount_fails(host: rf.HostTree, kmsg: rf.KernelLog) -> None:
    host.write_config(fs="ext4", label="fast")
    assert host.blkid() == {}, "the fresh loop device must be blank"
    boot = host.snapshot_boot()

    run = rf.pmemd(host, "apply", "--json")

    assert run.rc == 1, run.text
    assert _kinds(run) == [("mkfs", "ok"), ("mkdir", "ok"), ("mount", "failed"), ("verify-dax", "skipped")]
    # the real mkfs pmemd ran: 4 KiB blocks (DAX needs blocksize == PAGE_SIZE)
    mkfs = [s for s in run.side_effects() if s.startswith("run: mkfs")]
    assert mkfs == [f"run: mkfs.ext4 -q -b 4096 -L fast -U UUID {host.dev}"]
    sig = host.blkid()
    assert sig["TYPE"] == "ext4" and sig["LABEL"] == "fast" and sig["BLOCK_SIZE"] == "4096"
    dumpe2fs = rf.sh("dumpe2fs", "-h", host.loop.dev).stdout
    assert "Block size:               4096" in dumpe2fs
    assert "inline_data" not in dumpe2fs
    # the UUID mkfs created is what the state file records as pmemd's own
    assert host.owned_fs() == {"uuid": sig["UUID"], "type": "ext4", "label": "fast", "complete": True}
    # the mount point was created as a real directory
    assert host.p("/pmem/fast").is_dir() and not host.p("/pmem/fast").is_symlink()
    # the kernel refused dax=always on a device without DAX: the mount itself failed
    mount = next(a for a in run.actions() if a["kind"] == "mount")
    assert f"mount -t ext4 -o dax=always {host.dev} {host.p('/pmem/fast')}" in mount["message"]
    assert "exited 32" in mount["message"]
    if kmsg.readable:
        loop = os.path.basename(host.loop.dev)
        assert f"EXT4-fs ({loop}): DAX unsupported by block device." in kmsg.messages()
    assert host.mounts() == []
    assert host.state()["namespaces"]["fast"]["mount_path"] is None
    # reported: an error line per failed step (stderr when journald is absent) and the action log
    assert "pmemd error: mount [fast] (failed)" in run.stderr
    assert host.snapshot_boot() == boot  # memmap=1G!5G was already configured: boot files untouched
    log = [e for e in _action_log(host) if e["action"] != "verify-region"]
    assert [(e["action"], e["result"]) for e in log] == [("mkfs", "ok"), ("mkdir", "ok"), ("mount", "failed")]
    assert log[0]["device"] == "/dev/pmem0"


@rf.needs("mkfs.xfs", "xfs_info")
def test_xfs_blank_device_mounts_without_dax_and_verify_fails(xfs_host: rf.HostTree, kmsg: rf.KernelLog) -> None:
    host = xfs_host
    host.write_config(fs="xfs", label="fast")

    run = rf.pmemd(host, "apply", "--json")

    assert run.rc == 1, run.text
    assert _kinds(run) == [("mkfs", "ok"), ("mkdir", "ok"), ("mount", "ok"), ("verify-dax", "failed")]
    mkfs = [s for s in run.side_effects() if s.startswith("run: mkfs")]
    # reflink=0 only where the kernel needs it (< 6.0); this host decides which argv is right
    want = ["mkfs.xfs", "-q", "-b", "size=4096"] + ([] if _kernel_at_least(6, 0) else ["-m", "reflink=0"])
    assert mkfs == ["run: " + " ".join([*want, "-L", "fast", "-m", "uuid=UUID", str(host.dev)])]
    info = rf.sh("xfs_info", host.loop.dev).stdout
    assert "bsize=4096" in info
    assert ("reflink=1" in info) if _kernel_at_least(6, 0) else ("reflink=0" in info)
    sig = host.blkid()
    assert sig["TYPE"] == "xfs"
    assert host.owned_fs() == {"uuid": sig["UUID"], "type": "xfs", "label": "fast", "complete": True}
    # xfs accepted dax=always and turned DAX off; pmemd's check caught it and unmounted again
    verify = next(a for a in run.actions() if a["kind"] == "verify-dax")
    assert "/pmem/fast is mounted without DAX" in verify["message"]
    assert "dax=never" in verify["message"]
    assert verify["message"].endswith("pmemd unmounted it again")
    assert f"run: umount {host.p('/pmem/fast')}" in run.side_effects()
    if kmsg.readable:
        loop = os.path.basename(host.loop.dev)
        msgs = kmsg.messages()
        assert f"XFS ({loop}): DAX unsupported by block device. Turning off DAX." in msgs
        assert f"XFS ({loop}): Mounting V5 Filesystem {sig['UUID']}" in msgs
    assert host.mounts() == []
    assert host.state()["namespaces"]["fast"]["mount_path"] is None
    assert "pmemd error: verify-dax [fast] (failed)" in run.stderr
    log = _action_log(host)
    assert [(e["action"], e["result"]) for e in log][-1] == ("verify-dax", "failed")


@rf.needs("mkfs.xfs", "xfs_info")
def test_xfs_on_a_pre_6_0_kernel_gets_reflink_off(tmp_path: Path) -> None:
    with rf.host_tree(tmp_path, kernel_release="5.15.0-91-generic", size=rf.XFS_IMAGE_SIZE) as t:
        t.write_config(fs="xfs", label="old", mount=None)
        run = rf.pmemd(t, "apply", "--json")
        assert run.rc == 0, run.text
        assert [s for s in run.side_effects() if s.startswith("run: mkfs")] == [
            f"run: mkfs.xfs -q -b size=4096 -m reflink=0 -L old -m uuid=UUID {t.dev}"]
        assert "reflink=0" in rf.sh("xfs_info", t.loop.dev).stdout


def test_pre_5_8_kernel_mounts_with_legacy_dax_option(tmp_path: Path) -> None:
    with rf.host_tree(tmp_path, kernel_release="4.19.0-26-amd64") as t:
        t.write_config(fs="ext4")
        plan = rf.pmemd(t, "plan", "--json")
        mount = next(a for a in plan.json["actions"] if a["kind"] == "mount")
        assert mount["options"] == ["dax"]


def test_dry_run_changes_nothing(host: rf.HostTree) -> None:
    host.write_config(fs="ext4")
    before = host.full_digest()
    state = host.state_path.read_bytes()

    run = rf.pmemd(host, "apply", "--dry-run", "--json")

    assert run.rc == 2, run.text
    assert [a["result"] for a in run.actions()] == ["dry-run"] * 4
    assert f"run: mkfs.ext4 -q -b 4096 -L fast -U UUID {host.dev}" in run.side_effects()
    assert host.full_digest() == before
    assert host.state_path.read_bytes() == state
    assert not host.p("/pmem").exists()
    assert not host.p("/var/lib/pmemd/actions.jsonl").exists()


# --- 3. a filesystem pmemd made is reused, never re-formatted ----------------------------------


def test_pmemd_made_filesystem_is_reused_not_reformatted(host: rf.HostTree) -> None:
    host.write_config(fs="ext4")
    first = rf.pmemd(host, "apply", "--json")
    assert ("mkfs", "ok") in _kinds(first)
    uuid = host.blkid()["UUID"]

    plan = rf.pmemd(host, "plan", "--json")
    assert plan.rc == 2
    assert [a["kind"] for a in plan.json["actions"]] == ["mount", "verify-dax"]  # no mkfs, no mkdir
    assert plan.json["namespaces"][0]["running"] == "formatted"

    second = rf.pmemd(host, "apply", "--json")
    assert second.rc == 1  # the DAX mount still cannot work on a loop device
    assert _kinds(second) == [("mount", "failed"), ("verify-dax", "skipped")]
    assert not [s for s in second.side_effects() if "mkfs" in s or "wipefs -a" in s]
    assert host.blkid()["UUID"] == uuid
    assert host.owned_fs()["uuid"] == uuid  # type: ignore[index]


@pytest.mark.parametrize("fs", ["ext4", pytest.param("xfs", marks=rf.needs("mkfs.xfs"))])
def test_second_apply_does_nothing(tmp_path: Path, fs: str) -> None:
    """Without a mount (which needs DAX), the whole chain converges on a loop device."""
    with rf.host_tree(tmp_path, size=rf.XFS_IMAGE_SIZE if fs == "xfs" else rf.IMAGE_SIZE) as t:
        t.write_config(fs=fs, mount=None)
        first = rf.pmemd(t, "apply", "--json")
        assert first.rc == 0, first.text
        assert _kinds(first) == [("mkfs", "ok")]
        assert first.json["summary"] == "in sync: 1 namespace(s) present"
        device, state = t.full_digest(), t.state_path.stat()

        second = rf.pmemd(t, "apply")
        assert second.rc == 0, second.text
        assert second.stdout.strip() == "in sync: nothing to do"
        assert second.stderr == ""
        assert t.full_digest() == device
        after = t.state_path.stat()
        assert (after.st_ino, after.st_mtime_ns) == (state.st_ino, state.st_mtime_ns), "state rewritten"

        plan = rf.pmemd(t, "plan", "--json")
        assert plan.rc == 0 and plan.json["in_sync"] is True
        assert plan.json["namespaces"][0]["running"] == "formatted"


@rf.needs("blkdiscard")
def test_blank_again_after_reboot_is_formatted_again(host: rf.HostTree) -> None:
    """Emulated pmem is RAM: after a reboot the device is zeroes and pmemd makes a new fs."""
    host.write_config(fs="ext4", mount=None)
    assert rf.pmemd(host, "apply").rc == 0
    old = host.blkid()["UUID"]
    rf.sh("blkdiscard", host.loop.dev)  # the loop driver punches holes: reads return zeroes
    assert "TYPE" not in host.blkid()

    run = rf.pmemd(host, "apply", "--json")

    assert run.rc == 0, run.text
    assert _kinds(run) == [("mkfs", "ok")]
    new = host.blkid()["UUID"]
    assert new != old
    assert host.owned_fs()["uuid"] == new  # type: ignore[index]


@rf.needs("mkfs.xfs")
def test_mount_without_dax_made_by_someone_else_is_reported_not_touched(xfs_host: rf.HostTree) -> None:
    host = xfs_host
    rf.sh("mkfs.xfs", "-q", str(host.dev))
    host.p("/pmem/fast").mkdir(parents=True)
    rf.sh("mount", "-t", "xfs", "-o", "dax=always", str(host.dev), str(host.p("/pmem/fast")))
    host.write_config(fs="xfs")

    run = rf.pmemd(host, "apply", "--json")

    assert run.rc == 1
    assert run.actions() == []
    msg = " ".join(i["message"] for i in run.issues())
    assert "/dev/pmem0 is mounted at /pmem/fast without DAX" in msg and "dax=never" in msg
    assert host.mounts() == [str(host.p("/pmem/fast"))]  # not pmemd's mount: left alone
    status = rf.pmemd(host, "status", "--json")
    assert status.json["namespaces"][0]["running"] == "mounted"
    assert status.json["namespaces"][0]["dax"] is False


# --- 6. mount point safety ---------------------------------------------------------------------


@pytest.mark.parametrize("absolute", [False, True], ids=["relative-link", "absolute-link"])
def test_symlink_on_mount_path_is_refused(host: rf.HostTree, tmp_path: Path, absolute: bool) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(str(elsewhere) if absolute else "../elsewhere", host.p("/pmem"))
    host.write_config(fs="ext4")
    blank = host.full_digest()

    plan = rf.pmemd(host, "plan")
    assert plan.rc == 1
    assert "/pmem is a symlink; pmemd mounts only on real directories" in plan.stderr
    run = rf.pmemd(host, "apply", "--json")
    assert run.rc == 1
    assert run.actions() == []  # nothing of the namespace's chain runs, not even mkfs
    assert host.full_digest() == blank
    assert list(elsewhere.iterdir()) == []
    assert host.mounts() == []


def test_symlink_appearing_after_the_plan_is_refused_by_the_executor(host: rf.HostTree, tmp_path: Path) -> None:
    """The executor checks again: a link planted between plan and mkdir/mount is not followed."""
    from pmemd.engine import Target, apply_pass, assess
    from pmemd.journal import Journal
    from pmemd.runner import SubprocessRunner

    host.write_config(fs="ext4")
    target, runner = Target.make(str(host.path)), SubprocessRunner()
    a = assess(target, runner)
    assert [x.kind.value for x in a.plan.actions] == ["mkfs", "mkdir", "mount", "verify-dax"]
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "fast").mkdir(parents=True)
    os.symlink(str(elsewhere), host.p("/pmem"))

    r = apply_pass(target, runner, Journal(root=None, sender=None), dry_run=False, assessment=a)

    got = [(o.action.kind.value, o.result) for o in r.outcomes]
    assert got == [("mkfs", "ok"), ("mkdir", "failed"), ("mount", "skipped"), ("verify-dax", "skipped")]
    assert "/pmem is a symlink; refusing to create /pmem/fast through it" in r.outcomes[1].message
    assert host.mounts() == [] and list((elsewhere / "fast").iterdir()) == []

    # the mount step checks too (mount point existed at plan time, link planted afterwards)
    os.unlink(host.p("/pmem"))
    host.p("/pmem/fast").mkdir(parents=True)
    a = assess(target, runner)
    assert [x.kind.value for x in a.plan.actions] == ["mount", "verify-dax"]
    os.rename(host.p("/pmem"), tmp_path / "moved")
    os.symlink(str(elsewhere), host.p("/pmem"))
    r = apply_pass(target, runner, Journal(root=None, sender=None), dry_run=False, assessment=a)
    assert [(o.action.kind.value, o.result) for o in r.outcomes] == [("mount", "failed"), ("verify-dax", "skipped")]
    assert "/pmem is a symlink; refusing to mount on /pmem/fast" in r.outcomes[0].message
    assert host.mounts() == []


@pytest.mark.parametrize("path", ["/proc/pmem", "/sys/fs/pmem", "/dev/pmem", "/boot/pmem", "/dev",
                                  "/pmem/../etc", "/var/lib/pmemd/mnt"])
def test_mount_path_in_system_directories_is_refused_by_validation(host: rf.HostTree, path: str) -> None:
    host.write_config(fs="ext4", mount=path)
    blank = host.full_digest()
    for cmd in (["validate"], ["plan"], ["apply"]):
        run = rf.pmemd(host, *cmd)
        assert run.rc == 1, (cmd, run.text)
        assert run.stderr.startswith("/etc/pmem.yaml:"), run.stderr
        assert "namespaces.fast.mount.path" in run.stderr
        assert f"mount path {path!r}" in run.stderr
    assert host.full_digest() == blank
    assert not host.p("/pmem").exists()
    assert host.mounts() == []


@pytest.mark.skipif(os.path.exists("/run/systemd/journal/socket"),
                    reason="journald runs here: pmemd's entries go to the journal, not stderr")
def test_failure_is_reported_on_stderr_when_journald_is_absent(host: rf.HostTree) -> None:
    """The real entry point (subprocess, systemd-python importable or not): with no journald to
    take the entries, the failed step is an error line on stderr, not silently dropped."""
    import subprocess

    host.write_config(fs="ext4")
    proc = subprocess.run(rf.pmemd_argv(host.path, "apply"), capture_output=True, text=True,
                          env=rf.pmemd_env(), cwd=rf.REPO, timeout=120, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[failed] fast: mount /dev/pmem0 on /pmem/fast (dax=always)" in proc.stdout
    assert ("pmemd error: mount [fast] (failed): fast: mount /dev/pmem0 on /pmem/fast (dax=always): FAILED"
            in proc.stderr)


@rf.needs("mkfs.xfs")
def test_xfs_below_300mb_is_refused_by_the_config_and_mkfs_agrees(tmp_path: Path) -> None:
    """xfsprogs >= 5.19 refuses filesystems under 300 MB, so the config does too, at the
    namespace's line and before anything runs; the real mkfs.xfs here says the same."""
    with rf.host_tree(tmp_path, size=256 * rf.MIB) as t:
        t.write_config(fs="xfs", mount=None, size="256M")
        run = rf.pmemd(t, "apply")
        assert run.rc == 1
        assert "xfs needs at least 300 MiB (mkfs.xfs refuses smaller filesystems); size is 256 MiB" in run.stderr
        assert re.search(r"/etc/pmem\.yaml:\d+:\d+: .*namespaces\.fast", run.stderr), run.stderr
        assert t.blkid() == {}
        mkfs = subprocess.run(["mkfs.xfs", "-q", "-N", t.loop.dev], capture_output=True, text=True, check=False)
        assert mkfs.returncode != 0 and "larger than 300MB" in mkfs.stderr + mkfs.stdout


def test_dax_failure_of_an_unrelated_device_does_not_fail_the_region(tmp_path: Path) -> None:
    with rf.host_tree(tmp_path) as t, rf.loop_device(tmp_path, name="other.img") as other:
        os.symlink("/dev/kmsg", t.p("/dev/kmsg"))  # the live kernel log, as on a real host
        rf.sh("mkfs.ext4", "-q", other.dev)
        mnt = tmp_path / "other"
        mnt.mkdir()
        try:  # someone tries DAX on a disk that is not pmem: the kernel logs it, the mount fails
            assert rf.sh("mount", "-o", "dax=always", other.dev, str(mnt), check=False).returncode != 0
        finally:
            rf.unmount_all_under(mnt)
        t.write_config(fs="ext4", mount=None)
        plan = rf.pmemd(t, "plan", "--json")
        assert plan.json["namespaces"][0]["running"] == "present", plan.json["issues"]
        assert [a["kind"] for a in plan.json["actions"]] == ["mkfs"]
