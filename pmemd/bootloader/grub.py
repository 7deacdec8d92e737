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

from pmemd.bootloader import BootLoaderError, check, grubenv, has_tool
from pmemd.bootloader.syntax import grub_words, parse_default_grub, parse_grub_cfg
from pmemd.facts import BootConfig, BootEntry, Layout
from pmemd.fsroot import Root
from pmemd.parse import parse_mountinfo
from pmemd.trial import MARKER as TRIAL_MARKER
from pmemd.trial import PANIC_SECONDS, Support, grubenv_support

if TYPE_CHECKING:  # the effects (and ctypes) load only when a boot config is written
    from pmemd.effects import HostEffects

DROPIN = "/etc/default/grub.d/99-pmemd.cfg"
GRUB_DIR = "/boot/grub"
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


def render_slot_dropin() -> str:
    """The drop-in while a trial is armed: a literal ``${pmemd_args}`` that GRUB fills in at boot
    (``TRIAL_SCRIPT`` sets it to the committed tokens, or once to the trial's)."""
    return (
        f"{MARKER}: kernel arguments for emulated persistent memory, set at boot by\n"
        f"# {TRIAL_SCRIPT} (a trial boot is armed).\n"
        "# Edit /etc/pmem.yaml instead of this file; pmemd rewrites it.\n"
        f'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX \\{SLOT}"\n'
    )


def parse_dropin(text: str) -> tuple[str, ...]:
    """The tokens pmemd's own drop-in adds (what render_dropin wrote)."""
    env = parse_default_grub([("dropin", text)])
    return tuple(env.get("GRUB_CMDLINE_LINUX", "").split())


def default_grub_dropins(root: Root) -> list[str]:
    return [f"/etc/default/grub.d/{n}" for n in root.listdir("/etc/default/grub.d") if n.endswith(".cfg")]


# Trial boots (pmemd.trial) on GRUB: a grubenv state machine. While a trial is armed the drop-in
# puts a literal ${pmemd_args} on every kernel line; TRIAL_SCRIPT (run by update-grub after
# 00_header, so after load_env) sets it to the committed tokens, or, once, to the trial's: "try"
# becomes "trying" on disk before the kernel starts, and a "trying" GRUB finds again (the trial
# boot was reset before pmemd committed it) becomes "failed" and boots the committed ones.
# Outside a trial the layout is the plain drop-in: ``write`` (commit, disarm, any change)
# removes the script and the grubenv variables.
TRIAL_SCRIPT = "/etc/grub.d/01_pmemd"
SLOT = "${pmemd_args}"
GRUBENV = "/boot/grub/grubenv"
ENV_VARS = ("pmemd_state", "pmemd_try_args")


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


def trial_slot_args(tokens: tuple[str, ...]) -> tuple[str, ...]:
    """What the trial boot's ``${pmemd_args}`` holds: pmemd's new tokens, ``panic=``, the marker."""
    return (*tokens, f"panic={PANIC_SECONDS}", TRIAL_MARKER)


def grubenv_storage(root: Root, *, directory: str = GRUB_DIR, tool: str = "grub-editenv") -> Support:
    """Whether GRUB can write grubenv in ``directory``, judged from mountinfo and sysfs the way
    ``grub-probe --target=abstraction,fs`` would: LVM and MD RAID (diskfilter) it cannot."""
    if not has_tool(root, tool):
        return Support(False, f"{tool} (which arms the one-shot in grubenv) is not installed")
    mounts = parse_mountinfo(root.read_text("/proc/self/mountinfo") or "")
    holders = [m for m in mounts if m.mount_point == directory
               or directory.startswith(m.mount_point.rstrip("/") + "/")]
    if not holders:
        return Support(False, f"cannot tell which filesystem holds {directory} (no /proc/self/mountinfo entry)")
    m = max(holders, key=lambda e: len(e.mount_point))
    abstractions = []
    dm_uuid = root.read_text(f"/sys/dev/block/{m.device}/dm/uuid") or ""
    if dm_uuid.startswith("LVM-"):
        abstractions.append("lvm")
    if root.exists(f"/sys/dev/block/{m.device}/md"):
        abstractions.append("diskfilter")
    return grubenv_support(abstractions=tuple(abstractions), fs=m.fstype)


def expand_slot(entries: tuple[BootEntry, ...], cfg: str) -> tuple[BootEntry, ...]:
    """Entries with ``${pmemd_args}`` replaced by the committed tokens TRIAL_SCRIPT set in grub.cfg."""
    committed = _committed_in(cfg)
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
        sup = grubenv_storage(root)
        cfg = root.read_text(GRUB_CFG)
        if cfg is None:
            return BootConfig(self.name, detected_by, owned_file=DROPIN, owned_tokens=owned,
                              trial_ok=sup.ok, trial_why=sup.reason)
        entries = parse_grub_cfg(GRUB_CFG, cfg, grubenv(root).get("saved_entry"))
        if owned == (SLOT,):  # a trial is armed: the committed tokens are set by TRIAL_SCRIPT
            entries = expand_slot(entries, cfg)
            owned = _committed_in(cfg)
        cfg_mtime = root.mtime_ns(GRUB_CFG) or 0
        newer = [p for p in ["/etc/default/grub", *default_grub_dropins(root), TRIAL_SCRIPT]
                 if (root.mtime_ns(p) or 0) > cfg_mtime]
        notes = (f"{GRUB_CFG} is older than {', '.join(newer)}: update-grub has not run since they changed",
                 ) if newer else ()
        env = grubenv(root)
        armed = tuple(env.get("pmemd_try_args", "").split()) if env.get("pmemd_state") == "try" else None
        return BootConfig(self.name, detected_by, entries, notes, DROPIN, owned, trial_ok=sup.ok,
                          trial_why=sup.reason, trial_args=armed)

    def write(self, fx: HostEffects, *, desired: tuple[str, ...], remove: tuple[str, ...]) -> None:
        if desired:
            fx.write(DROPIN, render_dropin(desired))
        else:
            fx.remove(DROPIN)
        fx.remove(TRIAL_SCRIPT)  # no trial (any more): the plain drop-in alone
        self.regenerate(fx)
        env = grubenv(fx.root)
        if any(v in env for v in ENV_VARS):
            check(fx.run(["grub-editenv", GRUBENV, "unset", *ENV_VARS], chroot=True))

    def arm_trial(self, fx: HostEffects, *, committed: tuple[str, ...], tokens: tuple[str, ...]) -> None:
        try:
            script, try_args = render_trial_script(committed), trial_slot_args(tokens)
            _check_tokens(try_args)
        except ValueError as exc:
            raise BootLoaderError(str(exc)) from None
        fx.write(DROPIN, render_slot_dropin())
        fx.write(TRIAL_SCRIPT, script, mode=0o755)
        self.regenerate(fx)
        check(fx.run(arm_argv(GRUBENV, try_args), chroot=True))

    def regenerate(self, fx: HostEffects) -> None:
        check(fx.run(["update-grub"], chroot=True))


def _committed_in(cfg: str) -> tuple[str, ...]:
    """The committed tokens TRIAL_SCRIPT set in grub.cfg (the first top-level ``set pmemd_args=``)."""
    for raw in cfg.splitlines():
        words = grub_words(raw.strip())
        if words[:1] == ["set"] and len(words) > 1 and words[1].startswith("pmemd_args="):
            return tuple(" ".join(words[1:]).partition("=")[2].split())
    return ()
