"""Everything an apply does to a host goes through one ``Effects`` object.

``HostEffects`` does it: file writes through ``Root``, processes through the runner, the DAX probe
file, journal entries, the state file. ``DryRunEffects`` records the same calls and does nothing,
so ``pmemd apply --dry-run`` is the same code as a real apply with the other object passed.
Reading is not an effect: handlers read files through ``Root`` and run read-only commands with
``query`` in both modes. A check that only makes sense after a real change (reading a boot config
back, blkid after mkfs, STATX_ATTR_DAX on a new mount) is passed to ``confirm``, which a dry run
skips: nothing was changed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pmemd import state as st
from pmemd.fsroot import Root
from pmemd.journal import Journal
from pmemd.runner import Result, Runner

STATX_ATTR_DAX = 0x00200000
DAX_PROBE = ".pmemd-dax-probe"


def statx_dax(path: str) -> bool | None:
    """STATX_ATTR_DAX of a file via glibc's statx(); None when statx cannot tell."""
    import ctypes  # here, not at the top: ctypes.util loads subprocess and shutil, and only this needs it
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if not hasattr(libc, "statx"):
        return None
    buf = ctypes.create_string_buffer(256)
    at_fdcwd, at_symlink_nofollow, statx_basic = -100, 0x100, 0x7FF
    rc = libc.statx(at_fdcwd, os.fsencode(path), at_symlink_nofollow, statx_basic, buf)
    if rc != 0:
        return None
    attributes = int.from_bytes(buf.raw[8:16], "little")
    mask = int.from_bytes(buf.raw[56:64], "little")
    if not mask & STATX_ATTR_DAX:
        return None
    return bool(attributes & STATX_ATTR_DAX)


@dataclass
class HostEffects:
    root: Root
    runner: Runner
    journal: Journal
    log: list[str] = field(default_factory=list)  # what was done, in order
    written: list[tuple[str, bool]] = field(default_factory=list)  # (path, existed before) per write/remove
    modes: dict[str, int] = field(default_factory=dict)  # each changed file's mode before its first change
    recording = False

    def _argv(self, argv: Sequence[str], chroot: bool) -> list[str]:
        """Boot-loader and system tools act on the root's own files, so below a --root they run
        chrooted into it; device tools get root-joined paths instead."""
        if chroot and not self.root.is_host:
            return ["chroot", str(self.root.prefix), *argv]
        return list(argv)

    def query(self, argv: Sequence[str], *, timeout: float = 60.0, chroot: bool = False) -> Result:
        """A command that changes nothing (probes, calendar math): run in a dry run too."""
        return self.runner.run(self._argv(argv, chroot), timeout=timeout)

    def run(self, argv: Sequence[str], *, timeout: float = 300.0, chroot: bool = False) -> Result:
        args = self._argv(argv, chroot)
        self.log.append("run: " + " ".join(args))
        return self._run(args, timeout)

    def _run(self, args: list[str], timeout: float) -> Result:
        return self.runner.run(args, timeout=timeout)

    def host(self, path: str) -> str:
        """A host path as the tools on this machine must see it (below --root)."""
        return str(self.root.join(path))

    def _changing(self, path: str, existed: bool) -> None:
        self.written.append((path, existed))
        old = self.root.mode_of(path) if existed else None
        if old is not None:
            self.modes.setdefault(path, old)

    def write(self, path: str, text: str, *, mode: int = 0o644) -> None:
        self._changing(path, self.root.exists(path))
        self.log.append(f"write: {path}")
        self._do(lambda: self.root.write_atomic(path, text, mode=mode))

    def remove(self, path: str) -> None:
        """Remove a file, keeping its contents as ``path~pmemd`` so ``restore`` can undo it."""
        if self.root.exists(path):
            self._changing(path, True)
            self.log.append(f"remove: {path}")
            self._do(lambda: self._remove_with_backup(path))

    def _remove_with_backup(self, path: str) -> None:
        self.root.write_atomic(path + "~pmemd", self.root.read_text(path) or "", backup=False)
        self.root.remove(path)

    def discard(self, path: str) -> None:
        """Remove a file pmemd made (a backup), keeping nothing."""
        if self.root.exists(path):
            self.log.append(f"remove: {path}")
            self._do(lambda: self.root.remove(path))

    def restore(self, path: str, *, existed: bool) -> None:
        self._do(lambda: self.root.restore_backup(path, existed=existed, mode=self.modes.get(path)))

    def mkdir(self, path: str) -> None:
        self.log.append(f"mkdir: {path}")
        self._do(lambda: self.root.mkdir(path))

    def touch(self, path: str) -> None:
        self.log.append(f"touch: {path}")
        self._do(lambda: self.root.touch(path))

    def append_line(self, path: str, line: str) -> None:
        self.log.append(f"append: {path} {line}")
        self._do(lambda: self.root.append_line(path, line))

    def save_state(self, owned: st.Owned) -> None:
        self._do(lambda: self.root.write_atomic(st.STATE_FILE, st.dumps(owned), mode=0o644, backup=False))

    def event(self, action: str, message: str, *, priority: int, namespace: str | None = None,
              device: str | None = None, result: str | None = None, **fields: str) -> None:
        self._do(lambda: self.journal.event(action, message, priority=priority, namespace=namespace,
                                            device=device, result=result, **fields))

    def confirm(self, what: str, check: Callable[[], str | None]) -> str | None:
        """Run a check of a change just made; its problem, or None when all is well."""
        return check()

    def probe_dax(self, path: str) -> bool | None:
        """STATX_ATTR_DAX of a new file on the filesystem mounted at ``path``."""
        probe = f"{path}/{DAX_PROBE}"
        self.root.write_atomic(probe, "pmemd\n", backup=False)
        try:
            return statx_dax(self.host(probe))
        finally:
            self.root.remove(probe)

    def _do(self, thunk: Callable[[], object]) -> None:
        thunk()


@dataclass
class DryRunEffects(HostEffects):
    """Records what a real apply would do; changes nothing."""

    recording = True

    def _run(self, args: list[str], timeout: float) -> Result:
        return Result(tuple(args), 0, "", "")

    def confirm(self, what: str, check: Callable[[], str | None]) -> str | None:
        return None  # nothing was changed, so there is nothing to check

    def probe_dax(self, path: str) -> bool | None:
        self.log.append(f"probe: STATX_ATTR_DAX of a new file in {path}")
        return True

    def _do(self, thunk: Callable[[], object]) -> None:
        pass
