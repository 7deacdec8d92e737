"""Faults of a real host (tier 3: real mounts): a full state directory, a read-only /boot, a
boot-loader generator that fails or times out. Each leaves the boot config as it was (or pmemd's
own tokens recorded, never orphaned), exits 1 with one line per error, and never a traceback."""

from __future__ import annotations

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
