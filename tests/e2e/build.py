"""Build (and cache) the Debian 13 guest image for the pmemd e2e harness.

The image is one partitioned raw disk (MBR, one ext4 partition labelled
``pmemroot``, GRUB for i386-pc in the MBR gap) plus copies of the kernel and the
initrd for a fast direct-kernel boot of the same disk.

Cache layout (``$PMEMD_E2E_CACHE``, default ``/var/cache/pmemd-e2e``)::

    debs/                 debootstrap --cache-dir (the downloaded .debs)
    images/<key16>/       one built image: disk.raw (read-only), vmlinuz,
                          initrd.img, manifest.json, READY
    tmp/                  scratch space of a running build

``<key16>`` is the start of the sha256 over the recipe: this file, the package
list and everything in ``image/``. A build happens only when that key changes;
older image dirs are pruned after a successful build.

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITE = "trixie"
DISK_SIZE = "4G"
RECIPE_FILES = ("build.py", "packages.txt", "image/customize.sh", "image/harness-job.service",
                "image/harness-run")


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


def packages() -> list[str]:
    pk = []
    for raw in (HERE / "packages.txt").read_text().splitlines():
        name = raw.split("#", 1)[0].strip()
        if name:
            pk.append(name)
    return pk


def recipe_key() -> str:
    h = hashlib.sha256()
    h.update(f"suite={SUITE} disk={DISK_SIZE}\n".encode())
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

def run(cmd: list[str], *, log_to: Path | None = None, **kw) -> subprocess.CompletedProcess:
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

    def callback_quiet(self, fn, *args, **kw):  # type: ignore[no-untyped-def]
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
    def manifest(self) -> dict:
        return json.loads((self.dir / "manifest.json").read_text())


def cached_image() -> Image | None:
    d = cache_dir() / "images" / recipe_key()[:16]
    return Image(d) if (d / "READY").exists() else None


def ensure_image(force: bool = False) -> Image:
    """Return the cached image for the current recipe, building it if needed."""
    t0 = time.monotonic()
    key = recipe_key()
    root = cache_dir()
    final = root / "images" / key[:16]
    if not force and (final / "READY").exists():
        log(f"image build: cached ({final}) in {time.monotonic() - t0:.1f} s")
        return Image(final)
    with file_lock(root / ".build.lock"):
        if not force and (final / "READY").exists():
            log(f"image build: cached after waiting for another build ({final})")
            return Image(final)
        with step(f"image build (cold, key {key[:16]})"):
            _build(root, key, final)
    return Image(final)


def _build(root: Path, key: str, final: Path) -> None:
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    (root / "debs").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=root / "tmp"))
    blog = work / "build.log"
    log(f"build log: {blog}")
    started = time.time()
    t0 = time.monotonic()
    with Cleanup() as cl:
        cl.callback_quiet(safe_rmtree, work)
        rootfs = work / "rootfs"
        mirror_uri = mirror()
        with step(f"debootstrap {SUITE} from {mirror_uri}"):
            run(["debootstrap", "--variant=minbase", f"--cache-dir={root / 'debs'}",
                 "--include=" + ",".join(packages()), SUITE, str(rootfs), mirror_uri],
                log_to=blog)
        with step("customize rootfs"):
            shutil.copy(HERE / "image/harness-run", rootfs / "usr/local/sbin/harness-run")
            os.chmod(rootfs / "usr/local/sbin/harness-run", 0o755)  # noqa: S103
            shutil.copy(HERE / "image/harness-job.service",
                        rootfs / "etc/systemd/system/harness-job.service")
            shutil.copy(HERE / "image/customize.sh", rootfs / "customize.sh")
            run(["chroot", str(rootfs), "/bin/sh", "/customize.sh"], log_to=blog)
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
        with step("GRUB disk image (loop + chroot)"):
            _make_disk(rootfs, out / "disk.raw", work, blog)
        os.chmod(out / "disk.raw", 0o444)
        pkgs = dict(line.split(" ", 1) for line in versions.splitlines() if " " in line)
        manifest = {
            "key": key, "suite": SUITE, "mirror": mirror_uri, "kernel": kver,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "build_seconds": round(time.monotonic() - t0, 1),
            "packages": {p: pkgs.get(p) for p in packages()},
            "all_packages": pkgs,
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        (out / "READY").write_text(key + "\n")
        safe_rmtree(rootfs)
        (final.parent).mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        os.rename(out, final)
    # prune images of older recipes
    for other in (root / "images").iterdir():
        if other != final and other.is_dir():
            log(f"pruning old image {other}")
            shutil.rmtree(other, ignore_errors=True)


def _make_disk(rootfs: Path, disk: Path, work: Path, blog: Path) -> None:
    with Cleanup() as cl:
        _make_disk_in(rootfs, disk, work, blog, cl)


def _make_disk_in(rootfs: Path, disk: Path, work: Path, blog: Path, cl: Cleanup) -> None:
    run(["truncate", "-s", DISK_SIZE, str(disk)])
    run(["sfdisk", "-q", str(disk)], input=b"label: dos\nstart=2048, type=83, bootable\n",
        log_to=blog)
    loop = subprocess.run(["losetup", "--find", "--show", "--partscan", str(disk)],
                          check=True, capture_output=True, text=True).stdout.strip()
    cl.callback_quiet(detach_loop, loop)
    part = loop + "p1"
    # Without udev, --partscan does not always create the node; partx -a does.
    for _ in range(20):
        if os.path.exists(part):
            break
        subprocess.run(["partx", "-a", loop], capture_output=True, check=False)
        time.sleep(0.2)
    if not os.path.exists(part):
        raise RuntimeError(f"{part} did not appear")
    run(["mkfs.ext4", "-q", "-L", "pmemroot", "-d", str(rootfs), part], log_to=blog)
    mnt = work / "mnt"
    mnt.mkdir()
    run(["mount", part, str(mnt)])
    # Registered before the binds, so it runs after they are gone (LIFO).
    cl.callback_quiet(umount, str(mnt))
    for src, dst, args in (("/dev", "dev", ["--bind"]), ("/dev/pts", "dev/pts", ["--bind"]),
                           ("proc", "proc", ["-t", "proc"]), ("sysfs", "sys", ["-t", "sysfs"])):
        target = str(mnt / dst)
        run(["mount", *args, src, target])
        cl.callback_quiet(umount, target)
    run(["chroot", str(mnt), "grub-install", "--target=i386-pc", loop], log_to=blog)
    run(["chroot", str(mnt), "update-grub"], log_to=blog)
    cfg = mnt / "boot/grub/grub.cfg"
    text = cfg.read_text()
    uuid = subprocess.run(["blkid", "-s", "UUID", "-o", "value", part], check=True,
                          capture_output=True, text=True).stdout.strip()
    if f"root={part}" in text:  # no /dev/disk/by-uuid on the build host
        log(f"grub.cfg had root={part}; rewriting to root=UUID={uuid}")
        cfg.write_text(text.replace(f"root={part}", f"root=UUID={uuid}"))
    # Unmount now (not only at exit) so the image is complete before we copy it.
    for dst in ("sys", "proc", "dev/pts", "dev"):
        umount(str(mnt / dst))
    umount(str(mnt))
    subprocess.run(["sync"], check=True)


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even if cached")
    ap.add_argument("--print-key", action="store_true")
    args = ap.parse_args(argv)
    if args.print_key:
        print(recipe_key())
        return 0
    img = ensure_image(force=args.force)
    print(img.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
