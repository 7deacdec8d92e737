"""GRUB whose generator reads only ``/etc/default/grub`` (upstream GRUB, Fedora, RHEL/CentOS 7-10).

The ``/etc/default/grub.d`` directory is a Debian patch, so here pmemd edits exactly its own
tokens inside ``GRUB_CMDLINE_LINUX`` of ``/etc/default/grub``: every other byte of the file stays
as it was, and removing pmemd's tokens gives back the file as it was before. Then it runs
``grub2-mkconfig -o TARGET``, TARGET being the grub.cfg this host's GRUB really reads:

- ``/boot/efi/EFI/<vendor>/grub.cfg`` on EL7 UEFI, where that file is the real config;
- ``/boot/grub2/grub.cfg`` on BIOS, and on Fedora >= 34 / EL9 UEFI, where the ESP file is a
  small stub that finds /boot and must never be overwritten;
- ``/boot/grub/grub.cfg`` where that is the one (a GRUB built with the upstream name).

With ``GRUB_ENABLE_BLSCFG=true`` the arguments live in the BLS entries: pmemd passes
``--update-bls-cmdline`` where this grub2-mkconfig has it (RHEL >= 9.3) and otherwise refuses,
asking for grubby.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pmemd.bootloader import BootLoaderError, check, kernel_cmdline_note
from pmemd.bootloader.grubby import read_rhel_entries
from pmemd.bootloader.syntax import parse_default_grub, parse_grub_cfg
from pmemd.facts import BootConfig, Layout
from pmemd.fsroot import Root

if TYPE_CHECKING:  # the effects (and ctypes) load only when a boot config is written
    from pmemd.effects import HostEffects

DEFAULT_GRUB = "/etc/default/grub"
_ASSIGN = re.compile(r"^(?P<head>GRUB_CMDLINE_LINUX=)(?P<q>[\"'])(?P<value>[^\"'$`\\\\]*)(?P=q)(?P<tail>.*)$")


def target(root: Root) -> tuple[str, str]:
    """(the grub.cfg GRUB reads, why that one)."""
    for vendor in root.listdir("/boot/efi/EFI"):
        cfg = f"/boot/efi/EFI/{vendor}/grub.cfg"
        text = root.read_text(cfg)
        if text is not None and not is_stub(text):
            return cfg, f"{cfg} is this UEFI host's real config (EL7 layout)"
    if root.exists("/boot/grub2/grub.cfg"):
        return "/boot/grub2/grub.cfg", "/boot/grub2/grub.cfg (BIOS, or UEFI with a stub on the ESP)"
    return "/boot/grub/grub.cfg", "/boot/grub/grub.cfg (no /boot/grub2)"


def is_stub(text: str) -> bool:
    """Fedora >= 34 / EL9 put a few lines on the ESP that ``configfile`` the real /boot config."""
    return "configfile" in text and "menuentry" not in text


def bls_enabled(root: Root) -> bool:
    text = root.read_text(DEFAULT_GRUB) or ""
    return parse_default_grub([(DEFAULT_GRUB, text)]).get("GRUB_ENABLE_BLSCFG") == "true"


def edit_cmdline_linux(text: str, *, desired: tuple[str, ...], remove: tuple[str, ...]) -> str:
    """``/etc/default/grub`` with pmemd's tokens in (the last) ``GRUB_CMDLINE_LINUX``: tokens of
    ``remove`` taken out with the space before them, missing ``desired`` ones appended. Pure;
    ValueError when that assignment is not a plain quoted string pmemd can edit exactly."""
    lines = text.split("\n")
    at = [i for i, ln in enumerate(lines) if ln.startswith("GRUB_CMDLINE_LINUX=")]
    if not at:
        raise ValueError(f"{DEFAULT_GRUB} has no GRUB_CMDLINE_LINUX= line; add GRUB_CMDLINE_LINUX=\"\"")
    m = _ASSIGN.match(lines[at[-1]])
    if m is None:
        raise ValueError(f"GRUB_CMDLINE_LINUX in {DEFAULT_GRUB} is not one plain quoted string (no $, "
                         "backslashes or nested quotes); pmemd edits only that form: simplify the line")
    gone = set(remove) - set(desired)
    value = _without(re.split(r"(\s+)", m["value"]), gone) if gone else m["value"]
    have = set(value.split())
    extra = [t for t in desired if t not in have]
    if extra:
        value = (value + " " if value.strip() else value) + " ".join(extra)
    lines[at[-1]] = f"{m['head']}{m['q']}{value}{m['q']}{m['tail']}"
    return "\n".join(lines)


def _without(parts: list[str], gone: set[str]) -> str:
    """Words (even indexes) and separators (odd) of ``parts`` without the words in ``gone``, each
    with the separator before it (after it, for the first word)."""
    parts = list(parts)
    out: list[str] = []
    for i, piece in enumerate(parts):
        if i % 2 == 0 and piece in gone:
            if out:
                out.pop()  # the separator before it
            elif i + 1 < len(parts):
                parts[i + 1] = ""  # the first word: drop the separator after it instead
            continue
        out.append(piece)
    return "".join(out)


TRIAL_WHY = "trial boots on the grub2-mkconfig layout are not implemented"


class Grub2Mkconfig:
    name = Layout.GRUB2_MKCONFIG

    def detect(self, root: Root) -> str | None:
        return "/boot/grub2/grub.cfg without grubby" if root.exists("/boot/grub2/grub.cfg") else None

    def read(self, root: Root, *, detected_by: str) -> BootConfig:
        notes, problems = kernel_cmdline_note(root)
        cfg, why = target(root)
        if bls_enabled(root):
            entries = read_rhel_entries(root)
            notes = (*notes, f"GRUB_ENABLE_BLSCFG=true: the arguments live in the BLS entries; grub2-mkconfig "
                     f"writes {cfg}")
        else:
            entries = parse_grub_cfg(cfg, root.read_text(cfg) or "", None)
            notes = (*notes, f"grub2-mkconfig writes {why}")
        return BootConfig(self.name, detected_by, entries, notes, problems=problems, trial_why=TRIAL_WHY)

    def write(self, fx: HostEffects, *, desired: tuple[str, ...], remove: tuple[str, ...]) -> None:
        argv = _mkconfig_argv(fx)  # refuses before anything is written
        text = fx.root.read_text(DEFAULT_GRUB)
        if text is None:
            raise BootLoaderError(f"{DEFAULT_GRUB} is missing; grub2-mkconfig reads the arguments from it")
        try:
            new = edit_cmdline_linux(text, desired=desired, remove=remove)
        except ValueError as exc:
            raise BootLoaderError(str(exc)) from None
        if new != text:
            fx.write(DEFAULT_GRUB, new)
        check(fx.run(argv, chroot=True))

    def arm_trial(self, fx: HostEffects, *, committed: tuple[str, ...], tokens: tuple[str, ...]) -> None:
        raise BootLoaderError(TRIAL_WHY)

    def regenerate(self, fx: HostEffects) -> None:
        check(fx.run(_mkconfig_argv(fx), chroot=True))


def _mkconfig_argv(fx: HostEffects) -> list[str]:
    argv = ["grub2-mkconfig", "-o", target(fx.root)[0]]
    if not bls_enabled(fx.root):
        return argv
    if "--update-bls-cmdline" not in fx.query(["grub2-mkconfig", "--help"], chroot=True).stdout:
        raise BootLoaderError("GRUB_ENABLE_BLSCFG=true and this grub2-mkconfig has no --update-bls-cmdline: the "
                              "arguments live in the BLS entries, which grubby edits. Install grubby (dnf install "
                              "grubby), or set settings.bootloader")
    return [*argv, "--update-bls-cmdline"]
