"""``Root``: the one way pmemd touches a host path.

Every host path is written as if ``/`` were the host's root (``/etc/pmem.yaml``); ``Root`` maps it
below the root prefix given with ``--root`` and refuses ``..`` escapes. Writes are atomic: temp
file in the same directory, fsync, rename, fsync of the directory, and a backup of what they
replace.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class PathEscape(ValueError):
    """A host path that would leave the root prefix."""


@dataclass(frozen=True)
class Root:
    prefix: Path = Path("/")

    @property
    def is_host(self) -> bool:
        return str(self.prefix) == "/"

    def path(self, path: str) -> str:
        """Map an absolute host path below the root prefix (as a string)."""
        if not path.startswith("/"):
            raise PathEscape(f"host paths are absolute, got {path!r}")
        if "/.." in path and ".." in path.split("/"):
            raise PathEscape(f"host path {path!r} contains '..'")
        pfx = str(self.prefix)
        return path if pfx == "/" else pfx + path

    def join(self, path: str) -> Path:
        """Map an absolute host path below the root prefix."""
        return Path(self.path(path))

    def host_path(self, real: Path) -> str:
        """The host path (``/dev/pmem0``) of a path below the prefix."""
        rel = Path(os.path.normpath(real)).relative_to(self.prefix)
        return "/" + rel.as_posix() if rel.as_posix() != "." else "/"

    def resolve(self, path: str) -> Path:
        """Resolve symlinks, keeping the result inside the root (sysfs links are relative)."""
        real = Path(os.path.realpath(self.join(path)))
        if not self.is_host and not real.is_relative_to(Path(os.path.realpath(self.prefix))):
            raise PathEscape(f"{path} resolves outside the root {self.prefix}")
        return real

    def read_text(self, path: str) -> str | None:
        """File contents, or None when the file does not exist (or is unreadable)."""
        try:
            with open(self.path(path), encoding="utf-8", errors="surrogateescape") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError):
            return None

    def read_attr(self, path: str) -> str | None:
        """A one-line sysfs attribute, stripped; None if absent or unreadable."""
        text = self.read_text(path)
        return None if text is None else text.strip()

    def exists(self, path: str) -> bool:
        return os.path.lexists(self.path(path))

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(self.path(path))

    def listdir(self, path: str) -> list[str]:
        """Sorted entry names; empty when the directory does not exist."""
        try:
            return sorted(os.listdir(self.path(path)))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return []

    def stat(self, path: str, *, follow: bool = True) -> os.stat_result | None:
        try:
            return os.stat(self.path(path), follow_symlinks=follow)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def mtime_ns(self, path: str) -> int | None:
        st = self.stat(path)
        return None if st is None else st.st_mtime_ns

    def is_block_device(self, path: str) -> bool:
        st = self.stat(path)
        return st is not None and stat.S_ISBLK(st.st_mode)

    def symlinks_on_path(self, path: str) -> list[str]:
        """Host paths of existing symlinks among ``path`` and its parents."""
        found: list[str] = []
        current = ""
        for part in [p for p in path.split("/") if p]:
            current += "/" + part
            real = self.join(current)
            if real.is_symlink():
                found.append(current)
            elif not real.exists():
                break
        return found

    # --- writes -------------------------------------------------------------------------

    def write_atomic(self, path: str, data: str, *, mode: int = 0o644, backup: bool = True) -> None:
        """Replace ``path`` atomically; keep the old contents as ``path~pmemd``."""
        target = self.join(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if backup and target.exists():
            old = target.read_bytes()
            self._write_file(target.with_name(target.name + "~pmemd"), old, mode)
        self._write_file(target, data.encode("utf-8", errors="surrogateescape"), mode)

    def append_line(self, path: str, line: str, *, mode: int = 0o644) -> None:
        """Append one line with O_APPEND and fsync (for append-only logs)."""
        target = self.join(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode)
        try:
            os.write(fd, (line.rstrip("\n") + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def restore_backup(self, path: str, *, existed: bool) -> None:
        """Undo ``write_atomic``: put the backup back, or remove a file that did not exist."""
        target = self.join(path)
        bak = target.with_name(target.name + "~pmemd")
        if existed and bak.exists():
            os.replace(bak, target)
            _fsync_dir(target.parent)
        elif not existed:
            self.remove(path)

    def remove(self, path: str) -> bool:
        target = self.join(path)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(target.parent)
        return True

    def mkdir(self, path: str, *, mode: int = 0o755) -> None:
        self.join(path).mkdir(parents=True, exist_ok=True, mode=mode)

    def touch(self, path: str) -> None:
        target = self.join(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()

    @staticmethod
    def _write_file(target: Path, data: bytes, mode: int) -> None:
        tmp = target.with_name(f".{target.name}.pmemd-tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            with contextlib.closing(os.fdopen(fd, "wb", closefd=False)) as f:
                f.write(data)
                f.flush()
            os.fchmod(fd, mode)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        os.close(fd)
        try:
            os.replace(tmp, target)
        except BaseException:  # e.g. EBUSY: the target is a bind mount; EISDIR
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def walk_files(root: Root, path: str) -> Iterator[str]:
    """Host paths of regular files directly in ``path`` (sorted)."""
    for name in root.listdir(path):
        full = f"{path.rstrip('/')}/{name}"
        if root.join(full).is_file():
            yield full
