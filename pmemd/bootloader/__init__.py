"""Boot-loader backends: one small interface, one module per boot-loader layout.

A backend writes pmemd's kernel-argument tokens into the boot configuration and regenerates
what the boot loader reads. It owns one named slot where the layout allows it (Debian's
``/etc/default/grub.d/99-pmemd.cfg``) and otherwise adds and removes exactly its own tokens. The
caller reads the next-boot arguments back through the observer and compares tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pmemd.fsroot import Root
from pmemd.runner import Result


class BackendError(RuntimeError):
    pass


@dataclass(frozen=True)
class Tools:
    """What a backend may do to the host; in a dry run these record instead of acting."""

    root: Root
    run: Callable[[Sequence[str]], Result]  # runs inside the root (chroot) when it is not /
    write: Callable[[str, str], None]  # atomic write with backup
    remove: Callable[[str], None]
    restore: Callable[[str, bool], None]  # (path, existed): put the backup back


class Backend(Protocol):
    name: str

    def apply(self, tools: Tools, *, desired: tuple[str, ...], remove: tuple[str, ...]) -> None:
        """Make the boot config carry ``desired`` and none of ``remove``; regenerate."""
        ...

    def regenerate(self, tools: Tools) -> None:
        """Re-run the generator after restoring backups."""
        ...


def check(result: Result) -> Result:
    if not result.ok:
        raise BackendError(result.describe())
    return result


def get_backend(layout: str) -> Backend:
    from pmemd.bootloader.grub import DebianGrub
    from pmemd.bootloader.grubby import Grubby
    from pmemd.bootloader.sdboot import SystemdBoot

    backends: dict[str, Backend] = {"grub": DebianGrub(), "grubby": Grubby(), "systemd-boot": SystemdBoot()}
    if layout in backends:
        return backends[layout]
    if layout == "grub2-mkconfig":
        raise BackendError(
            "grub2-mkconfig hosts without grubby are not supported: Fedora/RHEL grub2-mkconfig does "
            "not read /etc/default/grub.d, and pmemd does not rewrite /etc/default/grub. Install "
            "grubby (dnf install grubby), or set settings.bootloader")
    raise BackendError(f"no backend for boot-loader layout {layout!r}; set settings.bootloader")
