"""Fedora/RHEL (GRUB with BLS entries): ``grubby --update-kernel=ALL``.

grubby drops every existing ``memmap=`` of an entry when one is added, so all of pmemd's tokens
go in one ``--args`` call; a foreign ``memmap=`` on such a host is refused by the planner before
this runs. ``--update-kernel=ALL`` also updates ``GRUB_CMDLINE_LINUX`` in /etc/default/grub,
grubenv's ``kernelopts`` and ``/etc/kernel/cmdline``, so new kernels keep the arguments.
"""

from __future__ import annotations

from pmemd.bootloader import bls_files, check, grubenv, kernel_cmdline_note
from pmemd.bootloader.syntax import parse_bls_entries, parse_grub_cfg
from pmemd.effects import HostEffects
from pmemd.facts import BootConfig, BootEntry, Layout
from pmemd.fsroot import Root

SBIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin")


def has_tool(root: Root, name: str) -> bool:
    return any(root.exists(f"{d}/{name}") for d in SBIN_DIRS)


def read_rhel_entries(root: Root) -> tuple[BootEntry, ...]:
    """The BLS entries of ``/boot/loader/entries``, or the entries of ``/boot/grub2/grub.cfg``."""
    env = grubenv(root)
    bls = bls_files(root, "/boot/loader/entries")
    if bls:
        return parse_bls_entries(bls, env, env.get("saved_entry"))
    cfg = "/boot/grub2/grub.cfg"
    return parse_grub_cfg(cfg, root.read_text(cfg) or "", env.get("saved_entry"))


class Grubby:
    name = Layout.GRUBBY

    def detect(self, root: Root) -> str | None:
        if not has_tool(root, "grubby"):
            return None
        if root.exists("/boot/grub2/grub.cfg") or root.exists("/boot/grub2/grubenv"):
            return "/boot/grub2 and grubby (Fedora/RHEL GRUB with BLS)"
        return None

    def read(self, root: Root, *, detected_by: str) -> BootConfig:
        notes, problems = kernel_cmdline_note(root)
        return BootConfig(self.name, detected_by, read_rhel_entries(root), notes, problems=problems)

    def write(self, fx: HostEffects, *, desired: tuple[str, ...], remove: tuple[str, ...]) -> None:
        argv = ["grubby", "--update-kernel=ALL"]
        gone = [t for t in remove if t not in desired]
        if gone:
            argv.append("--remove-args=" + " ".join(gone))
        if desired:
            argv.append("--args=" + " ".join(desired))
        if len(argv) > 2:
            check(fx.run(argv, chroot=True))

    def regenerate(self, fx: HostEffects) -> None:
        """Nothing to regenerate: grubby edits the entries directly."""
