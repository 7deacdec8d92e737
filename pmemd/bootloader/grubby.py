"""Fedora/RHEL (GRUB with BLS entries): ``grubby --update-kernel=ALL``.

The real grubby (the grubby-bls script) drops every ``memmap=`` of an entry when one is added,
and keeps all of them when they come in one call. So pmemd passes its own tokens and every
``memmap=`` it did not set (unchanged) in one ``--args``; it removes its stale tokens by exact
value (``--remove-args=memmap=1G!5G`` touches that token only). ``--update-kernel=ALL`` also
updates ``GRUB_CMDLINE_LINUX`` in /etc/default/grub, grubenv's ``kernelopts`` (RHEL 8) and
``/etc/kernel/cmdline``, so kernels installed later keep the arguments. This behaviour was
measured by running the real script (see tests/helpers.py, FakeGrubby, which follows it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pmemd.bootloader import BootLoaderError, bls_files, check, grubenv, has_tool, kernel_cmdline_note
from pmemd.bootloader.syntax import parse_bls_entries, parse_grub_cfg
from pmemd.facts import BootConfig, BootEntry, Layout
from pmemd.fsroot import Root

if TYPE_CHECKING:  # the effects (and ctypes) load only when a boot config is written
    from pmemd.effects import HostEffects

def read_rhel_entries(root: Root) -> tuple[BootEntry, ...]:
    """The BLS entries of ``/boot/loader/entries``, or the entries of ``/boot/grub2/grub.cfg``."""
    env = grubenv(root)
    bls = bls_files(root, "/boot/loader/entries")
    if bls:
        return parse_bls_entries(bls, env, env.get("saved_entry"))
    cfg = "/boot/grub2/grub.cfg"
    return parse_grub_cfg(cfg, root.read_text(cfg) or "", env.get("saved_entry"))


def foreign_memmap(entries: tuple[BootEntry, ...], *, mine: tuple[str, ...]) -> tuple[str, ...]:
    """The ``memmap=`` tokens pmemd did not set, which must go into the same grubby call as its
    own to survive it. They must be the same on every entry: one ``--update-kernel=ALL`` call
    would otherwise copy one entry's reservation onto the others."""
    per_entry = {tuple(t for t in e.args if t.startswith("memmap=") and t not in mine) for e in entries}
    if len(per_entry) > 1:
        shown = "; ".join(" ".join(p) or "(none)" for p in sorted(per_entry))
        raise BootLoaderError(f"the boot entries carry different memmap= arguments that pmemd did not set "
                              f"({shown}); grubby would drop them when pmemd adds its own. Make them the "
                              "same on every entry (grubby --update-kernel=ALL --args=...), or remove them")
    return next(iter(per_entry), ())


TRIAL_WHY = "trial boots through grubby (a --copy-default entry booted once with grub2-reboot) are not implemented"


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
        return BootConfig(self.name, detected_by, read_rhel_entries(root), notes, problems=problems,
                          trial_why=TRIAL_WHY)

    def write(self, fx: HostEffects, *, desired: tuple[str, ...], remove: tuple[str, ...]) -> None:
        argv = ["grubby", "--update-kernel=ALL"]
        gone = [t for t in remove if t not in desired]
        if gone:
            argv.append("--remove-args=" + " ".join(gone))
        if desired:
            keep = foreign_memmap(read_rhel_entries(fx.root), mine=(*desired, *remove)) if any(
                t.startswith("memmap=") for t in desired) else ()
            argv.append("--args=" + " ".join((*keep, *desired)))
        if len(argv) > 2:
            check(fx.run(argv, chroot=True))

    def arm_trial(self, fx: HostEffects, *, committed: tuple[str, ...], tokens: tuple[str, ...]) -> None:
        raise BootLoaderError(TRIAL_WHY)

    def regenerate(self, fx: HostEffects) -> None:
        """Nothing to regenerate: grubby edits the entries directly."""
