"""Fedora/RHEL (GRUB with BLS entries): ``grubby --update-kernel=ALL``.

The real grubby (the grubby-bls script) drops every ``memmap=`` of an entry when one is added,
and keeps all of them when they come in one call. So pmemd passes its own tokens and every
``memmap=`` it did not set (unchanged) in one ``--args``; it removes its stale tokens by exact
value (``--remove-args=memmap=1G!5G`` touches that token only). ``--update-kernel=ALL`` also
updates ``GRUB_CMDLINE_LINUX`` in /etc/default/grub, grubenv's ``kernelopts`` (RHEL 8) and
``/etc/kernel/cmdline``, so kernels installed later keep the arguments. This behaviour was
measured by running the real script (see tests/helpers.py, FakeGrubby, which follows it).

Trial boots (``pmemd.trial``): pmemd writes the BLS entry ``pmemd-trial.conf``, a copy of the
default entry with the trial's arguments (not ``grubby --add-kernel --copy-default``, whose entry
sorts first and can become the default), pins the default with ``grub2-set-default`` and makes
the trial the next boot only with ``grub2-reboot``: GRUB's 00_header clears ``next_entry`` in
grubenv before it boots it. Only with ``GRUB_DEFAULT=saved``, entries without ``$kernelopts``,
and a grubenv GRUB can write. ``write`` removes the trial entry first (``--update-kernel=ALL``
would edit it too) and a ``next_entry`` still naming it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pmemd.bootloader import BootLoaderError, bls_files, check, grubenv, has_tool, kernel_cmdline_note
from pmemd.bootloader.grub import grubenv_storage
from pmemd.bootloader.sdboot import TRIAL_ENTRY, trial_entry
from pmemd.bootloader.syntax import parse_bls_entries, parse_bls_entry, parse_default_grub, parse_grub_cfg
from pmemd.facts import BootConfig, BootEntry, Layout
from pmemd.fsroot import Root
from pmemd.trial import Support

if TYPE_CHECKING:  # the effects (and ctypes) load only when a boot config is written
    from pmemd.effects import HostEffects

ENTRIES = "/boot/loader/entries"
TRIAL_PATH = f"{ENTRIES}/{TRIAL_ENTRY}"
TRIAL_ID = TRIAL_ENTRY.removesuffix(".conf")


def _bls(root: Root) -> list[tuple[str, str]]:
    """The BLS entries but pmemd's trial entry."""
    return [(p, t) for p, t in bls_files(root, ENTRIES) if p != TRIAL_PATH]


def read_rhel_entries(root: Root) -> tuple[BootEntry, ...]:
    """The BLS entries of ``/boot/loader/entries``, or the entries of ``/boot/grub2/grub.cfg``."""
    env = grubenv(root)
    bls = _bls(root)
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


def trial_support(root: Root) -> Support:
    """Whether a trial entry booted once through grub2-reboot falls back by itself here."""
    if not has_tool(root, "grub2-reboot") or not has_tool(root, "grub2-set-default"):
        return Support(False, "grub2-reboot and grub2-set-default (which make a one-shot boot) are not installed")
    text = root.read_text("/etc/default/grub") or ""
    if parse_default_grub([("/etc/default/grub", text)]).get("GRUB_DEFAULT") != "saved":
        return Support(False, "GRUB_DEFAULT is not saved in /etc/default/grub: a new entry could become the default")
    if any("$kernelopts" in parse_bls_entry(t).get("options", "") for _, t in _bls(root)):
        return Support(False, "the entries use $kernelopts (RHEL 8): a copied entry would not carry its own arguments")
    return grubenv_storage(root, directory="/boot/grub2", tool="grub2-editenv")


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
        sup = trial_support(root)
        trial = root.read_text(TRIAL_PATH)
        armed = tuple(parse_bls_entry(trial).get("options", "").split()) if trial is not None else None
        return BootConfig(self.name, detected_by, read_rhel_entries(root), notes, problems=problems,
                          trial_ok=sup.ok, trial_why=sup.reason, trial_args=armed)

    def write(self, fx: HostEffects, *, desired: tuple[str, ...], remove: tuple[str, ...]) -> None:
        fx.remove(TRIAL_PATH)  # before --update-kernel=ALL, which would edit it too
        if grubenv(fx.root).get("next_entry") == TRIAL_ID:
            check(fx.run(["grub2-editenv", "-", "unset", "next_entry"], chroot=True))
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
        default = next((e for e in read_rhel_entries(fx.root) if e.default), None)
        text = fx.root.read_text(default.source) if default is not None else None
        if default is None or text is None or not default.source.startswith(ENTRIES + "/"):
            raise BootLoaderError(f"no default BLS entry found in {ENTRIES}")
        fx.write(TRIAL_PATH, trial_entry(text, committed=committed, tokens=tokens))
        check(fx.run(["grub2-set-default", default.source.rsplit("/", 1)[-1].removesuffix(".conf")], chroot=True))
        check(fx.run(["grub2-reboot", TRIAL_ID], chroot=True))

    def regenerate(self, fx: HostEffects) -> None:
        """Nothing to regenerate: grubby edits the entries directly."""
