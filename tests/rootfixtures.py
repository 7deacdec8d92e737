"""Tier-3 helpers: an emulated-pmem host tree whose /dev/pmem0 is a real loop device.

The tree is what pmemd sees below ``--root``: firmware memory map, /proc/cmdline with
``memmap=1G!5G`` in effect, /proc/iomem, an e820 nd bus in sysfs (relative symlinks like the real
one), a boot configuration that already carries the token (owned by pmemd in its state file), and
``/dev/pmem0``: a block-device node with the major:minor of a loop device backed by a sparse
image. ``proc/self/mountinfo`` links to the live one, so pmemd's real mounts below the tree show
up (``observe.read_mounts`` strips the tree prefix).

Everything a test attaches or mounts is undone in ``finally`` blocks: mounts below the tree are
unmounted (deepest first), loop devices detached, image files removed. ``leak_check`` (session
scope) fails the run if any mount or loop device made here survived.

Never point pmemd at this machine's ``/``: every run goes through ``--root <tree>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MIB = 1 << 20
GIB = 1 << 30
REGION_START = 5 * GIB  # 0x140000000
REGION_SIZE = 1 * GIB
TOKEN = "memmap=1G!5G"  # noqa: S105  (a kernel argument, not a password)
DEVICE = "/dev/pmem0"
IMAGE_SIZE = 64 * MIB  # smaller than the 1 GiB region: the planner matches regions in sysfs
XFS_IMAGE_SIZE = 320 * MIB  # mkfs.xfs (xfsprogs >= 5.19) wants at least 300 MB
BOOT_ID = "5b0a1c1e-7d8e-4e55-9d5c-0c6e3c0f7a11"
NEEDED_TOOLS = ("losetup", "mkfs.ext4", "blkid", "wipefs", "mount", "umount")


def skip_reason() -> str | None:
    """Why tier-3 tests cannot run here, or None."""
    if sys.platform != "linux":
        return "tier 3 needs Linux"
    if os.geteuid() != 0:
        return "tier 3 needs root (loop devices, mkfs, mount)"
    missing = [t for t in NEEDED_TOOLS if shutil.which(t) is None]
    if missing:
        return f"tier 3 needs {', '.join(missing)} (apt install util-linux e2fsprogs)"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control: loop devices are unavailable (modprobe loop)"
    return None


SKIP = skip_reason()
pytestmark_root = [pytest.mark.root, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]

_PACKAGES = {"mkfs.xfs": "xfsprogs", "xfs_info": "xfsprogs", "mkswap": "util-linux", "sfdisk": "fdisk",
             "pvcreate": "lvm2", "dumpe2fs": "e2fsprogs", "blkdiscard": "util-linux", "dmesg": "util-linux"}


def needs(*tools: str) -> pytest.MarkDecorator:
    """Skip a test (with the package to install) when one of these tools is missing."""
    missing = [t for t in tools if shutil.which(t) is None]
    pkgs = " ".join(dict.fromkeys(_PACKAGES.get(t, t) for t in missing))
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} "
                              f"(apt-get install -y --no-install-recommends {pkgs})")


# --- processes ------------------------------------------------------------------------------


def sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a test-side command (never through pmemd's runner)."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL, env={**os.environ, "LC_ALL": "C"})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def live_mounts_under(path: Path) -> list[str]:
    """Mount points below ``path`` in this process's mount namespace, in mount order."""
    prefix = str(path.resolve())
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            mp = line.split(" ")[4].encode().decode("unicode_escape")
            if mp == prefix or mp.startswith(prefix + "/"):
                out.append(mp)
    return out


def unmount_all_under(path: Path) -> None:
    for mp in reversed(live_mounts_under(path)):
        if sh("umount", mp, check=False).returncode != 0:
            sh("umount", "-l", mp, check=False)


# Everything attached or built by this module, for the final leak check.
_IMAGES: list[Path] = []
_TREES: list[Path] = []


@dataclass
class Loop:
    image: Path
    dev: str  # /dev/loopN

    @property
    def rdev(self) -> int:
        return os.stat(self.dev).st_rdev

    def attached(self) -> bool:
        return bool(sh("losetup", "-j", str(self.image), check=False).stdout.strip())


@contextlib.contextmanager
def loop_device(directory: Path, size: int = IMAGE_SIZE, name: str = "pmem.img") -> Iterator[Loop]:
    """A loop device over a fresh sparse image; detached and deleted afterwards, always."""
    image = directory / name
    with open(image, "wb") as f:
        f.truncate(size)
    _IMAGES.append(image)
    proc = sh("losetup", "--find", "--show", str(image), check=False)
    if proc.returncode != 0:
        image.unlink()
        pytest.skip(f"cannot attach a loop device here: {proc.stderr.strip()}")
    loop = Loop(image, proc.stdout.strip())
    try:
        yield loop
    finally:
        # Only this loop device, by its name; unmount whatever still uses it first.
        src = os.path.realpath(loop.dev)
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            rdev = os.stat(src).st_rdev
            mm = f"{os.major(rdev)}:{os.minor(rdev)}"
            busy = [ln.split(" ")[4] for ln in f if ln.split(" ")[2] == mm]
        for mp in reversed(busy):
            sh("umount", mp, check=False)
        sh("losetup", "-d", loop.dev, check=False)
        still = loop.attached()
        image.unlink(missing_ok=True)
        assert not still, f"{loop.dev} ({image}) is still attached after losetup -d"


# --- the host tree --------------------------------------------------------------------------


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


FIRMWARE_MAP = (  # (start, end inclusive, type): 8 GiB of RAM, 5 GiB of it above 4 GiB
    (0x0, 0x9FBFF, "System RAM"),
    (0x9FC00, 0x9FFFF, "Reserved"),
    (0xF0000, 0xFFFFF, "Reserved"),
    (0x100000, 0xBFFDFFFF, "System RAM"),
    (0xBFFE0000, 0xBFFFFFFF, "Reserved"),
    (0x100000000, 0x23FFFFFFF, "System RAM"),
)

IOMEM = """\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
000f0000-000fffff : Reserved
00100000-bffdffff : System RAM
bffe0000-bfffffff : Reserved
100000000-13fffffff : System RAM
140000000-17fffffff : Persistent Memory (legacy)
  140000000-17fffffff : namespace0.0
180000000-23fffffff : System RAM
"""

CMDLINE_BASE = "root=/dev/vda1 ro console=ttyS0,115200"

GRUB_DEFAULT = """\
# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="console=ttyS0,115200"
"""

GRUB_DROPIN = """\
# Managed by pmemd: kernel arguments for emulated persistent memory.
# Edit /etc/pmem.yaml instead of this file; pmemd rewrites it.
GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX memmap=1G!5G"
"""


def grub_cfg(args: str) -> str:
    return textwrap.dedent(f"""\
        set default="0"
        menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class os {{
        \tload_video
        \tinsmod ext2
        \tlinux\t/boot/vmlinuz-6.1.0-13-amd64 root=/dev/vda1 ro {args}
        \tinitrd\t/boot/initrd.img-6.1.0-13-amd64
        }}
        """)


SDBOOT_ENTRY = "boot/loader/entries/4b1f0d6a0f2e4f0c9d1c2b3a4f5e6d7c-6.1.0-13-amd64.conf"


def sdboot_entry(options: str) -> str:
    return textwrap.dedent(f"""\
        title      Debian GNU/Linux 12 (bookworm)
        version    6.1.0-13-amd64
        machine-id 4b1f0d6a0f2e4f0c9d1c2b3a4f5e6d7c
        linux      /4b1f0d6a0f2e4f0c9d1c2b3a4f5e6d7c/6.1.0-13-amd64/linux
        initrd     /4b1f0d6a0f2e4f0c9d1c2b3a4f5e6d7c/6.1.0-13-amd64/initrd.img-6.1.0-13-amd64
        options    {options}
        """)


def namespace_yaml(*, fs: str | None = "ext4", label: str | None = "fast", mount: str | None = "/pmem/fast",
                   on_foreign_data: str | None = None, size: str = "1G", offset: str = "5G") -> str:
    lines = ["  fast:", f"    size: {size}", f"    offset: {offset}"]
    if fs:
        lines.append(f"    filesystem: {{type: {fs}" + (f", label: {label}" if label else "") + "}")
    if mount:
        lines.append(f"    mount: {{path: {mount}}}")
    if on_foreign_data:
        lines.append(f"    on_foreign_data: {on_foreign_data}")
    return "\n".join(lines) + "\n"


@dataclass
class HostTree:
    path: Path
    loop: Loop
    layout: str = "grub"
    boot_files: tuple[str, ...] = field(default=())

    # paths
    def p(self, host_path: str) -> Path:
        return self.path / host_path.lstrip("/")

    @property
    def dev(self) -> Path:
        return self.p(DEVICE)

    @property
    def state_path(self) -> Path:
        return self.p("/var/lib/pmemd/state.json")

    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.state_path.read_text()))

    def owned_fs(self) -> dict[str, Any] | None:
        ns = self.state().get("namespaces", {}).get("fast") or {}
        fs = ns.get("filesystem")
        return dict(fs) if fs else None

    def read(self, host_path: str) -> str | None:
        try:
            return self.p(host_path).read_text()
        except FileNotFoundError:
            return None

    def snapshot_boot(self) -> dict[str, str | None]:
        return {f: self.read(f) for f in self.boot_files}

    # config
    def write_config(self, namespaces: str | None = None, *, kaslr: str = "keep", extra: str = "",
                     **ns_kwargs: Any) -> None:
        body = namespaces if namespaces is not None else namespace_yaml(**ns_kwargs)
        text = ("version: 1\nsettings:\n  min_free_ram: 1G\n"
                f"  kaslr: {kaslr}\n{extra}namespaces:\n{body}")
        _write(self.p("/etc/pmem.yaml"), text, 0o644)

    # the device
    def blkid(self) -> dict[str, str]:
        out = sh("blkid", "-p", "-o", "export", self.loop.dev, check=False).stdout
        pairs = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        pairs.pop("DEVNAME", None)
        return pairs

    def digest(self) -> str:
        """sha256 of the first and last MiB of the device (primary and backup metadata)."""
        h = hashlib.sha256()
        with open(self.loop.dev, "rb") as f:
            h.update(f.read(MIB))
            f.seek(-MIB, os.SEEK_END)
            h.update(f.read(MIB))
        return h.hexdigest()

    def full_digest(self) -> str:
        h = hashlib.sha256()
        with open(self.loop.dev, "rb") as f:
            while chunk := f.read(16 * MIB):
                h.update(chunk)
        return h.hexdigest()

    def mounts(self) -> list[str]:
        return live_mounts_under(self.path)


def build_tree(root: Path, loop: Loop, *, layout: str = "grub", kernel_release: str | None = None,
               boot_has_token: bool = True) -> HostTree:
    """Write a minimal emulated-pmem host below ``root`` (see module docstring)."""
    root.mkdir(parents=True, exist_ok=True)
    _TREES.append(root)
    t = HostTree(root, loop, layout)
    # firmware memory map
    for i, (start, end, type_) in enumerate(FIRMWARE_MAP):
        d = t.p(f"/sys/firmware/memmap/{i}")
        _write(d / "start", f"0x{start:x}\n")
        _write(d / "end", f"0x{end:x}\n")
        _write(d / "type", f"{type_}\n")
    # /proc
    _write(t.p("/proc/cmdline"), f"BOOT_IMAGE=/boot/vmlinuz-6.1.0-13-amd64 {CMDLINE_BASE} {TOKEN}\n")
    _write(t.p("/proc/iomem"), IOMEM)
    _write(t.p("/proc/meminfo"), "MemTotal:        7090176 kB\nMemFree:         6000000 kB\n")
    _write(t.p("/proc/sys/kernel/osrelease"), (kernel_release or os.uname().release) + "\n")
    _write(t.p("/proc/sys/kernel/random/boot_id"), BOOT_ID + "\n")
    t.p("/proc/self").mkdir(parents=True, exist_ok=True)
    os.symlink("/proc/self/mountinfo", t.p("/proc/self/mountinfo"))
    # nd bus: real directories under devices/, relative links in bus/nd/devices like sysfs
    bus = t.p("/sys/devices/platform/e820_pmem/ndbus0")
    region = bus / "region0"
    nsdir = region / "namespace0.0"
    _write(bus / "provider", "e820\n")
    _write(region / "resource", f"0x{REGION_START:x}\n")
    _write(region / "size", f"{REGION_SIZE}\n")
    _write(region / "numa_node", "0\n")
    _write(nsdir / "mode", "memory\n")
    _write(nsdir / "size", f"{REGION_SIZE}\n")
    major, minor = os.major(loop.rdev), os.minor(loop.rdev)
    _write(nsdir / "block/pmem0/dev", f"{major}:{minor}\n")
    links = t.p("/sys/bus/nd/devices")
    links.mkdir(parents=True)
    for name, target in (("ndbus0", "ndbus0"), ("region0", "ndbus0/region0"),
                         ("namespace0.0", "ndbus0/region0/namespace0.0")):
        os.symlink(f"../../../devices/platform/e820_pmem/{target}", links / name)
    # /dev/pmem0: the loop device's major:minor
    t.p("/dev").mkdir(parents=True, exist_ok=True)
    os.mknod(t.dev, stat.S_IFBLK | 0o660, os.makedev(major, minor))
    # boot configuration, already carrying the token, and the state saying pmemd put it there
    args = f"{CMDLINE_BASE} {TOKEN}" if boot_has_token else CMDLINE_BASE
    if layout == "grub":
        _write(t.p("/etc/default/grub"), GRUB_DEFAULT)
        if boot_has_token:
            _write(t.p("/etc/default/grub.d/99-pmemd.cfg"), GRUB_DROPIN)
        _write(t.p("/boot/grub/grub.cfg"), grub_cfg("console=ttyS0,115200" + (f" {TOKEN}" if boot_has_token else "")))
        t.boot_files = ("/etc/default/grub.d/99-pmemd.cfg", "/boot/grub/grub.cfg")
    elif layout == "systemd-boot":
        _write(t.p("/boot/loader/loader.conf"), "timeout 3\n")
        _write(t.p("/" + SDBOOT_ENTRY), sdboot_entry(args))
        _write(t.p("/etc/kernel/cmdline"), args + "\n")
        t.boot_files = ("/etc/kernel/cmdline", "/" + SDBOOT_ENTRY)
    else:
        raise ValueError(layout)
    state = {"version": 1, "kernel_args": [TOKEN] if boot_has_token else [], "backend": layout,
             "pending_reboot": None,
             "namespaces": {"fast": {"start": REGION_START, "size": REGION_SIZE, "filesystem": None,
                                     "mount_path": None, "verified": None, "verified_boot_id": None}}}
    _write(t.state_path, json.dumps(state, indent=2) + "\n")
    t.p("/run").mkdir(exist_ok=True)
    return t


@contextlib.contextmanager
def host_tree(tmp: Path, *, layout: str = "grub", kernel_release: str | None = None,
              size: int = IMAGE_SIZE) -> Iterator[HostTree]:
    """A host tree with its loop device; everything mounted below it is unmounted afterwards."""
    tree_dir = tmp / "tree"
    with loop_device(tmp, size) as loop:
        try:
            yield build_tree(tree_dir, loop, layout=layout, kernel_release=kernel_release)
        finally:
            unmount_all_under(tree_dir)
            left = live_mounts_under(tree_dir)
            assert not left, f"mounts left below the tree: {left}"


# --- running pmemd --------------------------------------------------------------------------


@dataclass
class CliRun:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def text(self) -> str:
        return self.stdout + self.stderr

    def actions(self) -> list[dict[str, Any]]:
        """Every outcome of every pass of ``apply --json``."""
        return [a for p in self.json["passes"] for a in p["actions"]]

    def side_effects(self) -> list[str]:
        """The side effects, with the filesystem UUID pmemd picks for mkfs shown as UUID."""
        return [re.sub(r"(-U |-m uuid=)[0-9a-f-]{36}", r"\1UUID", s)
                for p in self.json["passes"] for s in p["side_effects"]]

    def issues(self) -> list[dict[str, Any]]:
        return [i for p in self.json["passes"] for i in p["issues"]]


def pmemd(tree: HostTree | Path, *args: str) -> CliRun:
    """``pmemd --root TREE ARGS`` in this process (fast); stdout and stderr captured. Journal
    entries go to stderr, never to this machine's journald."""
    import pmemd.journal
    from pmemd.cli import main

    root = tree.path if isinstance(tree, HostTree) else tree
    argv = ["--root", str(root), *args]
    out, err = io.StringIO(), io.StringIO()
    saved = pmemd.journal._journal_sender
    pmemd.journal._journal_sender = lambda: None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    finally:
        pmemd.journal._journal_sender = saved
    return CliRun(argv, rc, out.getvalue(), err.getvalue())


def pmemd_argv(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pmemd", "--root", str(root), *args]


def pmemd_env(path_prefix: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV_"))}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if path_prefix:
        env["PATH"] = path_prefix + os.pathsep + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    return env


class KernelLog:
    """Kernel messages logged after construction, read from /dev/kmsg by sequence (unlike a
    line count of dmesg, this survives the ring buffer wrapping and never sees older lines)."""

    def __init__(self) -> None:
        try:
            self.fd: int | None = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            self.fd = None
            return
        os.lseek(self.fd, 0, os.SEEK_END)

    @property
    def readable(self) -> bool:
        return self.fd is not None

    def messages(self) -> list[str]:
        if self.fd is None:
            return []
        out = []
        while True:
            try:
                rec = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:  # records overwritten while reading: go on with the next
                continue
            if not rec:
                break
            _, _, msg = rec.decode(errors="replace").partition(";")
            out.append(msg.split("\n", 1)[0])
        return out

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# --- the final check ------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def leak_check() -> Iterator[None]:
    """Fails the session if a loop device or mount made by these tests survived."""
    yield
    if SKIP is not None:
        return
    loops = sh("losetup", "-a", check=False).stdout.splitlines()
    leaked_loops = [ln for ln in loops if any(str(img) in ln for img in _IMAGES)]
    leaked_mounts = [m for t in _TREES for m in live_mounts_under(t)] if _TREES else []
    assert not leaked_loops, f"loop devices left attached: {leaked_loops}"
    assert not leaked_mounts, f"mounts left: {leaked_mounts}"
