"""GRUB whose generator reads only ``/etc/default/grub`` (upstream GRUB, Fedora, RHEL 7-10).

The ``/etc/default/grub.d`` directory is a Debian patch, so the Debian layout's drop-in would be
ignored here, and pmemd does not rewrite ``/etc/default/grub``: this layout is detected and
read, and a write is refused with what to do instead.
"""

from __future__ import annotations

from pmemd.bootloader import BootLoaderError, kernel_cmdline_note
from pmemd.bootloader.grubby import read_rhel_entries
from pmemd.effects import HostEffects
from pmemd.facts import BootConfig, Layout
from pmemd.fsroot import Root

UNSUPPORTED = ("grub2-mkconfig hosts without grubby are not supported: Fedora/RHEL grub2-mkconfig does "
               "not read /etc/default/grub.d, and pmemd does not rewrite /etc/default/grub. Install "
               "grubby (dnf install grubby), or set settings.bootloader")


class Grub2Mkconfig:
    name = Layout.GRUB2_MKCONFIG

    def detect(self, root: Root) -> str | None:
        return "/boot/grub2/grub.cfg without grubby" if root.exists("/boot/grub2/grub.cfg") else None

    def read(self, root: Root, *, detected_by: str) -> BootConfig:
        notes, problems = kernel_cmdline_note(root)
        return BootConfig(self.name, detected_by, read_rhel_entries(root), notes, problems=problems)

    def write(self, fx: HostEffects, *, desired: tuple[str, ...], remove: tuple[str, ...]) -> None:
        raise BootLoaderError(UNSUPPORTED)

    def regenerate(self, fx: HostEffects) -> None:
        raise BootLoaderError(UNSUPPORTED)
