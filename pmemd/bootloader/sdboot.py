"""systemd-boot: ``/etc/kernel/cmdline`` (future entries) and the existing loader entries.

kernel-install takes the command line of new entries from ``/etc/kernel/cmdline``; entries that
already exist keep their ``options`` lines, so pmemd edits both, adding and removing exactly its
own tokens. Unified kernel images embed their command line and are not supported.
"""

from __future__ import annotations

from pmemd.bootcfg import parse_kernel_cmdline_file, render_kernel_cmdline_file
from pmemd.bootloader import BackendError, Tools

ESPS = ("/efi", "/boot", "/boot/efi")


def _entries(tools: Tools) -> list[str]:
    for esp in ESPS:
        if tools.root.exists(f"{esp}/loader/loader.conf"):
            return [f"{esp}/loader/entries/{n}" for n in tools.root.listdir(f"{esp}/loader/entries")
                    if n.endswith(".conf")]
    return []


def _edit(args: list[str], desired: tuple[str, ...], remove: tuple[str, ...]) -> list[str]:
    kept = [a for a in args if a not in remove and a not in desired]
    return kept + list(desired)


class SystemdBoot:
    name = "systemd-boot"

    def apply(self, tools: Tools, *, desired: tuple[str, ...], remove: tuple[str, ...]) -> None:
        entries = _entries(tools)
        if not entries:
            raise BackendError("no systemd-boot entries found under /efi, /boot or /boot/efi loader/entries")
        current = tools.root.read_text("/etc/kernel/cmdline")
        if current is None:
            proc = tools.root.read_text("/proc/cmdline") or ""
            base = [t for t in proc.split() if not t.startswith(("initrd=", "BOOT_IMAGE="))]
        else:
            base = list(parse_kernel_cmdline_file(current))
        tools.write("/etc/kernel/cmdline", render_kernel_cmdline_file(tuple(_edit(base, desired, remove))))
        for path in entries:
            text = tools.root.read_text(path) or ""
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
            tools.write(path, "\n".join(out) + "\n")

    def regenerate(self, tools: Tools) -> None:
        """Nothing to regenerate: entries are read by the boot loader as they are."""
