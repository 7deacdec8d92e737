"""Build (and cache) the Debian guest images for the pmemd e2e harness.

One recipe, five boot layouts (``LAYOUTS``); each image is one partitioned raw
disk with an ext4 root labelled ``pmemroot`` plus copies of the kernel and the
initrd (for a fast direct-kernel boot, and the KVM probe):

* ``bios``: MBR, one partition, GRUB for i386-pc in the MBR gap (SeaBIOS).
* ``uefi-grub``: GPT, an ESP mounted at ``/boot/efi`` and the root; GRUB for
  x86_64-efi on the removable path ``EFI/BOOT/BOOTX64.EFI`` (OVMF).
* ``sdboot``: GPT, an ESP mounted at ``/boot`` and the root; systemd-boot
  (``bootctl install``) with Type #1 entries written by kernel-install from
  ``/etc/kernel/cmdline`` (OVMF).
* ``bookworm-bios``: ``bios`` on Debian 12 (kernel 6.1, systemd 252, GRUB 2.06,
  pydantic 1.10); the other layouts are Debian 13 (trixie).
* ``ssh-bios``: ``bios`` with openssh-server, for Ansible over SSH.

Cache layout (``$PMEMD_E2E_CACHE``, default ``/var/cache/pmemd-e2e``)::

    debs/                        debootstrap --cache-dir (the downloaded .debs)
    images/<layout>-<key16>/     one built image: disk.raw (read-only), vmlinuz,
                                 initrd.img, manifest.json, READY
    tmp/                         scratch space of a running build

``<key16>`` is the start of the sha256 over the recipe: this file, the package
list, everything in ``image/`` and the layout. A build happens only when that key
changes; older image dirs of the same layout are pruned after a successful build.

Needs root (debootstrap, loop devices, mount, chroot).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SUITE = "trixie"  # the suite of every layout that names no other
DISK_SIZE = "4G"
RECIPE_FILES = ("build.py", "packages.txt", "image/customize.sh", "image/harness-job.service",
                "image/harness-run")
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_FS_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
KERNEL_CMDLINE = "ro console=ttyS0,115200"  # after root=UUID=...; what GRUB's entries carry too


@dataclass(frozen=True)
class Layout:
    """How one image boots. Everything else about the guest is shared."""

    name: str
    packages: tuple[str, ...]  # added to packages.txt for this layout only
    firmware: str  # "bios" (SeaBIOS, -machine pc) or "uefi" (OVMF, -machine q35)
    esp: str | None = None  # where the ESP is mounted in the guest (GPT disks only)
    esp_size: str = "0"
    suite: str = SUITE

    @property
    def root_part(self) -> int:
        return 2 if self.esp else 1


LAYOUTS = {
    "bios": Layout("bios", ("grub-pc",), "bios"),
    "uefi-grub": Layout("uefi-grub", ("grub-efi-amd64", "dosfstools"), "uefi", esp="/boot/efi",
                        esp_size="128M"),
    # debootstrap does not resolve `A | B` in --include: systemd-boot-efi is listed itself.
    # The ESP is /boot: it holds vmlinuz+initrd twice per kernel (dpkg's and kernel-install's copy).
    "sdboot": Layout("sdboot", ("systemd-boot", "systemd-boot-efi", "systemd-boot-tools", "dosfstools"),
                     "uefi", esp="/boot", esp_size="512M"),
    "bookworm-bios": Layout("bookworm-bios", ("grub-pc",), "bios", suite="bookworm"),
    # bios with an SSH server, for Ansible driving guests (tests/e2e/test_ansible.py); networking
    # is the job's (systemd-networkd, DHCP from QEMU's user network)
    "ssh-bios": Layout("ssh-bios", ("grub-pc", "openssh-server", "python3-apt"), "bios"),
}


def layout_of(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown image layout {name!r} (one of {', '.join(LAYOUTS)})") from None


def log(msg: str) -> None:
    print(f"[e2e] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Print how long a step took (also when it fails)."""
    t0 = time.monotonic()
    log(f"{name} ...")
    ok = False
    try:
        yield
        ok = True
    finally:
        log(f"{name}: {'done' if ok else 'FAILED'} in {time.monotonic() - t0:.1f} s")


def cache_dir() -> Path:
    return Path(os.environ.get("PMEMD_E2E_CACHE", "/var/cache/pmemd-e2e"))


def packages(layout: str = "bios") -> list[str]:
    pk = []
    for raw in (HERE / "packages.txt").read_text().splitlines():
        name = raw.split("#", 1)[0].strip()
        if name:
            pk.append(name)
    return pk + list(layout_of(layout).packages)


def recipe_key(layout: str = "bios") -> str:
    h = hashlib.sha256()
    h.update(f"suite={layout_of(layout).suite} disk={DISK_SIZE} layout={layout_of(layout)!r}\n".encode())
    for rel in RECIPE_FILES:
        h.update(rel.encode() + b"\0" + (HERE / rel).read_bytes() + b"\0")
    return h.hexdigest()


# --------------------------------------------------------------------------- mirror

def _first_uri_from_sources(text: str) -> str | None:
    """deb822 .sources: the first URIs: value (of a deb stanza) not ending in -security."""
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
        if "deb" not in fields.get("types", "deb").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            if not uri.rstrip("/").endswith("-security"):
                return uri.rstrip("/")
    return None


def _first_uri_from_list(text: str) -> str | None:
    """one-line sources.list format."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        parts = line.split()[1:]
        if parts and parts[0].startswith("["):
            while parts and not parts[0].endswith("]"):
                parts.pop(0)
            parts = parts[1:]
        if parts and not parts[0].rstrip("/").endswith("-security"):
            return parts[0].rstrip("/")
    return None


def mirror() -> str:
    """The Debian mirror this host's apt uses (env MIRROR overrides). Never hard-coded."""
    env = os.environ.get("MIRROR")
    if env:
        return env.rstrip("/")
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with contextlib.suppress(OSError):
            uri = _first_uri_from_sources(Path(path).read_text())
            if uri:
                return uri
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        with contextlib.suppress(OSError):
            uri = _first_uri_from_list(Path(path).read_text())
            if uri:
                return uri
    raise RuntimeError("no Debian mirror found in /etc/apt/sources.list*; set MIRROR=")


# --------------------------------------------------------------------------- helpers

def run(cmd: list[str], *, log_to: Path | None = None, **kw: Any) -> subprocess.CompletedProcess[Any]:
    if log_to is None:
        return subprocess.run(cmd, check=True, **kw)
    with open(log_to, "ab") as fh:
        fh.write(("+ " + " ".join(cmd) + "\n").encode())
        fh.flush()
        try:
            return subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT, **kw)
        except subprocess.CalledProcessError:
            fh.flush()
            tail = log_to.read_text(errors="replace").splitlines()[-30:]
            log(f"command failed: {' '.join(cmd)}; last lines of {log_to}:")
            for line in tail:
                log("    " + line)
            raise


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below path (from /proc/self/mountinfo)."""
    base = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == base or mp.startswith(base.rstrip("/") + "/"):
                found.append(mp)
    return found


def safe_rmtree(path: Path) -> None:
    """rm -rf that refuses to descend into anything still mounted (bind mounts of /dev ...)."""
    if not os.path.lexists(path):
        return
    left = mounts_under(path)
    if left:
        raise RuntimeError(f"refusing to remove {path}: still mounted: {left}")
    shutil.rmtree(path)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Cleanup(contextlib.ExitStack):
    """ExitStack whose callbacks never raise (each failure is logged) so every one runs."""

    def callback_quiet(self, fn: Callable[..., object], *args: Any, **kw: Any) -> None:
        def wrapped() -> None:
            try:
                fn(*args, **kw)
            except Exception as exc:
                log(f"cleanup: {getattr(fn, '__name__', fn)}{args}: {exc}")
        self.callback(wrapped)


def umount(path: str) -> None:
    r = subprocess.run(["umount", path], capture_output=True, text=True, check=False)
    if r.returncode != 0 and os.path.ismount(path):
        subprocess.run(["umount", "-l", path], check=True)


def detach_loop(dev: str) -> None:
    subprocess.run(["losetup", "-d", dev], check=True)


# --------------------------------------------------------------------------- image

@dataclass(frozen=True)
class Image:
    dir: Path

    @property
    def disk(self) -> Path:
        return self.dir / "disk.raw"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    @property
    def manifest(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.dir / "manifest.json").read_text())
        return data

    @property
    def layout(self) -> Layout:
        return layout_of(self.manifest.get("layout", "bios"))


def image_dir(layout: str) -> Path:
    return cache_dir() / "images" / f"{layout}-{recipe_key(layout)[:16]}"


def cached_image(layout: str = "bios") -> Image | None:
    d = image_dir(layout)
    return Image(d) if (d / "READY").exists() else None


def ensure_image(force: bool = False, layout: str = "bios") -> Image:
    """Return the cached image of `layout` for the current recipe, building it if needed."""
    t0 = time.monotonic()
    lay = layout_of(layout)
    key = recipe_key(layout)
    root = cache_dir()
    final = image_dir(layout)
    if not force and (final / "READY").exists():
        log(f"image build ({layout}): cached ({final}) in {time.monotonic() - t0:.1f} s")
        return Image(final)
    with file_lock(root / ".build.lock"):
        if not force and (final / "READY").exists():
            log(f"image build ({layout}): cached after waiting for another build ({final})")
            return Image(final)
        with step(f"image build ({layout}, cold, key {key[:16]})"):
            _build(root, key, final, lay)
    return Image(final)


@dataclass(frozen=True)
class DiskIds:
    """Identifiers chosen before the build, so the boot config can name them before mkfs."""

    root_uuid: str
    esp_volid: str  # mkfs.vfat -i; blkid shows it as XXXX-XXXX

    @property
    def esp_uuid(self) -> str:
        return f"{self.esp_volid[:4]}-{self.esp_volid[4:]}".upper()


def _build(root: Path, key: str, final: Path, lay: Layout) -> None:
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    (root / "debs").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"build-{lay.name}-", dir=root / "tmp"))
    blog = work / "build.log"
    log(f"build log: {blog}")
    started = time.time()
    t0 = time.monotonic()
    ids = DiskIds(str(uuid.uuid4()), uuid.uuid4().hex[:8])
    with Cleanup() as cl:
        cl.callback_quiet(safe_rmtree, work)
        rootfs = work / "rootfs"
        mirror_uri = mirror()
        if lay.name == "sdboot":
            # Before debootstrap installs the kernel: kernel-install (run by the kernel's and
            # initramfs-tools' hooks) copies /proc/cmdline -- the build host's -- without it.
            (rootfs / "etc/kernel").mkdir(parents=True)
            (rootfs / "etc/kernel/cmdline").write_text(f"root=UUID={ids.root_uuid} {KERNEL_CMDLINE}\n")
        with step(f"debootstrap {lay.suite} from {mirror_uri} ({lay.name})"):
            run(["debootstrap", "--variant=minbase", f"--cache-dir={root / 'debs'}",
                 "--include=" + ",".join(packages(lay.name)), lay.suite, str(rootfs), mirror_uri],
                log_to=blog)
        with step("customize rootfs"):
            shutil.copy(HERE / "image/harness-run", rootfs / "usr/local/sbin/harness-run")
            os.chmod(rootfs / "usr/local/sbin/harness-run", 0o755)  # noqa: S103
            shutil.copy(HERE / "image/harness-job.service",
                        rootfs / "etc/systemd/system/harness-job.service")
            shutil.copy(HERE / "image/customize.sh", rootfs / "customize.sh")
            run(["chroot", str(rootfs), "env", f"LAYOUT={lay.name}", f"ESP={lay.esp or ''}",
                 f"ESP_UUID={ids.esp_uuid}", "/bin/sh", "/customize.sh"], log_to=blog)
            (rootfs / "customize.sh").unlink()
            versions = subprocess.run(
                ["chroot", str(rootfs), "dpkg-query", "-W", "-f", "${Package} ${Version}\n"],
                check=True, capture_output=True, text=True).stdout
        out = work / "image"
        out.mkdir()
        kernels = sorted(glob.glob(str(rootfs / "boot/vmlinuz-*")))
        initrds = sorted(glob.glob(str(rootfs / "boot/initrd.img-*")))
        if len(kernels) != 1 or len(initrds) != 1:
            raise RuntimeError(f"expected one kernel and one initrd, got {kernels} {initrds}")
        shutil.copy(kernels[0], out / "vmlinuz")
        shutil.copy(initrds[0], out / "initrd.img")
        kver = Path(kernels[0]).name.removeprefix("vmlinuz-")
        with step(f"{lay.name} disk image (loop + chroot)"):
            extra = _make_disk(rootfs, out / "disk.raw", work, blog, lay, ids, kver)
        os.chmod(out / "disk.raw", 0o444)
        pkgs = dict(line.split(" ", 1) for line in versions.splitlines() if " " in line)
        manifest = {
            "key": key, "suite": lay.suite, "mirror": mirror_uri, "kernel": kver, "layout": lay.name,
            "firmware": lay.firmware, "root_uuid": ids.root_uuid,
            **({"esp": lay.esp, "esp_uuid": ids.esp_uuid} if lay.esp else {}), **extra,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "build_seconds": round(time.monotonic() - t0, 1),
            "packages": {p: pkgs.get(p) for p in packages(lay.name)},
            "all_packages": pkgs,
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        (out / "READY").write_text(key + "\n")
        safe_rmtree(rootfs)
        (final.parent).mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        os.rename(out, final)
    # prune older images of this layout (and those named by key alone, from before layouts)
    for other in (root / "images").iterdir():
        stale = other.name.startswith(f"{lay.name}-") or re.fullmatch(r"[0-9a-f]{16}", other.name)
        if other != final and other.is_dir() and stale:
            log(f"pruning old image {other}")
            shutil.rmtree(other, ignore_errors=True)


def _make_disk(rootfs: Path, disk: Path, work: Path, blog: Path, lay: Layout, ids: DiskIds,
               kver: str) -> dict[str, str]:
    with Cleanup() as cl:
        return _make_disk_in(rootfs, disk, work, blog, cl, lay, ids, kver)


def _partition_table(lay: Layout) -> bytes:
    if lay.esp is None:
        return b"label: dos\nstart=2048, type=83, bootable\n"
    return (f"label: gpt\nstart=2048, size={lay.esp_size}, type={ESP_TYPE}, name=ESP\n"
            f"type={LINUX_FS_TYPE}, name=pmemroot\n").encode()


def _partition(loop: str, number: int) -> str:
    part = f"{loop}p{number}"
    # Without udev, --partscan does not always create the node; partx -a does.
    for _ in range(20):
        if os.path.exists(part):
            return part
        subprocess.run(["partx", "-a", loop], capture_output=True, check=False)
        time.sleep(0.2)
    raise RuntimeError(f"{part} did not appear")


def _make_disk_in(rootfs: Path, disk: Path, work: Path, blog: Path, cl: Cleanup, lay: Layout,
                  ids: DiskIds, kver: str) -> dict[str, str]:
    run(["truncate", "-s", DISK_SIZE, str(disk)])
    run(["sfdisk", "-q", str(disk)], input=_partition_table(lay), log_to=blog)
    loop = subprocess.run(["losetup", "--find", "--show", "--partscan", str(disk)],
                          check=True, capture_output=True, text=True).stdout.strip()
    cl.callback_quiet(detach_loop, loop)
    part = _partition(loop, lay.root_part)
    esp_part = _partition(loop, 1) if lay.esp else None
    boot_files = work / "boot-files"
    if lay.esp == "/boot":
        # /boot is the ESP: what dpkg put into the rootfs' /boot goes onto the FAT filesystem.
        shutil.move(rootfs / "boot", boot_files)
        (rootfs / "boot").mkdir()
    elif lay.esp:
        (rootfs / lay.esp.lstrip("/")).mkdir(parents=True, exist_ok=True)
    run(["mkfs.ext4", "-q", "-L", "pmemroot", "-U", ids.root_uuid, "-d", str(rootfs), part], log_to=blog)
    if esp_part:
        run(["mkfs.vfat", "-F", "32", "-n", "ESP", "-i", ids.esp_volid, esp_part], log_to=blog)
    mnt = work / "mnt"
    mnt.mkdir()
    run(["mount", part, str(mnt)])
    # Registered before the binds, so it runs after they are gone (LIFO).
    cl.callback_quiet(umount, str(mnt))
    inner = [("/dev", "dev", ["--bind"]), ("/dev/pts", "dev/pts", ["--bind"]),
             ("proc", "proc", ["-t", "proc"]), ("sysfs", "sys", ["-t", "sysfs"])]
    if esp_part and lay.esp:
        # The build host's kernel may have no vfat (this one has none), so the boot loaders
        # install into a tmpfs whose mount *source* is the ESP partition: grub-install finds the
        # ESP's device through mountinfo and probes it itself (FAT, as it requires), bootctl gets
        # the mount point it requires; the tree is then written onto the FAT by mtools.
        inner.insert(0, (esp_part, lay.esp.lstrip("/"), ["-t", "tmpfs", "-o", "mode=0755"]))
    for src, dst, args in inner:
        target = str(mnt / dst)
        run(["mount", *args, src, target])
        cl.callback_quiet(umount, target)
    extra: dict[str, str] = {}
    if lay.firmware == "bios":
        run(["chroot", str(mnt), "grub-install", "--target=i386-pc", loop], log_to=blog)
    elif lay.name == "uefi-grub":
        run(["chroot", str(mnt), "grub-install", "--target=x86_64-efi", f"--efi-directory={lay.esp}",
             "--removable", "--no-nvram"], log_to=blog)
    if lay.firmware == "bios" or lay.name == "uefi-grub":
        run(["chroot", str(mnt), "update-grub"], log_to=blog)
        cfg = mnt / "boot/grub/grub.cfg"
        text = cfg.read_text()
        if f"root={part}" in text:  # no /dev/disk/by-uuid on the build host
            log(f"grub.cfg had root={part}; rewriting to root=UUID={ids.root_uuid}")
            cfg.write_text(text.replace(f"root={part}", f"root=UUID={ids.root_uuid}"))
        if f"root=UUID={ids.root_uuid}" not in cfg.read_text():
            raise RuntimeError(f"grub.cfg does not boot root=UUID={ids.root_uuid}")
    if lay.name == "sdboot":
        extra = _install_sdboot(mnt, boot_files, blog, ids, kver)
    if esp_part and lay.esp:
        esp_tree = mnt / lay.esp.lstrip("/")
        if not (esp_tree / "EFI/BOOT/BOOTX64.EFI").exists():
            raise RuntimeError(f"no removable-path boot loader EFI/BOOT/BOOTX64.EFI in {esp_tree}")
        _copy_to_fat(esp_tree, esp_part, blog)
    # Unmount now (not only at exit) so the image is complete before we copy it.
    for _src, dst, _args in reversed(inner):
        umount(str(mnt / dst))
    umount(str(mnt))
    subprocess.run(["sync"], check=True)
    return extra


def _copy_to_fat(tree: Path, part: str, blog: Path) -> None:
    """Write the files of `tree` onto the FAT filesystem on `part` (mtools, no kernel vfat)."""
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    names = sorted(p.name for p in tree.iterdir())
    if names:
        run(["mcopy", "-s", "-p", "-m", "-Q", "-i", part, *(str(tree / n) for n in names), "::/"],
            log_to=blog, env=env)
    want = sorted(str(p.relative_to(tree)).upper() for p in tree.rglob("*") if p.is_file())
    listing = subprocess.run(["mdir", "-/", "-b", "-i", part, "::/"], check=True, capture_output=True,
                             text=True, env=env).stdout
    have = sorted(ln.removeprefix("::/").upper() for ln in listing.splitlines()
                  if ln.strip() and not ln.endswith("/"))
    if have != want:
        raise RuntimeError(f"ESP copy incomplete: missing {sorted(set(want) - set(have))}")
    log(f"ESP: {len(have)} files written onto the FAT filesystem")


def _install_sdboot(mnt: Path, boot_files: Path, blog: Path, ids: DiskIds, kver: str) -> dict[str, str]:
    """bootctl install onto the ESP at /boot, then one Type #1 entry by kernel-install."""
    cmdline = (mnt / "etc/kernel/cmdline").read_text().split()
    if cmdline != [f"root=UUID={ids.root_uuid}", *KERNEL_CMDLINE.split()]:
        raise RuntimeError(f"/etc/kernel/cmdline changed during the build: {cmdline}")
    for f in sorted(boot_files.iterdir()):  # dpkg's kernel and initrd (FAT: no links, no owners)
        if f.is_file() and re.match(r"(vmlinuz|initrd\.img|config|System\.map)-", f.name):
            shutil.copyfile(f, mnt / "boot" / f.name)
    # `bootctl install` in a chroot: the ESP must be a mount point (it is), its partition checks
    # relaxed (no udev database here) and no EFI variables (OVMF boots the removable path).
    run(["chroot", str(mnt), "env", "SYSTEMD_RELAX_ESP_CHECKS=1", "bootctl", "install",
         "--esp-path=/boot", "--no-variables"], log_to=blog)
    run(["chroot", str(mnt), "env", "SYSTEMD_RELAX_ESP_CHECKS=1", "kernel-install", "--verbose", "add",
         kver, f"/boot/vmlinuz-{kver}", f"/boot/initrd.img-{kver}"], log_to=blog)
    machine_id = (mnt / "etc/machine-id").read_text().strip()
    entries = sorted((mnt / "boot/loader/entries").glob("*.conf"))
    want = mnt / "boot/loader/entries" / f"{machine_id}-{kver}.conf"
    if entries != [want]:
        raise RuntimeError(f"expected the one entry {want.name}, got {[e.name for e in entries]}")
    options = [ln.split()[1:] for ln in want.read_text().splitlines() if ln.startswith("options ")]
    if not options or options[0][:len(cmdline)] != cmdline:
        raise RuntimeError(f"{want.name}: options {options} do not start with /etc/kernel/cmdline {cmdline}")
    with open(blog, "a") as fh:
        fh.write(f"== {want.name}\n{want.read_text()}== loader.conf\n"
                 f"{(mnt / 'boot/loader/loader.conf').read_text()}")
    return {"machine_id": machine_id, "entry": want.name}


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even if cached")
    ap.add_argument("--print-key", action="store_true")
    ap.add_argument("--layout", choices=sorted(LAYOUTS), default="bios")
    args = ap.parse_args(argv)
    if args.print_key:
        print(recipe_key(args.layout))
        return 0
    img = ensure_image(force=args.force, layout=args.layout)
    print(img.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
