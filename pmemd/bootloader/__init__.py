"""Boot-loader layouts: one module per layout behind one small protocol.

A layout module owns everything about its layout: the evidence that detects it, reading the
files that hold the next-boot arguments (pure parsers in ``syntax``), writing pmemd's tokens,
regenerating what the boot loader reads, removing exactly pmemd's tokens (``write`` with
nothing desired), and, where the boot loader can boot an entry once and fall back by itself,
arming a trial boot (``arm_trial``; ``read`` says whether it can, and what is armed).
``LAYOUTS`` lists them in detection order; ``settings.bootloader`` can force
one. The rest of pmemd talks only to this protocol. Adding a layout is one new module and one
line in ``_registry``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from pmemd.bootloader.syntax import parse_grubenv, parse_kernel_cmdline_file
from pmemd.facts import BootConfig, Layout

if TYPE_CHECKING:
    from pmemd.effects import HostEffects
    from pmemd.fsroot import Root
    from pmemd.runner import Result


class BootLoaderError(RuntimeError):
    """A boot-config write or regenerate failed; the message says what to change."""


class BootLayout(Protocol):
    name: Layout

    def detect(self, root: Root) -> str | None:
        """The evidence that this host uses the layout (files, tools), or None."""
        ...

    def read(self, root: Root, *, detected_by: str) -> BootConfig:
        """The next-boot entries and the tokens pmemd's own slot holds."""
        ...

    def write(self, fx: HostEffects, *, desired: tuple[str, ...], remove: tuple[str, ...]) -> None:
        """Make the boot config carry ``desired`` and none of ``remove`` for every boot, then
        regenerate. Whatever a trial boot armed is removed (a commit, a disarm, any change)."""
        ...

    def arm_trial(self, fx: HostEffects, *, committed: tuple[str, ...], tokens: tuple[str, ...]) -> None:
        """Make the next boot only (see ``pmemd.trial``) run ``tokens`` instead of pmemd's
        ``committed`` ones, with ``panic=`` and the trial marker; the default stays as it is.
        Layouts without one-shot boots (``BootConfig.trial_ok`` False) raise BootLoaderError."""
        ...

    def regenerate(self, fx: HostEffects) -> None:
        """Re-run the generator (after restoring backups)."""
        ...


def _registry() -> tuple[BootLayout, ...]:
    from pmemd.bootloader.grub import DebianGrub
    from pmemd.bootloader.grub2_mkconfig import Grub2Mkconfig
    from pmemd.bootloader.grubby import Grubby
    from pmemd.bootloader.sdboot import SystemdBoot

    return (DebianGrub(), Grubby(), Grub2Mkconfig(), SystemdBoot())


def layout(name: Layout) -> BootLayout:
    for lay in _registry():
        if lay.name is name:
            return lay
    raise BootLoaderError(f"no supported boot loader found ({', '.join(lay.name for lay in _registry())}); "
                          "set settings.bootloader")


def detect(root: Root, forced: str | None = None) -> tuple[Layout, str]:
    """(layout, how it was detected). See pmemd(8), "Boot-loader detection"."""
    if forced and forced != "auto":
        return Layout(forced), "settings.bootloader"
    for lay in _registry():
        evidence = lay.detect(root)
        if evidence is not None:
            return lay.name, evidence
    return Layout.UNKNOWN, "no known boot-loader files found"


def read_boot_config(root: Root, forced: str | None = None) -> BootConfig:
    """Detect the layout and read the next-boot command lines it holds."""
    name, why = detect(root, forced)
    if name is Layout.UNKNOWN:
        return BootConfig(name, why)
    return layout(name).read(root, detected_by=why)


SBIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin")


def has_tool(root: Root, name: str) -> bool:
    return any(root.exists(f"{d}/{name}") for d in SBIN_DIRS)


def check(result: Result) -> Result:
    if not result.ok:
        raise BootLoaderError(result.describe())
    return result


def kernel_cmdline_note(root: Root) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(notes, problems) about ``/etc/kernel/cmdline``, which seeds the entries of kernels
    installed later (kernel-install)."""
    text = root.read_text("/etc/kernel/cmdline")
    if text is None:
        return (), ()
    try:
        args = parse_kernel_cmdline_file(text)
    except ValueError as exc:
        return (), (f"/etc/kernel/cmdline {exc}",)
    return ("/etc/kernel/cmdline seeds future kernel entries: " + " ".join(args),), ()


def grubenv(root: Root) -> dict[str, str]:
    path = "/boot/grub2/grubenv" if root.exists("/boot/grub2/grubenv") else "/boot/grub/grubenv"
    return parse_grubenv(root.read_text(path))


def bls_files(root: Root, directory: str) -> list[tuple[str, str]]:
    """(path, text) of the BLS entries in ``directory``."""
    return [(f"{directory}/{n}", root.read_text(f"{directory}/{n}") or "")
            for n in root.listdir(directory) if n.endswith(".conf")]
