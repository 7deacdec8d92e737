"""Debian/Ubuntu GRUB: pmemd owns ``/etc/default/grub.d/99-pmemd.cfg`` and runs update-grub.

The drop-in appends pmemd's tokens to ``GRUB_CMDLINE_LINUX`` (all entries, recovery included).
``99-`` sorts it after what distributions and cloud images ship (e.g. Ubuntu's
``50-cloudimg-settings.cfg``, ``40-force-partuuid.cfg``), so a later file cannot overwrite the
variable without pmemd's tokens. The user's ``/etc/default/grub`` is never rewritten.
"""

from __future__ import annotations

from pmemd.bootcfg import render_grub_dropin
from pmemd.bootloader import Tools, check
from pmemd.observe import GRUB_DROPIN


class DebianGrub:
    name = "grub"

    def apply(self, tools: Tools, *, desired: tuple[str, ...], remove: tuple[str, ...]) -> None:
        if desired:
            tools.write(GRUB_DROPIN, render_grub_dropin(desired))
        else:
            tools.remove(GRUB_DROPIN)
        self.regenerate(tools)

    def regenerate(self, tools: Tools) -> None:
        check(tools.run(["update-grub"]))
