"""Debian/Ubuntu GRUB: pmemd owns ``/etc/default/grub.d/99-pmemd.cfg`` and runs update-grub.

The drop-in appends pmemd's tokens to ``GRUB_CMDLINE_LINUX`` (all entries, recovery included).
``99-`` sorts it after what distributions and cloud images ship (e.g. Ubuntu's
``50-cloudimg-settings.cfg``, ``40-force-partuuid.cfg``), so a later file cannot overwrite the
variable without pmemd's tokens. The user's ``/etc/default/grub`` is never rewritten. The
``grub.d`` directory is a Debian patch; GRUBs without it are the ``grub2-mkconfig`` layout.
Kernels installed later get the tokens too: ``/etc/kernel/postinst.d/zz-update-grub`` runs
update-grub on every kernel install.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pmemd.bootloader import check, grubenv
from pmemd.bootloader.syntax import parse_default_grub, parse_grub_cfg
from pmemd.facts import BootConfig, Layout
from pmemd.fsroot import Root

if TYPE_CHECKING:  # the effects (and ctypes) load only when a boot config is written
    from pmemd.effects import HostEffects

DROPIN = "/etc/default/grub.d/99-pmemd.cfg"
GRUB_CFG = "/boot/grub/grub.cfg"
MARKER = "# Managed by pmemd"


def render_dropin(tokens: tuple[str, ...]) -> str:
    """pmemd's own ``/etc/default/grub.d`` file: appends its tokens to GRUB_CMDLINE_LINUX.

    Tokens are canonical (``memmap=4G!12G``, ``nokaslr``): no ``$``, quote or backslash, so
    double quotes need no escaping and GRUB passes them through verbatim.
    """
    for tok in tokens:
        if not re.fullmatch(r"[A-Za-z0-9_.,!=:-]+", tok):
            raise ValueError(f"refusing to write unsafe kernel argument {tok!r}")
    body = " ".join(tokens)
    return (
        f"{MARKER}: kernel arguments for emulated persistent memory.\n"
        "# Edit /etc/pmem.yaml instead of this file; pmemd rewrites it.\n"
        f'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX {body}"\n'
    )


def parse_dropin(text: str) -> tuple[str, ...]:
    """The tokens pmemd's own drop-in adds (what render_dropin wrote)."""
    env = parse_default_grub([("dropin", text)])
    return tuple(env.get("GRUB_CMDLINE_LINUX", "").split())


def default_grub_dropins(root: Root) -> list[str]:
    return [f"/etc/default/grub.d/{n}" for n in root.listdir("/etc/default/grub.d") if n.endswith(".cfg")]


class DebianGrub:
    name = Layout.GRUB

    def detect(self, root: Root) -> str | None:
        if root.exists(GRUB_CFG) and root.exists("/etc/default/grub"):
            return "/etc/default/grub and /boot/grub/grub.cfg (Debian/Ubuntu GRUB)"
        return None

    def read(self, root: Root, *, detected_by: str) -> BootConfig:
        text = root.read_text(DROPIN)
        owned = parse_dropin(text) if text else ()
        cfg = root.read_text(GRUB_CFG)
        if cfg is None:
            return BootConfig(self.name, detected_by, owned_file=DROPIN, owned_tokens=owned)
        entries = parse_grub_cfg(GRUB_CFG, cfg, grubenv(root).get("saved_entry"))
        cfg_mtime = root.mtime_ns(GRUB_CFG) or 0
        newer = [p for p in ["/etc/default/grub", *default_grub_dropins(root)]
                 if (root.mtime_ns(p) or 0) > cfg_mtime]
        notes = (f"{GRUB_CFG} is older than {', '.join(newer)}: update-grub has not run since they changed",
                 ) if newer else ()
        return BootConfig(self.name, detected_by, entries, notes, DROPIN, owned)

    def write(self, fx: HostEffects, *, desired: tuple[str, ...], remove: tuple[str, ...]) -> None:
        if desired:
            fx.write(DROPIN, render_dropin(desired))
        else:
            fx.remove(DROPIN)
        self.regenerate(fx)

    def regenerate(self, fx: HostEffects) -> None:
        check(fx.run(["update-grub"], chroot=True))
