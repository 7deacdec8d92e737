"""Faults of a real host (tier 3: real mounts and mkfs): a full state directory, a read-only /boot,
a boot-loader generator that fails or times out, a mkfs that fails half-way, journald going away.
Each leaves the host as it was or converging on the next pass (pmemd's own tokens and
filesystems recorded, never orphaned), exits 1 with one line per error, and never a traceback.
SIGKILL at each step of apply and of the daemon's first pass: tests/test_root_kill.py."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import rootfixtures as rf
from helpers import REPO, FakeUpdateGrub, HostTree, RecordingRunner, copy_fixture, in_root

from pmemd import cli

pytestmark = rf.pytestmark_root
EXAMPLE = (REPO / "examples/pmem.yaml").read_text()
Host = tuple[HostTree, FakeUpdateGrub, list[Path]]


@pytest.fixture
def host(tmp_path: Path, runner: RecordingRunner) -> Iterator[Host]:
    """A Debian tree with the example config; ``mounts`` made by the test are undone at the end."""
    t = copy_fixture("debian13-qemu-plain", tmp_path / "host")
    t.config(EXAMPLE)
    fake = FakeUpdateGrub(t.path)
    runner.expect(*in_root(t.path, "update-grub"), handler=fake)
    mounted: list[Path] = []
    try:
        yield t, fake, mounted
    finally:
        for m in reversed(mounted):
            rf.sh("umount", str(m), check=False)


def apply(t: HostTree, runner: RecordingRunner, monkeypatch: pytest.MonkeyPatch,
          capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    monkeypatch.setattr(cli, "SubprocessRunner", lambda **kw: runner)
    rc = cli.main(["--root", str(t.path), "apply"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def boot_files(t: HostTree) -> dict[str, str | None]:
    return {p: (t.read(p) if t.exists(p) else None)
            for p in ("/boot/grub/grub.cfg", "/etc/default/grub", "/etc/default/grub.d/99-pmemd.cfg")}


def test_a_full_state_directory_changes_nothing(host: Host, runner: RecordingRunner,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    t, fake, mounted = host
    state_dir = t.p("/var/lib/pmemd")
    state_dir.mkdir(parents=True, exist_ok=True)
    rf.sh("mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(state_dir))
    mounted.append(state_dir)
    rf.sh("dd", "if=/dev/zero", f"of={state_dir}/filler", "bs=4k", "count=8", check=False)
    before = boot_files(t)
    rc, out, err = apply(t, runner, monkeypatch, capsys)
    assert rc == 1, out + err
    assert "[failed] boot config (grub)" in out, out + err and "No space left on device" in out
    assert boot_files(t) == before and fake.runs == 0  # nothing written before the state could be saved


def test_a_read_only_boot_restores_the_boot_config(host: Host, runner: RecordingRunner,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    t, fake, mounted = host
    boot = t.p("/boot")
    rf.sh("mount", "--bind", str(boot), str(boot))
    mounted.append(boot)
    rf.sh("mount", "-o", "remount,bind,ro", str(boot))
    before = boot_files(t)
    rc, out, _ = apply(t, runner, monkeypatch, capsys)
    assert rc == 1 and fake.runs >= 1
    assert "cannot create /boot/grub/grub.cfg.new: Read-only file system" in out
    assert "the previous boot config was restored" in out or "keeps counting" in out
    assert boot_files(t) == before  # the drop-in written before update-grub is gone again


def test_a_generator_that_times_out_is_rolled_back(tmp_path: Path, runner: RecordingRunner,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The runner ends a hung update-grub at its timeout with exit 124 (tests/test_runner.py);
    pmemd then treats it like any failed generator."""
    t = copy_fixture("debian13-qemu-plain", tmp_path / "host")
    t.config(EXAMPLE)
    runner.expect(*in_root(t.path, "update-grub"), returncode=124, stderr="timed out after 300 s")
    before = boot_files(t)
    rc, out, _ = apply(t, runner, monkeypatch, capsys)
    assert rc == 1 and "timed out after 300 s" in out
    assert boot_files(t) == before


# --- mkfs failing half-way, journald going away (real mkfs on a loop device) ------------------

@rf.needs("mkfs.ext4")
def test_a_mkfs_that_fails_half_way_is_made_again_by_the_next_pass(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """mkfs writes part of the filesystem and fails: pmemd recorded the UUID it chose as
    unfinished before mkfs ran, so the next apply recognises the half-written filesystem as its
    own, wipes it and makes it again; nothing else is ever formatted."""
    import shutil

    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "mkfs.ext4"
    real = shutil.which("mkfs.ext4")
    wrapper.write_text(f'#!/bin/sh\n# mkfs.ext4 that writes the filesystem, then part of it is lost and it fails\n'
                       f'for a in "$@"; do dev=$a; done\n{real} "$@" || exit\n'
                       'dd if=/dev/zero of="$dev" bs=1M seek=8 count=8 conv=notrunc status=none\n'
                       'echo "mkfs.ext4: Input/output error while writing out and closing file system" >&2\n'
                       'exit 1\n')
    wrapper.chmod(0o755)
    with rf.host_tree(tmp_path) as t:
        t.write_config(fs="ext4", label="fast")
        monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
        run = rf.pmemd(t, "apply", "--json")
        assert run.rc == 1 and "Traceback" not in run.text
        assert [(a["kind"], a["result"]) for a in run.actions()][:2] == [("mkfs", "failed"), ("mkdir", "skipped")]
        assert "Input/output error while writing out" in run.text
        half = t.owned_fs()
        assert half is not None and half["complete"] is False  # the UUID it chose, not seen to finish
        assert t.blkid().get("UUID") == half["uuid"]  # the half-written filesystem carries it

        monkeypatch.undo()
        again = rf.pmemd(t, "apply", "--json")
        runs = [s.split()[1:3] for s in again.side_effects() if s.startswith("run: ")]
        redo = [argv[0] for argv in runs if argv[0] == "mkfs.ext4" or argv == ["wipefs", "-a"]]
        assert redo == ["wipefs", "mkfs.ext4"], again.text  # its own unfinished filesystem, made again
        assert t.owned_fs() == {"uuid": half["uuid"], "type": "ext4", "label": "fast", "complete": True}
        assert t.blkid()["UUID"] == half["uuid"]


def test_journald_going_away_mid_pass_loses_no_entry(tmp_path: Path, runner: RecordingRunner,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The journal socket disappears (journald restarted or stopped) after pmemd looked for it:
    each entry that cannot be sent goes to stderr, the action log keeps every action."""
    import pmemd.journal

    def gone(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError(2, "No such file or directory")  # sendmsg to a removed socket

    monkeypatch.setattr(pmemd.journal, "_journal_sender", lambda: gone)
    t = copy_fixture("debian13-qemu-plain", tmp_path / "host")
    t.config(EXAMPLE)
    fake = FakeUpdateGrub(t.path)
    runner.expect(*in_root(t.path, "update-grub"), handler=fake)
    rc, out, err = apply(t, runner, monkeypatch, capsys)
    assert rc == 0, out + err
    assert "pmemd notice: set-kernel-args (ok)" in err and "pmemd notice: reboot (ok)" in err
    log = [json.loads(line)["action"] for line in (t.read("/var/lib/pmemd/actions.jsonl") or "").splitlines()]
    assert log == ["set-kernel-args", "reboot"]
