"""systemd-boot: ``/etc/kernel/cmdline`` (future entries) and the existing loader entries.

kernel-install takes the command line of new entries from ``/etc/kernel/cmdline``; entries that
already exist keep their ``options`` lines, so pmemd edits both, adding and removing exactly its
own tokens. Unified kernel images embed their command line and are not supported.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING

from pmemd.bootloader import BootLoaderError, bls_files, check, has_tool, kernel_cmdline_note
from pmemd.bootloader.syntax import (
    parse_bls_entries,
    parse_bls_entry,
    parse_kernel_cmdline_file,
    render_kernel_cmdline_file,
)
from pmemd.facts import BootConfig, Layout
from pmemd.fsroot import Root
from pmemd.trial import trial_cmdline

if TYPE_CHECKING:  # the effects (and ctypes) load only when a boot config is written
    from pmemd.effects import HostEffects

ESPS = ("/efi", "/boot", "/boot/efi")  # where systemd-boot's loader.conf may live, in this order
KERNEL_CMDLINE = "/etc/kernel/cmdline"


def find_esp(root: Root) -> str | None:
    return next((d for d in ESPS if root.exists(f"{d}/loader/loader.conf")), None)


def edit_options(text: str, desired: tuple[str, ...], remove: tuple[str, ...]) -> str:
    """A BLS entry with pmemd's tokens in its (first) ``options`` line, every other line kept."""
    out = []
    added = False
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "options":
            args = [a for a in value.split() if a not in remove and a not in desired]
            if not added:
                args += desired
                added = True
            out.append("options " + " ".join(args))
        else:
            out.append(line)
    if not added and desired:
        out.append("options " + " ".join(desired))
    return "\n".join(out) + "\n"


# The trial entry: booted once through LoaderEntryOneShot. Its name does not match the
# ``default <machine-id>-*`` that ``bootctl install`` writes, and it carries no ``sort-key``, so
# it sorts after the kernel-install entries: it can never become the default by itself.
TRIAL_ENTRY = "pmemd-trial.conf"


def trial_entry(text: str, *, committed: tuple[str, ...], tokens: tuple[str, ...]) -> str:
    """A copy of the default entry ``text``, line for line (every ``initrd`` kept), that boots
    ``tokens`` instead of pmemd's ``committed`` ones, with ``panic=`` and the trial marker (see
    ``pmemd.trial``); no ``sort-key``, and the title says it is the trial."""
    old = tuple(parse_bls_entry(text).get("options", "").split())
    args = trial_cmdline(old, committed=committed, tokens=tokens)
    out = ["# pmemd trial boot: booted once (a one-shot boot), removed when the trial ends"]
    for line in edit_options(text, args, old).splitlines():
        key, _, value = line.partition(" ")
        if key == "sort-key" or (key == "options" and not value.strip()):
            continue  # further options lines were merged into the first
        out.append(f"{line} (pmemd trial)" if key == "title" else line)
    return "\n".join(out) + "\n"


def trial_may_become_default(loader_default: str | None) -> bool:
    """Whether loader.conf's ``default`` pattern would pick the trial entry (then no trial)."""
    if not loader_default:
        return False
    return any(fnmatch.fnmatchcase(name, loader_default) for name in (TRIAL_ENTRY, TRIAL_ENTRY.removesuffix(".conf")))


EFIVARS = "/sys/firmware/efi/efivars"


def _default_entry(entries: list[tuple[str, str]], loader_default: str | None) -> tuple[str, str] | None:
    """(path, text) of the entry systemd-boot boots by default (``parse_bls_entries``' choice)."""
    parsed = parse_bls_entries(entries, {}, loader_default)
    chosen = next((e for e in parsed if e.default), parsed[0] if parsed else None)
    return next(((p, t) for p, t in entries if chosen is not None and p == chosen.source), None)


class SystemdBoot:
    name = Layout.SYSTEMD_BOOT

    def detect(self, root: Root) -> str | None:
        esp = find_esp(root)
        return f"{esp}/loader/loader.conf (systemd-boot)" if esp else None

    def _entries(self, root: Root, esp: str) -> list[tuple[str, str]]:
        """The loader entries pmemd edits: every one but its own trial entry."""
        return [(p, t) for p, t in bls_files(root, f"{esp}/loader/entries") if not p.endswith("/" + TRIAL_ENTRY)]

    def read(self, root: Root, *, detected_by: str) -> BootConfig:
        esp = find_esp(root) or "/boot"
        loader = parse_bls_entry(root.read_text(f"{esp}/loader/loader.conf") or "")
        entries = parse_bls_entries(self._entries(root, esp), {}, loader.get("default"))
        notes, problems = kernel_cmdline_note(root)
        trial = root.read_text(f"{esp}/loader/entries/{TRIAL_ENTRY}")
        armed = tuple(parse_bls_entry(trial).get("options", "").split()) if trial is not None else None
        if trial_may_become_default(loader.get("default")):
            ok, why = False, (f"loader.conf's default {loader.get('default')!r} would also match the trial "
                              f"entry {TRIAL_ENTRY}")
        elif not has_tool(root, "bootctl"):
            ok, why = False, "bootctl (which sets the one-shot EFI variable) is not installed"
        elif not root.is_dir(EFIVARS):
            ok, why = False, f"{EFIVARS} is missing: the one-shot EFI variable cannot be set"
        else:
            ok, why = True, "systemd-boot removes LoaderEntryOneShot before it boots the entry"
        return BootConfig(self.name, detected_by, entries, notes, problems=problems, trial_ok=ok, trial_why=why,
                          trial_args=armed)

    def write(self, fx: HostEffects, *, desired: tuple[str, ...], remove: tuple[str, ...]) -> None:
        esp = find_esp(fx.root)
        entries = self._entries(fx.root, esp) if esp else []
        if not entries:
            raise BootLoaderError("no systemd-boot entries found under /efi, /boot or /boot/efi loader/entries")
        current = fx.root.read_text(KERNEL_CMDLINE)
        if current is None:
            proc = fx.root.read_text("/proc/cmdline") or ""
            base = [t for t in proc.split() if not t.startswith(("initrd=", "BOOT_IMAGE="))]
        else:
            try:
                base = list(parse_kernel_cmdline_file(current))
            except ValueError as exc:
                raise BootLoaderError(f"{KERNEL_CMDLINE} {exc}") from None
        kept = [a for a in base if a not in remove and a not in desired]
        fx.write(KERNEL_CMDLINE, render_kernel_cmdline_file((*kept, *desired)))
        for path, text in entries:
            fx.write(path, edit_options(text, desired, remove))
        # No trial (any more). A LoaderEntryOneShot still naming it finds no entry: systemd-boot
        # then boots the default.
        fx.remove(f"{esp}/loader/entries/{TRIAL_ENTRY}")

    def arm_trial(self, fx: HostEffects, *, committed: tuple[str, ...], tokens: tuple[str, ...]) -> None:
        esp = find_esp(fx.root)
        if esp is None:
            raise BootLoaderError("no systemd-boot loader.conf found under /efi, /boot or /boot/efi")
        loader = parse_bls_entry(fx.root.read_text(f"{esp}/loader/loader.conf") or "")
        default = _default_entry(self._entries(fx.root, esp), loader.get("default"))
        if default is None:
            raise BootLoaderError(f"no systemd-boot entries found under {esp}/loader/entries")
        fx.write(f"{esp}/loader/entries/{TRIAL_ENTRY}", trial_entry(default[1], committed=committed, tokens=tokens))
        check(fx.run(["bootctl", "set-oneshot", TRIAL_ENTRY], chroot=True))

    def regenerate(self, fx: HostEffects) -> None:
        """Nothing to regenerate: entries are read by the boot loader as they are."""
