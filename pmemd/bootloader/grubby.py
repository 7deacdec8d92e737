"""Fedora/RHEL (GRUB with BLS entries): ``grubby --update-kernel=ALL``.

grubby drops every existing ``memmap=`` of an entry when one is added, so all of pmemd's tokens
go in one ``--args`` call; a foreign ``memmap=`` on such a host is refused by the planner before
this runs. ``--update-kernel=ALL`` also updates ``GRUB_CMDLINE_LINUX`` in /etc/default/grub,
grubenv's ``kernelopts`` and ``/etc/kernel/cmdline``, so new kernels keep the arguments.
"""

from __future__ import annotations

from pmemd.bootloader import Tools, check


class Grubby:
    name = "grubby"

    def apply(self, tools: Tools, *, desired: tuple[str, ...], remove: tuple[str, ...]) -> None:
        argv = ["grubby", "--update-kernel=ALL"]
        gone = [t for t in remove if t not in desired]
        if gone:
            argv.append("--remove-args=" + " ".join(gone))
        if desired:
            argv.append("--args=" + " ".join(desired))
        if len(argv) > 2:
            check(tools.run(argv))

    def regenerate(self, tools: Tools) -> None:
        """Nothing to regenerate: grubby edits the entries directly."""
