"""Tier 3: SIGKILL of ``pmemd apply`` and of the daemon between (and during) their steps, and the
atomic writes that make that safe.

The apply under test changes everything at once on a systemd-boot host tree: it adds ``nokaslr``
(``settings.kaslr: disable``) to /etc/kernel/cmdline and the loader entry, flags the reboot,
formats the blank loop device (real mkfs.ext4), creates the mount point and tries the DAX mount
(which fails on a loop device). pmemd runs as ``python -m pmemd`` in its own session and is
killed with SIGKILL:

* at exact points: a logging wrapper around each real tool (blkid, wipefs, mkfs.ext4, mount)
  sits first in PATH, and kills pmemd (its parent) before, during or after the N-th command;
* at racy points: the test polls the state file and the boot files and kills pmemd as soon as
  the N-th rewrite of one of them shows up.

The daemon's first pass runs the same commands as apply (the wait for devices and the pass share
one observation) and is killed at the same points. Then apply runs again, unkilled. Whatever the
kill hit, the state file is valid JSON, each boot file is entirely old or entirely new, and the
device ends up either formatted once by pmemd (UUID recorded, marked unfinished, before mkfs runs:
a kill during or right after mkfs leaves a filesystem pmemd knows as its own unfinished one and
makes again) or, if anything else is found, refused as foreign (bytes unchanged): pmemd never
formats a device it cannot prove blank or its own.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rootfixtures as rf
from rootfixtures import leak_check  # noqa: F401  (session-wide check for leaked loops/mounts)

pytestmark = rf.pytestmark_root

WRAPPED = ("blkid", "wipefs", "mkfs.ext4", "mkfs.xfs", "mount", "umount")

WRAPPER = r"""#!/bin/sh
# Test wrapper around the real {name}: logs the call, runs the real tool, and SIGKILLs pmemd (the
# parent) at the point named in kill.plan: "before|after|during N [delay]" of pmemd's N-th command.
d=${{0%/*}}
echo "{name} $*" >> "$d/calls.log"
n=0
while read -r _line; do n=$((n + 1)); done < "$d/calls.log"
when=; at=; delay=
[ -r "$d/kill.plan" ] && read -r when at delay < "$d/kill.plan"
if [ "$n" = "$at" ]; then
  case $when in
    before) kill -KILL "$PPID"; exit 137 ;;
    during) "{real}" "$@" & child=$!
            [ -n "$delay" ] && sleep "$delay"
            kill -KILL "$PPID" "$child"; wait "$child"; exit 137 ;;
  esac
fi
"{real}" "$@"
rc=$?
if [ "$n" = "$at" ] && [ "$when" = after ]; then kill -KILL "$PPID"; fi
exit $rc
"""


def make_wrappers(bindir: Path) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    for name in WRAPPED:
        real = shutil.which(name)
        if real is None:
            continue
        path = bindir / name
        path.write_text(WRAPPER.format(name=name, real=real))
        path.chmod(0o755)


def calls(bindir: Path) -> list[str]:
    log = bindir / "calls.log"
    return [ln.split(" ", 1)[0] for ln in log.read_text().splitlines()] if log.exists() else []


def start_apply(t: rf.HostTree, bindir: Path, command: str = "apply") -> subprocess.Popen[str]:
    args = ("apply", "--json") if command == "apply" else ("daemon",)
    return subprocess.Popen(rf.pmemd_argv(t.path, *args), cwd=rf.REPO, env=rf.pmemd_env(str(bindir)),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def until_killed(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """The output of a pmemd the wrapper is to kill; a daemon it missed would run forever."""
    try:
        return proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"pmemd was not killed within 120 s:\n{out}{err}") from None


def new_host(tmp: Path, fs: str = "ext4") -> Iterator[rf.HostTree]:
    with rf.host_tree(tmp, layout="systemd-boot", size=rf.XFS_IMAGE_SIZE if fs == "xfs" else rf.IMAGE_SIZE) as t:
        t.write_config(fs=fs, kaslr="disable")
        yield t


@dataclass
class Reference:
    calls: list[str]
    boot_old: dict[str, str | None]
    boot_new: dict[str, str | None]
    state: dict[str, Any]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """One unkilled apply: which commands pmemd runs, and the boot files it ends with."""
    tmp = tmp_path_factory.mktemp("reference")
    bindir = tmp / "bin"
    make_wrappers(bindir)
    for t in new_host(tmp):
        old = t.snapshot_boot()
        proc = start_apply(t, bindir)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, out + err  # the DAX mount cannot work on a loop device
        kinds = [(a["kind"], a["result"]) for p in json.loads(out)["passes"] for a in p["actions"]]
        assert kinds == [("set-kernel-args", "ok"), ("reboot", "ok"), ("mkfs", "ok"), ("mkdir", "ok"),
                         ("mount", "failed"), ("verify-dax", "skipped")]
        new = t.snapshot_boot()
        for f in t.boot_files:
            assert old[f] != new[f] and "nokaslr" in (new[f] or ""), f
        return Reference(calls(bindir), old, new, t.state())
    raise AssertionError("unreachable")


def test_reference_run_commands(reference: Reference) -> None:
    # observe probes the blank device, mkfs probes it again, formats, reads the UUID, mounts
    assert reference.calls == ["blkid", "wipefs", "blkid", "wipefs", "mkfs.ext4", "blkid", "mount"]


def test_the_daemons_first_pass_runs_the_same_commands(tmp_path: Path, reference: Reference) -> None:
    bindir = tmp_path / "bin"
    make_wrappers(bindir)
    for t in new_host(tmp_path):
        log = tmp_path / "daemon.log"
        with log.open("w") as out:
            proc = subprocess.Popen(rf.pmemd_argv(t.path, "daemon"), cwd=rf.REPO, env=rf.pmemd_env(str(bindir)),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                deadline = time.monotonic() + 120
                while "first pass " not in log.read_text() and time.monotonic() < deadline:
                    assert proc.poll() is None, log.read_text()
                    time.sleep(0.1)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
        ran = calls(bindir)
        assert ran[:len(reference.calls)] == reference.calls, log.read_text()
        assert ran[len(reference.calls):] == ["blkid", "wipefs"], ran  # the failed mount: a look for the status
        assert t.read(t.boot_files[0]) == reference.boot_new[t.boot_files[0]]
        rf.unmount_all_under(t.path)


def _nth(ref: Reference, tool: str, occurrence: int) -> int:
    idx = [i for i, c in enumerate(ref.calls, 1) if c == tool]
    return idx[occurrence - 1]


# (when, tool, occurrence, delay): the kill lands relative to that command of the reference run
WRAPPER_POINTS = [
    ("after", "wipefs", 1, ""),      # observed; nothing written yet
    ("before", "mkfs.ext4", 1, ""),  # boot config written, reboot flagged, mkfs not started
    ("during", "mkfs.ext4", 1, ""),  # mkfs killed with pmemd (as systemd's control-group kill)
    ("during", "mkfs.ext4", 1, "0.003"),
    ("after", "mkfs.ext4", 1, ""),   # formatted, UUID not read yet
    ("after", "blkid", 3, ""),       # UUID read, not saved yet
    ("before", "mount", 1, ""),      # UUID saved, mount point made
]

# (host path, n): kill as soon as the n-th rewrite of that file is seen (a race, on purpose)
FILE_POINTS = [
    ("/var/lib/pmemd/state.json", 1),
    ("/var/lib/pmemd/state.json", 2),
    ("/var/lib/pmemd/state.json", 3),
    ("/var/lib/pmemd/state.json", 4),
    ("/etc/kernel/cmdline", 1),
    ("/" + rf.SDBOOT_ENTRY, 1),
]


def _fingerprint(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def kill_on_rewrite(proc: subprocess.Popen[str], path: Path, nth: int, timeout: float = 60) -> bool:
    """SIGKILL ``proc`` right after the n-th change of ``path``; False if it finished first."""
    last, seen = _fingerprint(path), 0
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        now = _fingerprint(path)
        if now != last:
            last, seen = now, seen + 1
            if seen == nth:
                # pmemd and the command it runs, as systemd kills the service's control group: a
                # mkfs left running would write its superblock after the checks below
                os.killpg(proc.pid, signal.SIGKILL)
                return True
    return False


@dataclass
class AfterKill:
    killed: bool
    outcome: str  # blank | ours | unfinished | foreign
    tmp_litter: list[str]


def check_after_kill(t: rf.HostTree, ref: Reference, killed: bool) -> AfterKill:
    # the state file is whole JSON pmemd can read, never half-written
    text = t.state_path.read_text()
    from pmemd import state as st

    st.loads(text)
    json.loads(text)
    # every boot file is the old or the new one, nothing in between
    for f in t.boot_files:
        assert t.read(f) in (ref.boot_old[f], ref.boot_new[f]), f"{f} is neither old nor new:\n{t.read(f)}"
    litter = sorted(str(p.relative_to(t.path)) for p in t.path.rglob(".*.pmemd-tmp-*"))
    sig = t.blkid()
    wipefs = json.loads(rf.sh("wipefs", "--no-act", "--json", t.loop.dev).stdout or '{"signatures": []}')
    owned = t.owned_fs()
    if "TYPE" not in sig and "PTTYPE" not in sig and not wipefs["signatures"]:
        outcome = "blank"
    elif owned and sig.get("UUID") == owned["uuid"] and not owned.get("complete", True):
        outcome = "unfinished"  # pmemd's own mkfs, not seen to finish
    elif owned and sig.get("UUID") == owned["uuid"] and sig.get("TYPE") == owned["type"]:
        outcome = "ours"
    else:
        outcome = "foreign"
    return AfterKill(killed, outcome, litter)


def converge_and_check(t: rf.HostTree, ref: Reference, after: AfterKill, fs: str = "ext4") -> None:
    uuid_before = t.blkid().get("UUID")
    digest_before = t.digest()
    run = rf.pmemd(t, "apply", "--json")
    effects = [s for s in run.side_effects() if s.startswith("run:")]
    mkfs_runs = [s for s in effects if "mkfs" in s or "wipefs -a" in s]
    if after.outcome == "unfinished":  # made again: wiped (its own UUID checked first), then mkfs
        assert [s.split()[1] for s in mkfs_runs] == ["wipefs", "mkfs.ext4"], run.text
        assert t.owned_fs() == {"uuid": t.blkid()["UUID"], "type": fs, "label": "fast", "complete": True}
        assert (t.owned_fs() or {}).get("uuid") == uuid_before  # the unfinished UUID is reused for the redo
    elif after.outcome == "blank":
        assert len(mkfs_runs) == 1, run.text
        sig = t.blkid()
        assert t.owned_fs() == {"uuid": sig["UUID"], "type": fs, "label": "fast", "complete": True}
    elif after.outcome == "ours":
        assert mkfs_runs == [], run.text
        assert t.blkid().get("UUID") == uuid_before
    else:  # a filesystem (or part of one) whose UUID never reached the state: refused, untouched
        assert mkfs_runs == [], run.text
        assert run.rc == 1
        msg = " ".join(i["message"] for i in run.issues())
        assert "/dev/pmem0" in msg and "on_foreign_data: wipe" in msg, msg
        assert t.digest() == digest_before
    # the boot side has converged in every case
    for f in t.boot_files:
        assert t.read(f) == ref.boot_new[f], f
    state = t.state()
    assert set(state["kernel_args"]) == {rf.TOKEN, "nokaslr"}
    assert state["pending_reboot"] is not None and state["pending_reboot"]["added"] == ["nokaslr"]
    assert t.p("/run/reboot-required").exists()
    assert (t.read("/run/reboot-required.pkgs") or "").split() == ["pmemd"]
    plan = rf.pmemd(t, "plan", "--json")
    kinds = [a["kind"] for a in plan.json["actions"]]
    assert not {"set-kernel-args", "reboot", "mkfs", "mkdir"} & set(kinds), kinds
    if after.outcome != "foreign":
        assert kinds in (["mount", "verify-dax"], []), kinds  # DAX cannot work on a loop device


@pytest.mark.parametrize("command", ["apply", "daemon"])
@pytest.mark.parametrize("point", WRAPPER_POINTS, ids=[f"{w}-{tool}{n}{'-' + d if d else ''}"
                                                      for w, tool, n, d in WRAPPER_POINTS])
def test_sigkill_at_a_command(tmp_path: Path, reference: Reference, point: tuple[str, str, int, str],
                              command: str) -> None:
    when, tool, occurrence, delay = point
    bindir = tmp_path / "bin"
    make_wrappers(bindir)
    (bindir / "kill.plan").write_text(f"{when} {_nth(reference, tool, occurrence)} {delay}\n")
    for t in new_host(tmp_path):
        proc = start_apply(t, bindir, command)
        out, err = until_killed(proc)
        assert proc.returncode == -signal.SIGKILL, f"pmemd was not killed: {proc.returncode}\n{out}{err}"
        after = check_after_kill(t, reference, killed=True)
        print(f"SIGKILL of {command} {when} {tool} #{occurrence} {delay}: device {after.outcome}, "
              f"temp files {after.tmp_litter}")
        if (when, tool) in (("after", "mkfs.ext4"), ("after", "blkid")):
            assert after.outcome == "unfinished"  # the UUID was saved before mkfs, as unfinished
        if (when, tool) == ("before", "mount"):
            assert after.outcome == "ours"
        if (when, tool) in (("before", "mkfs.ext4"), ("after", "wipefs")):
            assert after.outcome == "blank"
        (bindir / "kill.plan").unlink()
        converge_and_check(t, reference, after)
        assert t.mounts() == []


@pytest.mark.parametrize("point", FILE_POINTS, ids=[f"{p.rsplit('/', 1)[-1][:20]}-{n}" for p, n in FILE_POINTS])
def test_sigkill_right_after_a_file_rewrite(tmp_path: Path, reference: Reference, point: tuple[str, int]) -> None:
    path, nth = point
    bindir = tmp_path / "bin"
    make_wrappers(bindir)
    for t in new_host(tmp_path):
        proc = start_apply(t, bindir)
        killed = kill_on_rewrite(proc, t.p(path), nth)
        proc.communicate(timeout=120)
        after = check_after_kill(t, reference, killed)
        print(f"SIGKILL after rewrite {nth} of {path}: killed={killed}, device {after.outcome}, "
              f"boot files {['new' if t.read(f) == reference.boot_new[f] else 'old' for f in t.boot_files]}, "
              f"temp files {after.tmp_litter}")
        converge_and_check(t, reference, after)
        assert t.mounts() == []


@rf.needs("mkfs.xfs")
def test_sigkill_after_xfs_mount_before_dax_check(tmp_path: Path) -> None:
    """xfs mounts without DAX on a loop device; a kill before the check leaves that mount. The
    next apply must not format or lose the filesystem; it reports the non-DAX mount."""
    bindir = tmp_path / "bin"
    make_wrappers(bindir)
    (bindir / "kill.plan").write_text("after 7\n")  # blkid wipefs blkid wipefs mkfs.xfs blkid mount
    for t in new_host(tmp_path, fs="xfs"):
        proc = start_apply(t, bindir)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL, out + err
        assert calls(bindir)[4:] == ["mkfs.xfs", "blkid", "mount"]
        assert t.mounts() == [str(t.p("/pmem/fast"))]
        uuid = t.owned_fs()["uuid"]  # type: ignore[index]
        (bindir / "kill.plan").unlink()
        run = rf.pmemd(t, "apply", "--json")
        assert run.rc == 1
        assert not [s for s in run.side_effects() if "mkfs" in s or "wipefs -a" in s]
        assert t.owned_fs()["uuid"] == uuid  # type: ignore[index]
        if t.mounts():  # pmemd did not record the mount as its own before it died
            msg = " ".join(i["message"] for i in run.issues())
            assert "/dev/pmem0 is mounted at /pmem/fast without DAX" in msg
        print(f"SIGKILL after the xfs mount: mount left={bool(t.mounts())}; next apply: "
              + "; ".join(i["message"] for i in run.issues()))
        rf.unmount_all_under(t.path)
        assert t.blkid()["UUID"] == uuid


# --- fsroot: the writes and path joins everything above relies on --------------------------------


def _root(tmp_path: Path) -> Any:
    from pmemd.fsroot import Root

    return Root(tmp_path)


def test_write_atomic_new_file_replace_and_backup(tmp_path: Path) -> None:
    root = _root(tmp_path)
    root.write_atomic("/etc/kernel/cmdline", "old\n", mode=0o600)
    target = tmp_path / "etc/kernel/cmdline"
    assert target.read_text() == "old\n"
    assert (target.stat().st_mode & 0o777) == 0o600
    assert not (tmp_path / "etc/kernel/cmdline~pmemd").exists()

    root.write_atomic("/etc/kernel/cmdline", "new\n")
    assert target.read_text() == "new\n"
    assert (tmp_path / "etc/kernel/cmdline~pmemd").read_text() == "old\n"
    assert (target.stat().st_mode & 0o777) == 0o644

    root.write_atomic("/etc/kernel/cmdline", "newer\n", backup=False)
    assert (tmp_path / "etc/kernel/cmdline~pmemd").read_text() == "old\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["cmdline", "cmdline~pmemd"]  # no temp files

    root.restore_backup("/etc/kernel/cmdline", existed=True)
    assert target.read_text() == "old\n"
    root.restore_backup("/etc/kernel/cmdline", existed=False)
    assert not target.exists()


@pytest.mark.parametrize("fail_in", ["fsync", "replace"])
def test_write_atomic_failure_keeps_old_content_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 fail_in: str) -> None:
    import os as fsroot_os

    root = _root(tmp_path)
    root.write_atomic("/var/lib/pmemd/state.json", '{"old": true}\n', backup=False)

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsroot_os, fail_in, boom)  # fsroot calls os.fsync / os.replace
    with pytest.raises(OSError, match="No space left"):
        root.write_atomic("/var/lib/pmemd/state.json", '{"new": true}\n', backup=False)
    monkeypatch.undo()
    assert (tmp_path / "var/lib/pmemd/state.json").read_text() == '{"old": true}\n'
    assert [p.name for p in (tmp_path / "var/lib/pmemd").iterdir()] == ["state.json"]


KILL_WRITER = r"""
import sys
from pmemd.fsroot import Root
root = Root(__import__("pathlib").Path(sys.argv[1]))
a, b = "a" * (4 << 20), "b" * (4 << 20)
print("ready", flush=True)
while True:
    root.write_atomic("/f", a)
    root.write_atomic("/f", b)
"""


def test_write_atomic_under_sigkill_is_old_or_new(tmp_path: Path) -> None:
    """A writer alternating two 4 MiB contents is killed at random moments: the file and its
    backup are always one whole content, never a mix or a truncated one."""
    rng = random.Random(20261125)  # noqa: S311  (kill timings, reproducible)
    root_dir = tmp_path / "w"
    root_dir.mkdir()
    whole = {"a" * (4 << 20), "b" * (4 << 20)}
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(root_dir)], cwd=rf.REPO,
                                env=rf.pmemd_env(), stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.01, 0.15))
        proc.kill()
        proc.wait()
        for name in ("f", "f~pmemd"):
            p = root_dir / name
            if p.exists():
                assert p.read_text() in whole, f"{name} is torn ({p.stat().st_size} bytes)"
    assert (root_dir / "f").exists()


def test_root_join_rejects_escapes(tmp_path: Path) -> None:
    from pmemd.fsroot import PathEscape

    root = _root(tmp_path)
    assert root.join("/etc/pmem.yaml") == tmp_path / "etc/pmem.yaml"
    assert root.join("//etc/./pmem.yaml") == tmp_path / "etc/pmem.yaml"
    for bad in ("/../etc/passwd", "/etc/../../etc/passwd", "/pmem/..", "/a/b/../../../x"):
        with pytest.raises(PathEscape, match=r"contains '\.\.'"):
            root.join(bad)
    with pytest.raises(PathEscape, match="absolute"):
        root.join("etc/pmem.yaml")
    # a symlink that leads out of the root is not followed by resolve()
    (tmp_path / "sys/bus/nd/devices").mkdir(parents=True)
    os.symlink("/sys/devices", tmp_path / "sys/bus/nd/devices/region0")
    with pytest.raises(PathEscape, match="resolves outside the root"):
        root.resolve("/sys/bus/nd/devices/region0")


def test_sysfs_link_out_of_the_tree_is_refused_not_followed(tmp_path: Path) -> None:
    """An absolute sysfs link (a badly captured tree) would make pmemd read this machine's
    sysfs: the CLI refuses with one line instead."""
    with rf.host_tree(tmp_path) as t:
        t.write_config(fs="ext4")
        link = t.p("/sys/bus/nd/devices/region0")
        link.unlink()
        os.symlink("/sys/devices/platform/e820_pmem/ndbus0/region0", link)
        blank = t.digest()
        run = rf.pmemd(t, "apply")
        assert run.rc == 1
        assert run.stderr.strip() == "pmemd: /sys/bus/nd/devices/region0 resolves outside the root " + str(t.path)
        assert t.digest() == blank
