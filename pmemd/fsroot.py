"""``Root``: the one way pmemd touches a host path.

Every host path is written as if ``/`` were the host's root (``/etc/pmem.yaml``); ``Root`` maps it
below the root prefix given with ``--root`` and refuses ``..`` escapes. Writes are atomic: temp
file in the same directory, fsync, rename, fsync of the directory, and a backup of what they
replace.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from pmemd.frozen import frozen

# What one read of a host file may return. The largest files pmemd reads are mountinfo on a host
# with thousands of mounts (about 150 bytes a mount) and its own action log; procfs and sysfs
# files stat as size 0, so the cap is on the bytes read, not on st_size.
MAX_HOST_FILE = 16 << 20

# Symlinks below --root that lead out of it are refused, except into the kernel's own /proc: a
# captured tree used with loop devices links proc/self/mountinfo to the live one to see mounts.
_LIVE_PREFIXES = ("/proc/",)


class PathEscape(ValueError):
    """A host path that would leave the root prefix."""


class LockBusy(PathEscape):
    """Another pmemd kept the host lock longer than this one would wait."""


class HostFileError(PathEscape):
    """A host file pmemd refuses to read: not a regular file, above its size limit, a symlink
    loop, a symlink out of the root, or an I/O error. A PathEscape, so every caller that reports
    a path problem in one line reports this one the same way."""


def shown(path: str) -> str:
    """A path fit for a one-line message: control characters (a newline in a file name) escaped."""
    if path.isprintable():
        return path
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in path)


def file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink"),
                       (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "not a regular file"


def _os_problem(path: str, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return f"{shown(path)} is a symlink loop (or a chain of more than 40 links); fix or remove the link"
    if exc.errno == errno.ENAMETOOLONG:
        return f"{shown(path)}: a path or link target is too long"
    return f"{shown(path)} cannot be read: {exc.strerror or exc}"


@frozen
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

    def read_bytes(self, path: str, *, limit: int = MAX_HOST_FILE, live: bool = True) -> bytes | None:
        """The bytes of a regular file; None when it does not exist, is a directory or unreadable.

        Bounded: anything but a regular file (a FIFO would block forever, /dev/zero never ends)
        is refused before it is opened, and again after (O_NONBLOCK, fstat) in case it was
        swapped in between; more than ``limit`` bytes is refused. Below a root other than /, a
        symlink must resolve inside the root (``live``: or into the host's /proc). Refusals
        raise HostFileError naming the file, never showing its contents.
        """
        st = self._regular(path, live=live)
        if st is None:
            return None
        if st.st_size > limit:
            raise HostFileError(_too_large(path, limit))
        fd = self._open_regular(path)
        if fd is None:
            return None
        try:
            data = _read_capped(fd, path, limit)
        finally:
            os.close(fd)
        if len(data) > limit:
            raise HostFileError(_too_large(path, limit))
        return data

    def _regular(self, path: str, *, live: bool) -> os.stat_result | None:
        """The stat of a regular file inside the root; None if absent or a directory."""
        try:
            st = os.stat(self.path(path))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return None
        except OSError as exc:
            raise HostFileError(_os_problem(path, exc)) from None
        if not self.is_host:
            self.check_inside(path, live=live)
        if stat.S_ISDIR(st.st_mode):
            return None
        if not stat.S_ISREG(st.st_mode):
            raise HostFileError(f"{shown(path)} is {file_kind(st.st_mode)}, not a regular file; "
                                "pmemd does not read it: replace it with a file or remove it")
        return st

    def _open_regular(self, path: str) -> int | None:
        try:
            fd = os.open(self.path(path), os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError):
            return None
        except OSError as exc:
            raise HostFileError(_os_problem(path, exc)) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise HostFileError(f"{shown(path)} changed into something other than a regular "
                                "file while pmemd opened it; pmemd does not read it")
        return fd

    def read_kernel_log(self, path: str = "/dev/kmsg", *, limit: int = MAX_HOST_FILE) -> str | None:
        """The kernel log device read without blocking, at most ``limit`` bytes (a regular file
        in captured trees). The one reader that accepts a character device."""
        try:
            fd = os.open(self.path(path), os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:
            return None
        chunks: list[bytes] = []
        got = 0
        try:
            while got < limit:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    break
                except OSError as exc:  # EPIPE: a record was overwritten while reading; go on
                    if exc.errno == errno.EPIPE:
                        continue
                    break
                if not chunk:
                    break
                chunks.append(chunk if chunk.endswith(b"\n") else chunk + b"\n")
                got += len(chunk)
        finally:
            os.close(fd)
        return b"".join(chunks).decode("utf-8", errors="replace")

    def read_text(self, path: str, *, limit: int = MAX_HOST_FILE) -> str | None:
        """File contents (see ``read_bytes``), or None when the file does not exist (or is unreadable)."""
        data = self.read_bytes(path, limit=limit)
        return None if data is None else data.decode("utf-8", errors="surrogateescape")

    def read_tail(self, path: str, *, limit: int = 1 << 20) -> str | None:
        """The last ``limit`` bytes of a regular file, from its first whole line (append-only logs)."""
        st = self._regular(path, live=False)
        if st is None:
            return None
        if st.st_size <= limit:
            return self.read_text(path, limit=limit)
        fd = self._open_regular(path)
        if fd is None:
            return None
        try:
            data = os.pread(fd, limit, st.st_size - limit)
        except OSError as exc:
            raise HostFileError(_os_problem(path, exc)) from None
        finally:
            os.close(fd)
        return data.decode("utf-8", errors="surrogateescape").partition("\n")[2]

    def check_inside(self, path: str, *, live: bool = False) -> None:
        """Raise HostFileError if ``path``'s symlinks lead out of the root (``live``: or into the
        host's /proc). Nothing to check when the root is /."""
        if self.is_host:
            return
        resolved = os.path.realpath(self.path(path))
        inside = os.path.realpath(self.prefix)
        if resolved == inside or resolved.startswith(inside.rstrip("/") + "/"):
            return
        if live and resolved.startswith(_LIVE_PREFIXES):
            return
        raise HostFileError(f"{shown(path)} is a symlink that leads out of the root {self.prefix}; "
                            "pmemd does not follow it: make the link relative to the tree or copy the file")

    def read_attr(self, path: str) -> str | None:
        """A one-line sysfs attribute, stripped; None if absent or unreadable."""
        text = self.read_text(path)
        return None if text is None else text.strip()

    def readlink(self, path: str) -> str | None:
        """Where a symlink points (as written), or None when ``path`` is no symlink."""
        try:
            return os.readlink(self.path(path))
        except OSError:
            return None

    def exists(self, path: str) -> bool:
        return os.path.lexists(self.path(path))

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(self.path(path))

    def listdir(self, path: str) -> list[str]:
        """Sorted entry names; empty when the directory does not exist.

        A symlink loop or an I/O error raises HostFileError: an unreadable directory of host
        facts is reported, not taken as an empty one.
        """
        try:
            return sorted(os.listdir(self.path(path)))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return []
        except OSError as exc:
            raise HostFileError(_os_problem(path, exc)) from None

    def stat(self, path: str, *, follow: bool = True) -> os.stat_result | None:
        """os.stat below the root; None when it cannot be had (absent, a symlink loop, EIO)."""
        try:
            return os.stat(self.path(path), follow_symlinks=follow)
        except OSError:
            return None

    def mtime_ns(self, path: str) -> int | None:
        st = self.stat(path)
        return None if st is None else st.st_mtime_ns

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
        """Replace ``path`` atomically; keep the old contents as ``path~pmemd``. A backup is never
        executable: run-parts style directories (``/etc/grub.d``) would run it."""
        target = self.join(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if backup and target.exists():
            old = target.read_bytes()
            self._write_file(target.with_name(target.name + "~pmemd"), old, mode & 0o666)
        self._write_file(target, data.encode("utf-8", errors="surrogateescape"), mode)

    def append_line(self, path: str, line: str, *, mode: int = 0o644, rotate_at: int | None = None) -> None:
        """Append one line with O_APPEND and fsync (for append-only logs). With `rotate_at`, a
        file that would grow beyond that many bytes is first renamed to ``<path>.1`` (replacing
        the previous one), so the log holds between ``rotate_at`` and twice that."""
        target = self.join(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = (line.rstrip("\n") + "\n").encode()
        if rotate_at is not None:
            with contextlib.suppress(FileNotFoundError):
                if target.stat().st_size + len(data) > rotate_at:
                    os.replace(target, target.with_name(target.name + ".1"))
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def lock(self, path: str, *, wait: float) -> Iterator[None]:
        """Hold an exclusive flock on ``path`` (created if missing) for the ``with`` block, so
        two pmemd processes (the daemon, ``pmemd apply``) never change the host at once. Waits
        at most ``wait`` seconds for the other one to finish."""
        target = self.join(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LockBusy(f"another pmemd (the daemon, or an apply, reset or rollback) has held {path} "
                                       f"for more than {wait:.0f} s; try again when it has finished") from None
                    time.sleep(0.2)
            yield
        finally:
            os.close(fd)

    def mode_of(self, path: str) -> int | None:
        try:
            return self.join(path).stat().st_mode & 0o7777
        except OSError:
            return None

    def restore_backup(self, path: str, *, existed: bool, mode: int | None = None) -> None:
        """Undo ``write_atomic``: put the backup back (with ``mode``, the file's mode before the
        change), or remove a file that did not exist."""
        target = self.join(path)
        bak = target.with_name(target.name + "~pmemd")
        if existed and bak.exists():
            if mode is not None:
                os.chmod(bak, mode)
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


def _read_capped(fd: int, path: str, limit: int) -> bytes:
    """Up to ``limit`` + 1 bytes (one more than allowed tells the caller it was too large)."""
    chunks: list[bytes] = []
    got = 0
    try:
        while got <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - got))  # sysfs and procfs files are small
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except BlockingIOError:
        raise HostFileError(f"{shown(path)} would block; pmemd reads only regular files") from None
    except OSError as exc:
        raise HostFileError(_os_problem(path, exc)) from None
    return b"".join(chunks)


def _too_large(path: str, limit: int) -> str:
    amount = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"
    return (f"{shown(path)} is larger than {amount}, the most pmemd reads from this file; "
            "it is not what pmemd expects there")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
