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
from pmemd.bootloader.syntax import grub_words, parse_default_grub, parse_grub_cfg
from pmemd.facts import BootConfig, BootEntry, Layout
from pmemd.fsroot import Root

if TYPE_CHECKING:  # the effects (and ctypes) load only when a boot config is written
    from pmemd.effects import HostEffects

DROPIN = "/etc/default/grub.d/99-pmemd.cfg"
GRUB_CFG = "/boot/grub/grub.cfg"
MARKER = "# Managed by pmemd"


def _check_tokens(tokens: tuple[str, ...]) -> str:
    """The tokens joined by spaces, each checked to be safe inside GRUB double quotes."""
    for tok in tokens:
        if not re.fullmatch(r"[A-Za-z0-9_.,!=:-]+", tok):
            raise ValueError(f"refusing to write unsafe kernel argument {tok!r}")
    return " ".join(tokens)


def render_dropin(tokens: tuple[str, ...]) -> str:
    """pmemd's own ``/etc/default/grub.d`` file: appends its tokens to GRUB_CMDLINE_LINUX.

    Tokens are canonical (``memmap=4G!12G``, ``nokaslr``): no ``$``, quote or backslash, so
    double quotes need no escaping and GRUB passes them through verbatim.
    """
    body = _check_tokens(tokens)
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


# Trial boots (pmemd.trial) on GRUB: a grubenv state machine, no update-grub per trial. With it,
# the drop-in puts a literal ${pmemd_args} on every kernel line (render_dropin does not write
# that slot yet: it writes the tokens themselves); TRIAL_SCRIPT (run by update-grub
# after 00_header, so after load_env) sets it to the committed tokens, or, once, to the trial's:
# "try" becomes "trying" on disk before the kernel starts, and a "trying" GRUB finds again (the
# trial boot was reset before pmemd committed it) becomes "failed" and boots the committed ones.
TRIAL_SCRIPT = "/etc/grub.d/01_pmemd"
SLOT = "${pmemd_args}"


def render_trial_script(committed: tuple[str, ...]) -> str:
    """``/etc/grub.d/01_pmemd``: the committed tokens and the trial state machine."""
    return (
        "#!/bin/sh\n"
        f"{MARKER}: the committed kernel arguments and the trial-boot state machine.\n"
        "# Edit /etc/pmem.yaml instead of this file; pmemd rewrites it.\n"
        "cat <<'EOF'\n"
        f'set pmemd_args="{_check_tokens(committed)}"\n'
        'if [ "${pmemd_state}" = try ]; then\n'
        "  set pmemd_state=trying\n"
        "  save_env pmemd_state\n"
        '  set pmemd_args="${pmemd_try_args}"\n'
        'elif [ "${pmemd_state}" = trying ]; then\n'
        "  set pmemd_state=failed\n"
        "  save_env pmemd_state\n"
        "fi\n"
        "EOF\n"
    )


def arm_argv(grubenv_path: str, trial_tokens: tuple[str, ...]) -> list[str]:
    """The grub-editenv call that makes the next boot (only) run ``trial_tokens``."""
    return ["grub-editenv", grubenv_path, "set", "pmemd_state=try", f"pmemd_try_args={_check_tokens(trial_tokens)}"]


def expand_slot(entries: tuple[BootEntry, ...], cfg: str) -> tuple[BootEntry, ...]:
    """Entries with ``${pmemd_args}`` replaced by the committed tokens TRIAL_SCRIPT set in grub.cfg
    (the first top-level ``set pmemd_args=``; the one inside the state machine is the trial's)."""
    committed: tuple[str, ...] = ()
    for raw in cfg.splitlines():
        words = grub_words(raw.strip())
        if words[:1] == ["set"] and len(words) > 1 and words[1].startswith("pmemd_args="):
            committed = tuple(" ".join(words[1:]).partition("=")[2].split())
            break
    return tuple(BootEntry(e.source, e.title, tuple(a for arg in e.args
                                                     for a in (committed if arg == SLOT else (arg,))), e.default)
                 for e in entries)


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
