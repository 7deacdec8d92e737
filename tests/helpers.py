"""Shared test utilities for tier 1 (pure) and tier 2 (host tree + recording runner) tests.

* ``RecordingRunner`` stands in for ``pmemd.runner.SubprocessRunner``. It is deny-by-default:
  it answers only the argv patterns a test declared with ``expect()``; anything else is recorded
  in ``unexpected`` and raised as ``UnexpectedCommand`` (an ``AssertionError``), so a test that
  would start an unplanned process fails, even if pmemd swallowed the exception somewhere (the
  ``runner`` fixture in conftest.py checks ``unexpected`` again at teardown).
* ``HostTree`` builds a host tree (``/proc``, ``/sys``, boot files) below a temporary directory,
  laid out the way ``tools/capture-host-tree`` captures a real host (relative sysfs symlinks, the
  nd bus below ``/sys/devices/platform/e820_pmem``), so ``pmemd --root`` reads it like a host.
* ``FakeUpdateGrub`` and ``FakeGrubby`` are FAKES of boot-loader tools that cannot run against a
  tree here (update-grub needs grub-probe and the real /boot, grubby is not packaged on Debian):
  they reproduce only the documented effect on the files pmemd reads back.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmemd.runner import Result

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "hosts"

GIB = 1 << 30
MIB = 1 << 20

# --- the recording runner ------------------------------------------------------------------


class UnexpectedCommand(AssertionError):
    """pmemd tried to start a process the test did not expect."""


class _Any:
    def __repr__(self) -> str:
        return "ANY"


class _Rest:
    def __repr__(self) -> str:
        return "REST"


ANY = _Any()  # matches exactly one argv element
REST = _Rest()  # matches any number of remaining argv elements (only as the last element)

Handler = Callable[[tuple[str, ...]], "Result | tuple[int, str, str] | None"]


@dataclass
class Rule:
    pattern: tuple[Any, ...]
    handler: Handler | None
    returncode: int
    stdout: str
    stderr: str
    times: int | None  # None: any number of times
    used: int = 0

    def matches(self, argv: tuple[str, ...]) -> bool:
        pat = self.pattern
        if pat and pat[-1] is REST:
            head = pat[:-1]
            if len(argv) < len(head):
                return False
            pairs = zip(head, argv[: len(head)], strict=True)
        else:
            if len(argv) != len(pat):
                return False
            pairs = zip(pat, argv, strict=True)
        for p, a in pairs:
            if p is ANY:
                continue
            if isinstance(p, re.Pattern):
                if not p.fullmatch(a):
                    return False
            elif p != a:
                return False
        return True


@dataclass
class RecordingRunner:
    """Deny-by-default stand-in for ``SubprocessRunner``: answers only expected argv patterns."""

    rules: list[Rule] = field(default_factory=list)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    unexpected: list[tuple[str, ...]] = field(default_factory=list)

    def expect(self, *pattern: Any, handler: Handler | None = None, returncode: int = 0,
               stdout: str = "", stderr: str = "", times: int | None = None) -> RecordingRunner:
        """Answer argv matching ``pattern`` (strings exact, ``re.Pattern`` fullmatch, ANY, REST)."""
        self.rules.append(Rule(tuple(pattern), handler, returncode, stdout, stderr, times))
        return self

    def run(self, argv: Sequence[str], *, timeout: float = 60.0) -> Result:
        args = tuple(argv)
        assert all(isinstance(a, str) for a in args), f"argv must be strings: {args!r}"
        self.calls.append(args)
        for rule in self.rules:
            if rule.times is not None and rule.used >= rule.times:
                continue
            if rule.matches(args):
                rule.used += 1
                if rule.handler is not None:
                    out = rule.handler(args)
                    if out is None:
                        return Result(args, 0, "", "")
                    if isinstance(out, Result):
                        return out
                    rc, so, se = out
                    return Result(args, rc, so, se)
                return Result(args, rule.returncode, rule.stdout, rule.stderr)
        self.unexpected.append(args)
        raise UnexpectedCommand(f"unexpected command: {list(args)!r}")

    def commands(self, first: str | None = None) -> list[tuple[str, ...]]:
        """Calls, optionally only those whose (de-chrooted) program is ``first``."""
        if first is None:
            return list(self.calls)
        return [c for c in self.calls if program(c) == first]

    def unused(self) -> list[tuple[Any, ...]]:
        return [r.pattern for r in self.rules if r.used == 0]


def program(argv: tuple[str, ...]) -> str:
    """The program an argv runs, looking through ``chroot DIR``."""
    if len(argv) >= 3 and argv[0] == "chroot":
        return argv[2]
    return argv[0] if argv else ""


def in_root(tree: Path, *argv: Any) -> tuple[Any, ...]:
    """The pattern of a boot-loader/system tool that the executor runs chrooted into ``tree``."""
    return ("chroot", str(tree), *argv)


# --- building host trees -------------------------------------------------------------------

# `-machine pc -m 16G` firmware RAM (docs/facts.md, "QEMU guests"): 0-0x9fbff,
# 0x100000-0xbffdcfff, 0x100000000-0x43fffffff; the reserved entries of a -m 4G guest.
_BELOW_4G = (
    (0x0, 0x9FC00, "System RAM"),
    (0x9FC00, 0xA0000, "Reserved"),
    (0xF0000, 0x100000, "Reserved"),
    (0x100000, 0xBFFDD000, "System RAM"),
    (0xBFFDD000, 0xC0000000, "Reserved"),
    (0xFFFC0000, 0x100000000, "Reserved"),
)
QEMU_PC_16G = (
    *_BELOW_4G,
    (0x100000000, 0x440000000, "System RAM"),
    (0xFD00000000, 0x10000000000, "Reserved"),
)

# A large host for tests that must not trip the RAM or KASLR rules: 0-3 GiB and 4-64 GiB.
BIG_64G = (*_BELOW_4G, (0x100000000, 0x1000000000, "System RAM"))


class HostTree:
    """A host tree under ``path``: write files at host paths, add firmware maps, nd regions..."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._next_mount_id = 200

    def p(self, host_path: str) -> Path:
        return self.path / host_path.lstrip("/")

    def write(self, host_path: str, text: str, mode: int = 0o644) -> Path:
        f = self.p(host_path)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        os.chmod(f, mode)
        return f

    def read(self, host_path: str) -> str:
        return self.p(host_path).read_text()

    def exists(self, host_path: str) -> bool:
        return os.path.lexists(self.p(host_path))

    def symlink(self, host_link: str, host_target: str) -> None:
        """A relative symlink from one host path to another (as sysfs has them)."""
        link = self.p(host_link)
        link.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(link):
            link.unlink()
        link.symlink_to(os.path.relpath(self.p(host_target), link.parent))

    # -- /proc ---------------------------------------------------------------------------------

    def cmdline(self, text: str) -> HostTree:
        self.write("/proc/cmdline", text.rstrip("\n") + "\n")
        return self

    def meminfo(self, total_bytes: int) -> HostTree:
        self.write("/proc/meminfo", f"MemTotal:       {total_bytes // 1024} kB\nMemFree:        1024 kB\n")
        return self

    def kernel(self, release: str) -> HostTree:
        self.write("/proc/sys/kernel/osrelease", release + "\n")
        return self

    def boot_id(self, boot_id: str) -> HostTree:
        self.write("/proc/sys/kernel/random/boot_id", boot_id + "\n")
        return self

    def iomem(self, lines: Sequence[str]) -> HostTree:
        self.write("/proc/iomem", "".join(ln + "\n" for ln in lines))
        return self

    def kmsg(self, messages: Sequence[str]) -> HostTree:
        """/dev/kmsg records ("pri,seq,usec,flags;text"), as a capture stores them."""
        self.write("/dev/kmsg", "".join(f"6,{i},{i * 1000},-;{m}\n" for i, m in enumerate(messages)))
        return self

    def mount(self, source: str, mount_point: str, fstype: str, super_options: str,
              options: str = "rw,relatime", device: str = "259:0") -> HostTree:
        """Append a mountinfo line (host paths, as the kernel shows them)."""
        f = self.p("/proc/self/mountinfo")
        f.parent.mkdir(parents=True, exist_ok=True)
        old = f.read_text() if f.exists() else ""
        self._next_mount_id += 1
        line = (f"{self._next_mount_id} 29 {device} / {mount_point} {options} shared:1 - "
                f"{fstype} {source} {super_options}\n")
        f.write_text(old + line)
        return self

    # -- /sys ----------------------------------------------------------------------------------

    def firmware_map(self, entries: Sequence[tuple[int, int, str]]) -> HostTree:
        """/sys/firmware/memmap/N/{start,end,type}; ``end`` given exclusive, written inclusive."""
        base = self.p("/sys/firmware/memmap")
        if base.exists():
            shutil.rmtree(base)
        for i, (start, end, type_) in enumerate(entries):
            self.write(f"/sys/firmware/memmap/{i}/start", f"{start:#x}\n")
            self.write(f"/sys/firmware/memmap/{i}/end", f"{end - 1:#x}\n")
            self.write(f"/sys/firmware/memmap/{i}/type", f"{type_}\n")
        return self

    def numa(self, block_size: int, nodes: dict[int, Sequence[tuple[int, int]]]) -> HostTree:
        """memory block files per node, as /sys/devices/system/node/nodeN/memoryM."""
        self.write("/sys/devices/system/memory/block_size_bytes", f"{block_size:x}\n")
        for node, ranges in nodes.items():
            self.p(f"/sys/devices/system/node/node{node}").mkdir(parents=True, exist_ok=True)
            for start, end in ranges:
                for idx in range(start // block_size, end // block_size):
                    self.write(f"/sys/devices/system/node/node{node}/memory{idx}", "")
        return self

    def nd_region(self, index: int, start: int | None, size: int, *, provider: str = "e820",
                  bus: str = "ndbus0", numa_node: int = 0, mode: str = "memory",
                  blockdev: str | None = "default", dev_node: bool = True,
                  iomem: bool = True) -> HostTree:
        """An nd region with its one namespace, laid out like sysfs (and /proc/iomem)."""
        if provider == "e820":
            bus_dir = f"/sys/devices/platform/e820_pmem/{bus}"
        else:
            bus_dir = f"/sys/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0012:00/{bus}"
        self.write(f"{bus_dir}/provider", provider + "\n")
        self.symlink(f"/sys/bus/nd/devices/{bus}", bus_dir)
        region = f"{bus_dir}/region{index}"
        self.write(f"{region}/resource", f"{start:#x}\n" if start is not None else "")
        if start is None:
            os.chmod(self.p(f"{region}/resource"), 0o400)
        self.write(f"{region}/size", f"{size}\n")
        self.write(f"{region}/numa_node", f"{numa_node}\n")
        self.write(f"{region}/align", "16777216\n")
        self.symlink(f"/sys/bus/nd/devices/region{index}", region)
        ns = f"{region}/namespace{index}.0"
        self.write(f"{ns}/mode", mode + "\n")
        self.write(f"{ns}/size", f"{size}\n")
        self.symlink(f"/sys/bus/nd/devices/namespace{index}.0", ns)
        if blockdev == "default":
            blockdev = f"pmem{index}"
        if blockdev:
            self.write(f"{ns}/block/{blockdev}/size", f"{size // 512}\n")
            self.symlink(f"/sys/block/{blockdev}", f"{ns}/block/{blockdev}")
            if dev_node:
                self.write(f"/dev/{blockdev}", "")
        if iomem and start is not None:
            name = "Persistent Memory (legacy)" if provider == "e820" else "Persistent Memory"
            f = self.p("/proc/iomem")
            old = f.read_text() if f.exists() else ""
            self.write("/proc/iomem", old + f"{start:x}-{start + size - 1:x} : {name}\n"
                       f"  {start:x}-{start + size - 1:x} : namespace{index}.0\n")
        return self

    # -- boot config ----------------------------------------------------------------------------

    def debian_grub(self, cmdline_linux: str = "", cmdline_default: str = "quiet",
                    kver: str = "6.12.117+deb13-amd64", root_uuid: str = "36a8821c-d106-4395-929e-49a4cfe63c26",
                    ) -> HostTree:
        """/etc/default/grub plus a grub.cfg that FakeUpdateGrub generates from it."""
        self.write("/etc/default/grub", f'GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\n'
                   f'GRUB_CMDLINE_LINUX_DEFAULT="{cmdline_default}"\n'
                   f'GRUB_CMDLINE_LINUX="{cmdline_linux}"\n')
        self.write("/boot/grub/grub.cfg", _debian_grub_cfg(kver, root_uuid))
        FakeUpdateGrub(self.path)(("update-grub",))
        return self

    def pmemd_dropin(self, tokens: Sequence[str]) -> HostTree:
        """pmemd's /etc/default/grub.d/99-pmemd.cfg as pmemd renders it, then the fake update-grub."""
        from pmemd.bootloader.grub import render_dropin

        self.write("/etc/default/grub.d/99-pmemd.cfg", render_dropin(tuple(tokens)))
        FakeUpdateGrub(self.path)(("update-grub",))
        return self

    def reboot(self, boot_id: str, args: Sequence[str] | None = None) -> tuple[str, ...]:
        """Simulate the next boot: the kernel gets ``args`` (default: the boot loader's default
        entry), makes one e820 region (pmemN, blank) per memmap=!, and pmem mounts are gone.
        Returns the new cmdline."""
        from pmemd.bootloader import read_boot_config
        from pmemd.fsroot import Root
        from pmemd.parse import parse_cmdline

        args = tuple(args) if args is not None else read_boot_config(Root(self.path)).default_args or ()
        self.cmdline(" ".join(("BOOT_IMAGE=/boot/vmlinuz", *args)))
        self.boot_id(boot_id)
        for d in ("sys/bus/nd", "sys/block", "sys/devices/platform/e820_pmem"):
            shutil.rmtree(self.p(d), ignore_errors=True)
        for dev in self.p("/dev").glob("pmem*"):
            dev.unlink()
        iomem = self.p("/proc/iomem")
        if iomem.exists():
            iomem.write_text("".join(ln + "\n" for ln in iomem.read_text().splitlines()
                                     if "Persistent Memory" not in ln and "namespace" not in ln))
        mi = self.p("/proc/self/mountinfo")
        if mi.exists():
            mi.write_text("".join(ln + "\n" for ln in mi.read_text().splitlines() if "/dev/pmem" not in ln))
        for i, e in enumerate(sorted(parse_cmdline(" ".join(args)).pram, key=lambda e: e.start or 0)):
            self.nd_region(i, e.start, e.size)
        return args

    def config(self, text: str, path: str = "/etc/pmem.yaml", mode: int = 0o644) -> HostTree:
        self.write(path, text, mode)
        return self


def _debian_grub_cfg(kver: str, uuid: str) -> str:
    """A grub.cfg in the shape of the captured debian13-qemu-plain one; FakeUpdateGrub then
    regenerates its ``linux`` lines."""

    def entry(title: str, kind: str, ind: str) -> str:
        return (
            f"{ind}menuentry '{title}' --class debian --class gnu-linux --class gnu --class os "
            f"$menuentry_id_option 'gnulinux-{kind}-{uuid}' {{\n"
            f"{ind}\tload_video\n{ind}\tinsmod gzio\n{ind}\tinsmod part_msdos\n{ind}\tinsmod ext2\n"
            f"{ind}\tsearch --no-floppy --fs-uuid --set=root {uuid}\n"
            f"{ind}\techo\t'Loading Linux {kver} ...'\n"
            f"{ind}\tlinux\t/boot/vmlinuz-{kver} root=UUID={uuid} ro\n"
            f"{ind}\techo\t'Loading initial ramdisk ...'\n"
            f"{ind}\tinitrd\t/boot/initrd.img-{kver}\n"
            f"{ind}}}\n"
        )

    return (
        "### BEGIN /etc/grub.d/00_header ###\n"
        'if [ "${next_entry}" ] ; then\n   set default="${next_entry}"\nelse\n   set default="0"\nfi\n'
        "### END /etc/grub.d/00_header ###\n"
        + entry("Debian GNU/Linux", "simple", "")
        + f"submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-{uuid}' {{\n"
        + entry(f"Debian GNU/Linux, with Linux {kver}", f"{kver}-advanced", "\t")
        + entry(f"Debian GNU/Linux, with Linux {kver} (recovery mode)", f"{kver}-recovery", "\t")
        + "}\n"
    )


def copy_fixture(name: str, dest: Path) -> HostTree:
    """Copy a fixture tree (never apply to the checked-in tree itself) and return it."""
    src = FIXTURES / name
    assert src.is_dir(), f"no fixture tree {src}"
    shutil.copytree(src, dest, symlinks=True)
    # Fixture files come from git with group/other bits as the checkout left them; a host
    # tree's config and boot files are root-owned 0644 like on a real host.
    for dirpath, _dirs, files in os.walk(dest):
        for f in files:
            full = Path(dirpath) / f
            if not full.is_symlink():
                os.chmod(full, 0o644)
    return HostTree(dest)


def tree_digest(path: Path) -> dict[str, str]:
    """Every entry below ``path``: content hash, symlink target or 'dir', plus the mode."""
    out: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(path):
        for name in sorted(dirs + files):
            full = Path(dirpath) / name
            rel = str(full.relative_to(path))
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.readlink(full)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = f"dir:{stat.S_IMODE(st.st_mode):o}"
            else:
                out[rel] = f"{stat.S_IMODE(st.st_mode):o}:" + hashlib.sha256(full.read_bytes()).hexdigest()
    return out


# --- fakes of boot-loader tools ------------------------------------------------------------


def shell_grub_vars(tree: Path) -> dict[str, str]:
    """Source ``/etc/default/grub`` and ``/etc/default/grub.d/*.cfg`` of the tree with a real
    POSIX shell, the way grub-mkconfig does, and return the GRUB_CMDLINE_* values.

    Using ``/bin/sh`` (not pmemd's own reader) keeps the fake honest about shell quoting.
    """
    script = (
        'set -e; . "$1/etc/default/grub"; '
        'for x in "$1"/etc/default/grub.d/*.cfg; do if [ -e "$x" ]; then . "$x"; fi; done; '
        'printf "%s\\0%s\\0%s" "${GRUB_CMDLINE_LINUX-}" "${GRUB_CMDLINE_LINUX_DEFAULT-}" '
        '"${GRUB_CMDLINE_LINUX_RECOVERY-single dis_ucode_ldr}"'
    )
    proc = subprocess.run(["/bin/sh", "-c", script, "sh", str(tree)], capture_output=True, text=True,
                          check=True, env={"PATH": "/usr/bin:/bin"}, timeout=10)
    linux, default, recovery = proc.stdout.split("\0")
    return {"GRUB_CMDLINE_LINUX": linux, "GRUB_CMDLINE_LINUX_DEFAULT": default,
            "GRUB_CMDLINE_LINUX_RECOVERY": recovery}


_LINUX_LINE = re.compile(r"^(?P<indent>\s*)linux(?P<sep>\s+)(?P<kernel>\S+) (?P<root>root=\S+) ro\b.*$")


@dataclass
class FakeUpdateGrub:
    """FAKE of Debian's ``update-grub`` (``grub-mkconfig -o /boot/grub/grub.cfg``), because the
    real one needs grub-probe, the real disks and /boot of a live system.

    It does only what pmemd relies on: sources /etc/default/grub + grub.d/*.cfg with /bin/sh and
    rewrites every ``linux`` line of the tree's existing /boot/grub/grub.cfg the way
    /etc/grub.d/10_linux builds it: ``root=… ro ${GRUB_CMDLINE_LINUX} ${GRUB_CMDLINE_LINUX_DEFAULT}``
    for normal entries, ``root=… ro ${GRUB_CMDLINE_LINUX_RECOVERY} ${GRUB_CMDLINE_LINUX}`` for
    "(recovery mode)" entries. Like grub-mkconfig it also puts the output of pmemd's executable
    /etc/grub.d/01_pmemd (run with the real /bin/sh) right after 00_header's section, between
    ``### BEGIN``/``### END`` lines. ``forget`` simulates a broken generator that drops tokens;
    ``returncode`` a failing one.
    """

    tree: Path
    forget: frozenset[str] = frozenset()
    returncode: int = 0
    runs: int = 0

    def __call__(self, argv: tuple[str, ...]) -> tuple[int, str, str]:
        self.runs += 1
        if self.returncode:
            return self.returncode, "", "grub-mkconfig: error: simulated failure\n"
        env = shell_grub_vars(self.tree)
        cfg = self.tree / "boot/grub/grub.cfg"
        out: list[str] = []
        title = ""
        for line in cfg.read_text().splitlines():
            m_title = re.match(r"\s*menuentry '([^']*)'", line)
            if m_title:
                title = m_title.group(1)
            m = _LINUX_LINE.match(line)
            if m:
                if "(recovery mode)" in title:
                    args = f"{env['GRUB_CMDLINE_LINUX_RECOVERY']} {env['GRUB_CMDLINE_LINUX']}"
                else:
                    args = f"{env['GRUB_CMDLINE_LINUX']} {env['GRUB_CMDLINE_LINUX_DEFAULT']}"
                if self.forget:
                    args = " ".join(a for a in args.split() if a not in self.forget)
                out.append(f"{m['indent']}linux{m['sep']}{m['kernel']} {m['root']} ro {args}".rstrip())
            else:
                out.append(line)
        try:
            cfg.write_text(_with_grub_d_script(self.tree, "\n".join(out) + "\n"))
        except OSError as exc:  # e.g. /boot read-only: what grub-mkconfig says then
            return 1, "", f"/usr/sbin/grub-mkconfig: 1: cannot create /boot/grub/grub.cfg.new: {exc.strerror}\n"
        return 0, "", "Generating grub configuration file ...\ndone\n"


def _with_grub_d_script(tree: Path, cfg: str, name: str = "01_pmemd") -> str:
    """grub.cfg with the section of /etc/grub.d/NAME (if executable) after 00_header's, as
    grub-mkconfig writes it; an old section of it is dropped first."""
    begin, end = f"### BEGIN /etc/grub.d/{name} ###", f"### END /etc/grub.d/{name} ###"
    lines = cfg.splitlines()
    if begin in lines:
        lines = lines[:lines.index(begin)] + lines[lines.index(end) + 2:]  # the section and its blank line
    script = tree / "etc/grub.d" / name
    if script.exists() and os.access(script, os.X_OK):
        made = subprocess.run(["/bin/sh", str(script)], capture_output=True, text=True, check=True, timeout=30)
        at = lines.index("### END /etc/grub.d/00_header ###") + 1
        lines[at:at] = ["", begin, *made.stdout.splitlines(), end]
    return "\n".join(lines) + "\n"


@dataclass
class FakeGrubEditenv:
    """FAKE of ``grub-editenv FILE set|unset|list`` (Debian's grub-common is not installed here):
    a GRUB environment block is ``# GRUB Environment Block`` plus ``name=value`` lines, padded
    with ``#`` to 1024 bytes. ``returncode`` simulates a failing one."""

    tree: Path
    returncode: int = 0

    def __call__(self, argv: tuple[str, ...]) -> tuple[int, str, str]:
        if self.returncode:
            return self.returncode, "", "grub-editenv: error: simulated failure\n"
        i = argv.index("grub-editenv")
        path, op, args = self.tree / argv[i + 1].lstrip("/"), argv[i + 2], argv[i + 3:]
        env = dict(ln.split("=", 1) for ln in (path.read_text() if path.exists() else "").splitlines()
                   if "=" in ln and not ln.startswith("#"))
        if op == "set":
            env.update(a.partition("=")[::2] for a in args)
        elif op == "unset":
            for a in args:
                env.pop(a, None)
        elif op == "list":
            return 0, "".join(f"{k}={v}\n" for k, v in env.items()), ""
        body = "# GRUB Environment Block\n" + "".join(f"{k}={v}\n" for k, v in env.items())
        path.write_text(body + "#" * (1024 - len(body)))
        return 0, "", ""


@dataclass
class FakeGrub2Env:
    """FAKE of Fedora's ``grub2-set-default ID``, ``grub2-reboot ID`` and ``grub2-editenv - unset
    NAME`` (grub2-tools is not packaged here): they set ``saved_entry``, ``next_entry`` or unset a
    name in /boot/grub2/grubenv, as the real scripts do through grub2-editenv."""

    tree: Path

    def __call__(self, argv: tuple[str, ...]) -> tuple[int, str, str]:
        cmd = list(argv[2:] if argv[:1] == ("chroot",) else argv)
        env = FakeGrubEditenv(self.tree)
        path = "/boot/grub2/grubenv"
        if cmd[0] == "grub2-set-default":
            return env(("grub-editenv", path, "set", f"saved_entry={cmd[1]}"))
        if cmd[0] == "grub2-reboot":
            return env(("grub-editenv", path, "set", f"next_entry={cmd[1]}"))
        if cmd[:3] == ["grub2-editenv", "-", "unset"]:
            return env(("grub-editenv", path, "unset", *cmd[3:]))
        return 1, "", f"unsupported in the fake: {cmd}\n"


def _grubby_update(args: list[str], add: list[str], remove: list[str]) -> list[str]:
    """grubby-bls ``update_args``: drop removed args (by exact value, or by key when given
    without ``=``), drop every arg with the same key as an added one, then append the added."""
    out = list(args)
    for r in remove:
        out = [a for a in out if a != r and ("=" in r or a.split("=", 1)[0] != r)]
    for a in add:
        key = a.split("=", 1)[0]
        out = [x for x in out if x.split("=", 1)[0] != key]
    return out + add


@dataclass
class FakeGrubby:
    """FAKE of ``grubby --update-kernel=ALL|DEFAULT [--args=…] [--remove-args=…]`` (grubby-bls),
    because grubby is not packaged on this Debian machine and edits the real /boot.

    It follows what the real script (grubby 8.40-69) was measured to do (the notes shipped beside
    docs/facts.md, "grubby"): an added argument first drops every argument of the same key
    (a new ``memmap=`` drops all ``memmap=``; several in one call all stay); ``--remove-args`` takes
    an exact ``key=value`` or a bare key (all of them); ``--args V`` works like ``--args=V``; ``$``
    is written verbatim. ``ALL`` edits every BLS ``options`` line in /boot/loader/entries (grubenv's
    ``kernelopts`` instead for ``$kernelopts`` entries, RHEL 8), ``GRUB_CMDLINE_LINUX`` in
    /etc/default/grub (unless ``--no-etc-grub-update``) and /etc/kernel/cmdline, creating it from
    the default entry when missing; ``DEFAULT`` edits only the default (first) entry.
    """

    tree: Path
    runs: int = 0

    def __call__(self, argv: tuple[str, ...]) -> tuple[int, str, str]:
        self.runs += 1
        cmd = list(argv)
        if cmd[:1] == ["chroot"]:
            cmd = cmd[2:]
        assert cmd[0] == "grubby"
        add: list[str] = []
        remove: list[str] = []
        etc_grub = True
        which = None
        words = iter(cmd[1:])
        for word in words:
            a = f"{word}={next(words, '')}" if word in ("--args", "--remove-args", "--update-kernel") else word
            if a.startswith("--args="):
                add += a.removeprefix("--args=").split()
            elif a.startswith("--remove-args="):
                remove += a.removeprefix("--remove-args=").split()
            elif a == "--no-etc-grub-update":
                etc_grub = False
            elif a in ("--update-kernel=ALL", "--update-kernel=DEFAULT"):
                which = a.removeprefix("--update-kernel=")
            else:
                return 1, "", f"grubby: unsupported option in the fake: {a}\n"
        if which is None:
            return 1, "", "grubby: no action specified\n"
        entries = self.tree / "boot/loader/entries"
        confs = sorted(entries.glob("*.conf"), key=lambda p: p.name, reverse=True)  # sort -V -r
        if which == "DEFAULT":
            confs = confs[:1]
        for conf in confs:
            lines = conf.read_text().splitlines()
            for i, line in enumerate(lines):
                if line.startswith("options ") and "$kernelopts" not in line:
                    lines[i] = "options " + " ".join(_grubby_update(line.split()[1:], add, remove))
            conf.write_text("\n".join(lines) + "\n")
        if which == "DEFAULT":
            return 0, "", ""
        env = self.tree / "boot/grub2/grubenv"
        if env.exists():
            text = env.read_text()
            m = re.search(r"^kernelopts=(.*)$", text, re.M)
            if m:
                new = " ".join(_grubby_update(m.group(1).split(), add, remove))
                body = text[: m.start()] + "kernelopts=" + new + text[m.end():]
                # grubenv is a 1024-byte block padded with '#'
                body = body.rstrip("#")
                env.write_text(body + "#" * max(0, 1024 - len(body)))
        dg = self.tree / "etc/default/grub"
        if etc_grub and dg.exists():
            text = dg.read_text()
            m = re.search(r'^GRUB_CMDLINE_LINUX="(.*)"$', text, re.M)
            if m:
                new = " ".join(_grubby_update(m.group(1).split(), add, remove))
                dg.write_text(text[: m.start()] + f'GRUB_CMDLINE_LINUX="{new}"' + text[m.end():])
        kc = self.tree / "etc/kernel/cmdline"
        if kc.exists():
            kc.write_text(" ".join(_grubby_update(kc.read_text().split(), add, remove)) + "\n")
        elif confs:
            first = next((ln for ln in confs[0].read_text().splitlines() if ln.startswith("options ")), "options")
            kc.parent.mkdir(parents=True, exist_ok=True)
            kc.write_text(" ".join(first.split()[1:]) + "\n")
        return 0, "", ""

    def mkconfig_bls(self, argv: tuple[str, ...]) -> tuple[int, str, str]:
        """FAKE of ``grub2-mkconfig --update-bls-cmdline`` (rhel-9 10_linux.in): every BLS entry's
        ``options`` becomes ``root=… ro GRUB_CMDLINE_LINUX`` (the plain quoted value)."""
        m = re.search(r'^GRUB_CMDLINE_LINUX="(.*)"$', (self.tree / "etc/default/grub").read_text(), re.M)
        args = m.group(1) if m else ""
        for conf in sorted((self.tree / "boot/loader/entries").glob("*.conf")):
            lines = conf.read_text().splitlines()
            for i, line in enumerate(lines):
                if line.startswith("options "):
                    root = next((a for a in line.split() if a.startswith("root=")), "root=/dev/vda1")
                    lines[i] = f"options {root} ro {args}".rstrip()
            conf.write_text("\n".join(lines) + "\n")
        return 0, "", ""


SYSTEMD_ANALYZE_CALENDAR = (
    "  Original form: Sun 03:00\n"
    "Normalized form: Sun *-*-* 03:00:00\n"
    "    Next elapse: Sun 2026-11-29 03:00:00 UTC\n"
    "       (in UTC): Sun 2026-11-29 03:00:00 UTC\n"
    "       From now: 3 days left\n"
)

SYSTEMCTL_HELP_257 = (
    "systemctl [OPTIONS...] COMMAND ...\n\nQuery or send control commands to the system manager.\n"
    "...\n     --when=TIME         Schedule halt/power-off/reboot/kexec action after\n"
    "                         a certain timestamp\n"
)


# --- pure facts for planner tables -----------------------------------------------------------


def make_facts(*, firmware: Sequence[tuple[int, int, str]] = BIG_64G, cmdline: str = "root=/dev/vda1 ro quiet",
               next_args: Sequence[str] | str | None = "same", layout: str = "grub",
               owned_tokens: Sequence[str] = (), regions: Sequence[Any] = (), iomem: Sequence[Any] = (),
               mounts: Sequence[Any] = (), numa: Sequence[Any] = (), problems: Sequence[str] = (),
               kernel_release: str | None = "6.12.117+deb13-amd64", boot_id: str | None = "boot-1",
               signatures: Sequence[Any] = (), paths: Sequence[Any] = ()) -> Any:
    """HostFacts for planner tables, without a tree. ``next_args="same"``: the next boot gets the
    running command line; ``None``: the boot loader's next-boot arguments are unknown."""
    from pmemd.facts import BootConfig, BootEntry, HostFacts, KernelLog, Layout, MemRange
    from pmemd.parse import parse_cmdline

    cl = parse_cmdline(cmdline)
    if next_args == "same":
        nargs: tuple[str, ...] | None = tuple(t for t in cl.tokens if not t.startswith("BOOT_IMAGE="))
    else:
        nargs = None if next_args is None else tuple(next_args)
    entries = () if nargs is None else (BootEntry("/boot/grub/grub.cfg", "Linux", nargs, default=True),)
    boot = BootConfig(Layout(layout), f"test ({layout})", entries,
                      owned_file="/etc/default/grub.d/99-pmemd.cfg" if layout == "grub" else None,
                      owned_tokens=tuple(owned_tokens))
    return HostFacts(
        cmdline=cl,
        firmware_map=tuple(MemRange(s, e, t) for s, e, t in firmware),
        iomem_pmem=tuple(iomem),
        regions=tuple(regions),
        mounts=tuple(mounts),
        mem_total=sum(e - s for s, e, t in firmware if t == "System RAM"),
        numa=tuple(numa),
        kernel_log=KernelLog((), tuple(problems), True),
        boot=boot,
        kernel_release=kernel_release,
        boot_id=boot_id,
        signatures=tuple(signatures),
        paths=tuple(paths),
    )


def config(namespaces: dict[str, dict[str, Any]] | None = None, **settings: Any) -> Any:
    """A validated Config from plain data; settings default to reboot: flag, kaslr: keep."""
    from pmemd.model import Config

    s: dict[str, Any] = {"kaslr": "keep", "min_free_ram": "1G"}
    s.update(settings)
    return Config.model_validate({"version": 1, "settings": s, "namespaces": namespaces or {}})


@dataclass
class FakeDevices:
    """FAKE block-device tools for pmem devices of a host tree, because this machine has no pmem
    device (tier 3 runs the real mkfs/blkid/wipefs/mount on loop devices; tier 4 on a real kernel).

    Keeps a signature per device path; answers ``blkid -p -o export``, ``wipefs --no-act --json``,
    ``wipefs -a``, ``mkfs.ext4``/``mkfs.xfs`` (which write a new UUID), ``mount`` (appends the
    mountinfo line the kernel would show, with ``dax=always`` unless ``dax=False``) and ``umount``.
    """

    tree: Path
    signatures: dict[str, dict[str, str]] = field(default_factory=dict)  # device path -> blkid pairs
    dax: bool = True
    mkfs_calls: list[tuple[str, ...]] = field(default_factory=list)  # argv without the UUID options
    mkfs_uuids: list[str] = field(default_factory=list)  # the UUIDs pmemd chose and passed
    counter: int = 0

    def dev(self, name: str) -> str:
        return str(self.tree / "dev" / name)

    def install(self, runner: RecordingRunner) -> RecordingRunner:
        runner.expect("blkid", "-p", "-o", "export", ANY, handler=self.blkid)
        runner.expect("wipefs", "--no-act", "--json", ANY, handler=self.wipefs_list)
        runner.expect("wipefs", "-a", ANY, handler=self.wipefs_all)
        runner.expect(re.compile(r"mkfs\.(ext4|xfs)"), REST, handler=self.mkfs)
        runner.expect("mount", "-t", ANY, "-o", ANY, ANY, ANY, handler=self.mount)
        runner.expect("umount", ANY, handler=self.umount)
        return runner

    def _check(self, path: str) -> None:
        assert path.startswith(str(self.tree) + "/dev/pmem"), f"tool run on a non-pmem path: {path}"

    def blkid(self, argv: tuple[str, ...]) -> tuple[int, str, str]:
        path = argv[-1]
        self._check(path)
        sig = self.signatures.get(path)
        if not sig:
            return 2, "", ""  # nothing found
        return 0, f"DEVNAME={path}\n" + "".join(f"{k}={v}\n" for k, v in sig.items()), ""

    def wipefs_list(self, argv: tuple[str, ...]) -> tuple[int, str, str]:
        import json

        path = argv[-1]
        self._check(path)
        sig = self.signatures.get(path)
        if not sig:
            return 0, "", ""
        return 0, json.dumps({"signatures": [{"device": Path(path).name, "offset": "0x438",
                                              "type": sig.get("TYPE"), "uuid": sig.get("UUID"),
                                              "label": sig.get("LABEL")}]}), ""

    def wipefs_all(self, argv: tuple[str, ...]) -> tuple[int, str, str]:
        self._check(argv[-1])
        self.signatures.pop(argv[-1], None)
        return 0, "", ""

    def mkfs(self, argv: tuple[str, ...]) -> tuple[int, str, str]:
        path = argv[-1]
        self._check(path)
        assert not any(a in ("-F", "-f", "--force") for a in argv), f"mkfs forced: {argv}"
        self.counter += 1
        fs_uuid = f"0f0c2a57-0000-4000-8000-{self.counter:012d}"  # mkfs's own choice, like the real one
        rest: list[str] = []
        i = 0
        while i < len(argv):  # -U UUID (ext4) / -m uuid=UUID (xfs): kept apart in mkfs_uuids
            if argv[i] == "-U" or (argv[i] == "-m" and argv[i + 1].startswith("uuid=")):
                fs_uuid = argv[i + 1].removeprefix("uuid=")
                self.mkfs_uuids.append(fs_uuid)
                i += 2
                continue
            rest.append(argv[i])
            i += 1
        self.mkfs_calls.append(tuple(rest))
        sig = {"UUID": fs_uuid, "BLOCK_SIZE": "4096", "TYPE": argv[0].removeprefix("mkfs.")}
        if "-L" in argv:
            sig["LABEL"] = argv[argv.index("-L") + 1]
        self.signatures[path] = sig
        return 0, "", ""

    def mount(self, argv: tuple[str, ...]) -> tuple[int, str, str]:
        _m, _t, fstype, _o, _opts, source, target = argv
        self._check(source)
        assert Path(target).is_dir(), f"mount point {target} does not exist"
        sup = "rw," + ("dax=always" if self.dax else "dax=never") + (",attr2,inode64" if fstype == "xfs" else "")
        mi = self.tree / "proc/self/mountinfo"
        old = mi.read_text() if mi.exists() else ""
        mi.write_text(old + f"300 29 259:0 / {target} rw,relatime shared:60 - {fstype} {source} {sup}\n")
        return 0, "", ""

    def umount(self, argv: tuple[str, ...]) -> tuple[int, str, str]:
        mi = self.tree / "proc/self/mountinfo"
        mi.write_text("".join(ln + "\n" for ln in mi.read_text().splitlines() if f" {argv[-1]} " not in ln))
        return 0, "", ""
