#!/usr/bin/env python3
"""pmemd e2e harness: run a job inside a real Debian 13 QEMU guest.

CLI::

    python3 tests/e2e/guest.py build [--force]         # build/refresh the cached image
    python3 tests/e2e/guest.py probe                   # which accelerator (kvm|tcg) works
    python3 tests/e2e/guest.py run --job job.sh [--file F ...] [--append 'memmap=1G!5G']
                               [--grub | --mode uefi-grub|sdboot] [--channel 9p|disk]
                               [--nvdimm 1G] [--out DIR] [--expect-panic REGEX]

API (for pytest)::

    from guest import run_job, skip_reason
    res = run_job("uname -r > $HARNESS_OUT/uname\\n", append="memmap=512M!5G")
    res.read("uname")

The job protocol (guest side: image/harness-run) runs job.sh once per boot with
$HARNESS_BOOT, $HARNESS_OUT (guest-local dir, packed as one tarball per boot),
$HARNESS_FILES (the --file copies) and $HARNESS_NEXT (write "reboot" there to get
another boot; the default is power-off). QEMU always runs with -no-reboot on a
throw-away qcow2 overlay of the cached disk; a guest reboot ends the qemu process
with "reboot: Restarting system" on the console, and the harness starts qemu again
on the same overlay. "reboot: Power down" ends the run.

Kernel panics: by default any "Kernel panic - not syncing" on the console raises GuestPanic
3 s later (a TCG artefact; run_job retries the whole run). With run_job(expect_panic=REGEX),
a panic in a boot whose console output so far matches REGEX (e.g.
r"[Cc]ommand line:.*pmemd\\.trial=1" with loglevel=6, or r"sysrq: Trigger a crash") is expected:
the harness waits for qemu to exit by itself (the kernel resets after `panic=N` seconds and
-no-reboot turns the reset into an exit; bounded by the boot timeout), records that boot's
BootInfo.end as "panic" and starts the next boot on the same overlay (and OVMF VARS copy),
as after a reboot.

Boot numbers: BootInfo.number counts qemu starts (console-boot<N>.log); the job files
(job-boot<k>.rc/.log, anything the job names after $HARNESS_BOOT) are numbered by the guest's
own counter HARNESS_BOOT, which advances only when harness-run starts. A boot that panics before
the job runs leaves HARNESS_BOOT where it was, so from then on the two differ:
BootInfo.job_boot is the HARNESS_BOOT of each qemu boot (None if the job never started),
RunResult.job_boot(n) / .job_boots / .non_panic_boots map between them, and rc(k) / job_log(k)
take HARNESS_BOOT numbers.

Boot modes (MODES): "kernel" (direct -kernel/-initrd of the BIOS image), "grub" (SeaBIOS,
GRUB from the MBR), "uefi-grub" (OVMF, GRUB EFI from the ESP's removable path), "sdboot"
(OVMF, systemd-boot). The UEFI modes run -machine q35 with OVMF_CODE_4M.fd read-only and a
private copy of OVMF_VARS_4M.fd per run, kept across that run's reboots.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import build  # noqa: E402
from build import Image, cache_dir, ensure_image, log, step  # noqa: E402

__all__ = ["MODES", "BootInfo", "GuestError", "GuestPanic", "Image", "RunResult", "accel", "cache_dir",
           "ensure_image", "log", "run_job", "run_jobs", "skip_reason", "step"]

QEMU = "qemu-system-x86_64"
# boot mode -> image layout (build.LAYOUTS)
MODES = {"kernel": "bios", "grub": "bios", "uefi-grub": "uefi-grub", "sdboot": "sdboot",
         "bookworm-grub": "bookworm-bios", "ssh-grub": "ssh-bios"}
OVMF_CODE = Path(os.environ.get("PMEMD_E2E_OVMF_CODE", "/usr/share/OVMF/OVMF_CODE_4M.fd"))
OVMF_VARS = Path(os.environ.get("PMEMD_E2E_OVMF_VARS", "/usr/share/OVMF/OVMF_VARS_4M.fd"))
DEFAULT_MEM = "8G"
DIRECT_APPEND = "root=/dev/vda1 ro console=ttyS0,115200 quiet"
PROBE_SECONDS = 25.0

RE_RESTART = re.compile(r"reboot: Restarting system")
RE_POWEROFF = re.compile(r"reboot: Power down")
RE_PANIC = re.compile(r"Kernel panic - not syncing")
# harness-run's first console line of a boot: which HARNESS_BOOT this qemu boot is
RE_JOB_BOOT = re.compile(r"HARNESS: boot (\d+): job runner started")
# an unexpected panic fails the boot this long after it is seen (the oops text is complete)
PANIC_GRACE = 3.0
# ANSI CSI sequences (incl. "ESC [ ! p") and OSC sequences (ESC ] 104 BEL) from systemd/getty
RE_ANSI = re.compile(r"\x1b\[[0-9;?!]*[A-Za-z]|\x1b\][0-9;]*[^\x07\x1b]*(?:\x07|\x1b\\)?")

# Every qemu we start, by PID, so nothing survives us (also on exceptions/atexit).
_LIVE: dict[int, subprocess.Popen[bytes]] = {}
_LIVE_LOCK = threading.Lock()
# Set while concurrent runs are being stopped: no new qemu may start (a run between two boots).
_STOPPING = threading.Event()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(timeout=10)
    with _LIVE_LOCK:
        _LIVE.pop(proc.pid, None)


@atexit.register
def _kill_all() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
    for p in procs:
        _kill(p)


def stop_all() -> None:
    """Start no new qemu and kill every running one (an interrupted session, a closing pool)."""
    _STOPPING.set()
    _kill_all()


def stopping() -> bool:
    return _STOPPING.is_set()


def resume() -> None:
    _STOPPING.clear()


class GuestError(RuntimeError):
    """A boot failed (timeout, panic, no reboot/power-down line, ...)."""


class GuestPanic(GuestError):
    """The guest kernel panicked unexpectedly (seen now and then under TCG; the run is retried).

    A panic that run_job(expect_panic=...) matched is not raised: that boot ends as "panic".
    """


def skip_reason(mode: str = "grub") -> str | None:
    """Why the e2e harness cannot run guests of boot `mode` here (None if it can)."""
    if os.geteuid() != 0:
        return "e2e guest tests need root (debootstrap, loop devices, chroot, 9p)"
    tools = [QEMU, "qemu-img", "debootstrap", "sfdisk", "losetup", "partx", "mkfs.ext4", "chroot", "debugfs"]
    if build.layout_of(MODES[mode]).firmware == "uefi":
        tools.append("mkfs.vfat")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        return ("missing host tools: " + ", ".join(missing) +
                " (apt-get install -y --no-install-recommends qemu-system-x86 qemu-utils"
                " debootstrap fdisk e2fsprogs dosfstools)")
    if build.layout_of(MODES[mode]).firmware == "uefi":
        gone = [str(p) for p in (OVMF_CODE, OVMF_VARS) if not p.is_file()]
        if gone:
            return "no OVMF firmware: " + ", ".join(gone) + " (apt-get install ovmf)"
    return None


def parse_size(s: str) -> int:
    m = re.fullmatch(r"(\d+)([KMGT]?)", s.strip().upper())
    if not m:
        raise ValueError(f"bad size {s!r}")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2)]


# --------------------------------------------------------------------------- console

class Console:
    """Reads qemu's stdout (the serial console) into a timestamped log file."""

    def __init__(self, proc: subprocess.Popen[bytes], logfile: Path, echo: bool) -> None:
        self.proc = proc
        self.t0 = time.monotonic()
        self.lines: list[str] = []
        self.events: list[tuple[float, str]] = []  # (t, "restart"|"poweroff"|"panic")
        self.linux_version_at: float | None = None
        self.changed = threading.Event()
        self._fh = open(logfile, "w", buffering=1, errors="replace")  # noqa: SIM115
        self._echo = echo
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        try:
            for raw in iter(self.proc.stdout.readline, b""):
                t = time.monotonic() - self.t0
                line = raw.decode("utf-8", "replace").replace("\r", "").rstrip("\n")
                # strip ANSI colour/cursor sequences systemd or getty may emit
                line = RE_ANSI.sub("", line)
                self.lines.append(line)
                self._fh.write(f"[{t:8.3f}] {line}\n")
                if self._echo:
                    print(f"  | [{t:7.2f}] {line}", file=sys.stderr, flush=True)
                if self.linux_version_at is None and "Linux version" in line:
                    self.linux_version_at = t
                for rx, ev in ((RE_RESTART, "restart"), (RE_POWEROFF, "poweroff"),
                               (RE_PANIC, "panic")):
                    if rx.search(line):
                        self.events.append((t, ev))
                self.changed.set()
        finally:
            self.changed.set()

    def close(self) -> None:
        self._thread.join(timeout=5)
        self._fh.close()

    def last_event(self) -> str | None:
        return self.events[-1][1] if self.events else None

    def panic_at(self) -> float | None:
        """Seconds after qemu's start when the first 'Kernel panic - not syncing' came."""
        return next((t for t, ev in list(self.events) if ev == "panic"), None)

    def text(self) -> str:
        return "\n".join(list(self.lines))

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])


def _die_with_parent() -> None:
    """In the qemu child: SIGKILL when the harness process dies, however it dies (a SIGTERM to
    pytest runs no atexit handler)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _start_qemu(cmd: list[str], logfile: Path, echo: bool) -> tuple[subprocess.Popen[bytes], Console]:
    if _STOPPING.is_set():
        raise GuestError("the harness is stopping: no new guest")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_die_with_parent)  # noqa: PLW1509 (one prctl call, no locks)
    with _LIVE_LOCK:
        _LIVE[proc.pid] = proc
    if _STOPPING.is_set():  # stopped while this one was starting
        _kill(proc)
        raise GuestError("the harness is stopping: no new guest")
    return proc, Console(proc, logfile, echo)


# --------------------------------------------------------------------------- accel

_ACCEL: str | None = None

ACCEL_ARGS = {
    "kvm": ["-accel", "kvm", "-cpu", "host"],
    "tcg": ["-accel", "tcg,thread=multi", "-cpu", "max"],
}


def _probe_kvm(image: Image, workdir: Path) -> tuple[bool, str]:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm not usable"
    cmd = [QEMU, "-machine", "pc", "-m", "1G", "-smp", "1", *ACCEL_ARGS["kvm"],
           "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "stdio",
           "-no-reboot", "-kernel", str(image.kernel),
           "-append", "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1"]
    proc, con = _start_qemu(cmd, workdir / "kvm-probe.log", echo=False)
    try:
        deadline = time.monotonic() + PROBE_SECONDS
        while time.monotonic() < deadline:
            if con.linux_version_at is not None:
                return True, f"kernel printed 'Linux version' after {con.linux_version_at:.1f} s"
            if proc.poll() is not None:
                break
            con.changed.wait(0.5)
            con.changed.clear()
        if proc.poll() is not None and con.linux_version_at is None:
            return False, "qemu exited: " + (con.tail(3).replace("\n", " | ") or "no output")
        return False, f"no 'Linux version' on the console within {PROBE_SECONDS:.0f} s"
    finally:
        _kill(proc)
        con.close()


def accel(image: Image | None = None) -> str:
    """'kvm' if a real kernel boots under KVM here, else 'tcg'. Env PMEMD_E2E_ACCEL overrides.

    The answer is cached per host boot in $CACHE/accel.json (the probe costs ~25 s when
    KVM is present but unusable, as with PVM nested virtualisation).
    """
    global _ACCEL  # noqa: PLW0603 (one probe per process)
    if _ACCEL:
        return _ACCEL
    env = os.environ.get("PMEMD_E2E_ACCEL")
    if env:
        if env not in ACCEL_ARGS:
            raise ValueError(f"PMEMD_E2E_ACCEL must be kvm or tcg, not {env!r}")
        _ACCEL = env
        log(f"accel: {env} (from PMEMD_E2E_ACCEL)")
        return env
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    qver = subprocess.run([QEMU, "--version"], capture_output=True, text=True,
                          check=True).stdout.split("\n")[0]
    memo = cache_dir() / "accel.json"
    with contextlib.suppress(Exception):
        saved = json.loads(memo.read_text())
        if saved["boot_id"] == boot_id and saved["qemu"] == qver:
            _ACCEL = saved["accel"]
            log(f"accel: {_ACCEL} (probed earlier this host boot: {saved['why']})")
            return _ACCEL
    image = image or ensure_image()
    with tempfile.TemporaryDirectory(prefix="pmemd-e2e-probe-") as td, step("KVM probe"):
        ok, why = _probe_kvm(image, Path(td))
    _ACCEL = "kvm" if ok else "tcg"
    log(f"accel: {_ACCEL} (KVM probe: {why})")
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps({"boot_id": boot_id, "qemu": qver, "accel": _ACCEL, "why": why}))
    return _ACCEL


# --------------------------------------------------------------------------- runs

@dataclass
class BootInfo:
    """One qemu process of a run.

    number: qemu boot number, 1, 2, ... (console-boot<number>.log).
    end: "restart" ("reboot: Restarting system"), "poweroff" ("reboot: Power down", the last
        boot) or "panic": a kernel panic that run_job's expect_panic matched, after which qemu
        exited by itself (the kernel's panic=N reset under -no-reboot); the run goes on with
        the next boot on the same overlay. An unexpected panic never ends up here: GuestPanic.
    job_boot: the guest's HARNESS_BOOT in this boot, read from harness-run's "HARNESS: boot <k>:
        job runner started" console line; None when that line is missing: the job runner never
        started (a boot that panicked, or was rebooted, before harness-job.service). The job's
        files (job-boot<k>.rc, b<k>-*) use k.
    panic_at: seconds after qemu's start when "Kernel panic - not syncing" appeared (end "panic").
    """

    number: int
    seconds: float
    end: str  # "restart" | "poweroff" | "panic"
    console: Path
    job_boot: int | None = None
    panic_at: float | None = None


@dataclass
class RunResult:
    out: Path
    accel: str
    mode: str
    boots: list[BootInfo] = field(default_factory=list)
    qemu_cmds: list[list[str]] = field(default_factory=list)

    def path(self, name: str) -> Path:
        return self.out / name

    def read(self, name: str) -> str:
        return (self.out / name).read_text()

    def rc(self, boot: int) -> int | None:
        """The job's exit code in HARNESS_BOOT `boot` (job-boot<boot>.rc); same as the qemu boot
        number unless a boot ended in an expected panic before the job ran (see job_boot())."""
        p = self.out / f"job-boot{boot}.rc"
        return int(p.read_text().strip()) if p.exists() else None

    def job_log(self, boot: int) -> str:
        """The job's output in HARNESS_BOOT `boot` (job-boot<boot>.log)."""
        p = self.out / f"job-boot{boot}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def job_boot(self, qemu_boot: int) -> int | None:
        """HARNESS_BOOT of qemu boot `qemu_boot` (None: the job never ran in it)."""
        return next(b.job_boot for b in self.boots if b.number == qemu_boot)

    @property
    def job_boots(self) -> list[int]:
        """The HARNESS_BOOT numbers the job ran with, in order (what rc()/job_log() take)."""
        return [b.job_boot for b in self.boots if b.job_boot is not None]

    @property
    def non_panic_boots(self) -> list[int]:
        """qemu boot numbers whose end was not "panic" (the boots that ran the job to its end)."""
        return [b.number for b in self.boots if b.end != "panic"]

    @property
    def seconds(self) -> float:
        return sum(b.seconds for b in self.boots)


def _qemu_cmd(*, image: Image, overlay: Path, accel_name: str, mode: str, append: str,
              channel: str, jobdir: Path, jobdisk: Path | None, nvdimm: Path | None,
              nvdimm_size: int, mem: str, smp: int, extra: Sequence[str],
              vars_fd: Path | None = None) -> list[str]:
    uefi = vars_fd is not None
    # UEFI: q35 (OVMF's usual machine; a VARS file is never shared across machine types)
    machine = "q35" if uefi else "pc"
    memarg = mem
    cmd = [QEMU, "-name", f"pmemd-e2e-{mode}"]
    if nvdimm is not None:
        machine += ",nvdimm=on"
        maxmem = parse_size(mem) + max(nvdimm_size, 1 << 30) + (8 << 30)
        memarg = f"{mem},slots=2,maxmem={maxmem >> 20}M"
    cmd += ["-machine", machine, "-m", memarg, "-smp", str(smp), *ACCEL_ARGS[accel_name],
            "-nodefaults", "-display", "none", "-vga", "none", "-monitor", "none",
            "-serial", "stdio", "-no-reboot"]
    if uefi:
        cmd += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_fd}"]
    cmd += ["-drive", f"file={overlay},if=virtio,format=qcow2"]
    if mode == "kernel":
        cmd += ["-kernel", str(image.kernel), "-initrd", str(image.initrd),
                "-append", f"{DIRECT_APPEND} {append}".strip()]
    if channel == "9p":
        cmd += ["-virtfs", f"local,path={jobdir},mount_tag=harness,security_model=none,id=harness"]
    else:
        assert jobdisk is not None
        cmd += ["-drive", f"file={jobdisk},if=virtio,format=raw"]
    if nvdimm is not None:
        cmd += ["-object", f"memory-backend-file,id=mem1,share=on,mem-path={nvdimm},"
                           f"size={nvdimm_size >> 20}M",
                "-device", "nvdimm,id=nv1,memdev=mem1"]
    cmd += list(extra)
    return cmd


def run_job(script: str, *, files: Iterable[str | os.PathLike[str]] = (), mode: str = "kernel",
            append: str = "", channel: str = "9p", nvdimm: str | None = None,
            qemu_args: Sequence[str] = (), mem: str = DEFAULT_MEM, smp: int | None = None,
            boot_timeout: float | None = None, max_boots: int = 4,
            out_dir: str | os.PathLike[str] | None = None, image: Image | None = None,
            verbose: bool | None = None, panic_retries: int | None = None,
            expect_panic: str | re.Pattern[str] | None = None) -> RunResult:
    """Boot the guest, run `script` as job.sh on every boot, return the collected out/.

    mode: "kernel" = direct kernel boot (-kernel/-initrd/-append, `append` is added to
          the command line); "grub" = SeaBIOS boots GRUB from the disk (the guest's own
          grub.cfg decides the command line; `append` must be empty); "uefi-grub" = OVMF boots
          GRUB EFI, "sdboot" = OVMF boots systemd-boot, each from its own image (`append`
          must be empty; the guest's boot config decides).
    channel: "9p" (virtio-9p share) or "disk" (a second virtio disk labelled HARNESS).
    nvdimm: size of a QEMU NVDIMM to add (e.g. "1G"), backed by a sparse temp file.
    out_dir: where to put the results (created; default: a new /tmp/pmemd-e2e-out-*).
    Raises GuestError on a boot timeout, an unexpected kernel panic (GuestPanic), more than
    max_boots boots or a qemu exit without a reboot/power-down line. Job failures are NOT
    raised: check result.rc(n).
    smp: guest CPUs; default 1 under TCG, 2 under KVM (env PMEMD_E2E_SMP). With -smp 2 under
    TCG the trixie kernel oopsed at random in early boot (on a secondary CPU, or an `int3`
    from kernel text patching), 3 times in about 60 boots; none with -smp 1.
    panic_retries: how often a run whose guest kernel panicked is started again from
    scratch on a fresh overlay (default 1, env PMEMD_E2E_PANIC_RETRIES); the logs of the
    failed attempt are kept in out/failed-attempt-N/.
    expect_panic: a regex, re.search()ed in the boot's console text (lines joined by newlines,
    ANSI sequences stripped) up to the panic and its own lines; a kernel panic in a boot whose
    console matched it is expected (a trial boot crashed on purpose): no GuestPanic, no retry;
    the harness waits for qemu to exit by itself (the kernel needs panic=N on its command line
    to reset; bounded by boot_timeout), records BootInfo.end "panic" and starts the next boot
    on the same overlay. Such boots count towards max_boots. Unmatched panics behave as
    without it. After a panic before the job ran, qemu boot numbers and HARNESS_BOOT differ:
    see BootInfo.job_boot. `quiet` (in DIRECT_APPEND and Debian's GRUB default) keeps the
    kernel's command line off the console: "Kernel command line: ..." (KERN_NOTICE) needs a
    later loglevel=6, x86's "Command line: ..." (KERN_INFO) loglevel=7.
    """
    if panic_retries is None:
        panic_retries = int(os.environ.get("PMEMD_E2E_PANIC_RETRIES", "1"))
    # A SIGTERM (a CI timeout, a killed pytest) becomes SystemExit, so the cleanup in the
    # `finally` blocks runs; qemu itself also dies with this process (PR_SET_PDEATHSIG).
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, _sigterm)
    try:
        return _run_with_retries(script, files=list(files), mode=mode, append=append, channel=channel,
                                 nvdimm=nvdimm, qemu_args=qemu_args, mem=mem, smp=smp,
                                 boot_timeout=boot_timeout, max_boots=max_boots, out_dir=out_dir,
                                 image=image, verbose=verbose, panic_retries=panic_retries,
                                 expect_panic=re.compile(expect_panic) if expect_panic is not None else None)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def run_jobs(jobs: Mapping[str, Mapping[str, Any]], *, workers: int | None = None
             ) -> dict[str, RunResult | BaseException]:
    """Several run_job()s at once: {name: run_job keyword arguments} -> {name: result or exception}.

    At most `workers` guests run at the same time (default 2, env PMEMD_E2E_PARALLEL; under TCG
    each guest has one vCPU, so two fill a 2-core host). A failed run does not stop the others:
    its exception is returned in its place. Images are built first, one after the other (the
    build lock would serialise them anyway), so the guests start together. If the caller is
    interrupted (SIGTERM, KeyboardInterrupt), every qemu is killed and no new one starts, so the
    worker threads end within seconds and clean up their temp dirs.
    """
    if workers is None:
        workers = int(os.environ.get("PMEMD_E2E_PARALLEL", "2"))
    for kw in jobs.values():
        if kw.get("image") is None:
            ensure_image(layout=MODES[kw.get("mode", "kernel")])
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, _sigterm)
    out: dict[str, RunResult | BaseException] = {}
    stopped = False
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers),
                                                   thread_name_prefix="guest") as ex:
            futures = {ex.submit(run_job, **kw): name for name, kw in jobs.items()}
            try:
                for fut in concurrent.futures.as_completed(futures):
                    exc = fut.exception()
                    out[futures[fut]] = exc if exc is not None else fut.result()
            except BaseException:
                for f in futures:
                    f.cancel()
                stop_all()
                stopped = True
                raise
    finally:
        if stopped:
            resume()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return {name: out[name] for name in jobs}


def _run_with_retries(script: str, *, files: list[str | os.PathLike[str]], mode: str, append: str, channel: str,
                      nvdimm: str | None, qemu_args: Sequence[str], mem: str, smp: int | None,
                      boot_timeout: float | None, max_boots: int, out_dir: str | os.PathLike[str] | None,
                      image: Image | None, verbose: bool | None, panic_retries: int,
                      expect_panic: re.Pattern[str] | None) -> RunResult:
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="pmemd-e2e-out-"))
    out.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, panic_retries + 2):
        try:
            return _run_once(script, files=files, mode=mode, append=append, channel=channel,
                             nvdimm=nvdimm, qemu_args=qemu_args, mem=mem, smp=smp,
                             boot_timeout=boot_timeout, max_boots=max_boots, out=out,
                             image=image, verbose=verbose, expect_panic=expect_panic)
        except GuestPanic as exc:
            if attempt > panic_retries:
                raise
            keep = out / f"failed-attempt-{attempt}"
            keep.mkdir()
            for p in list(out.iterdir()):
                if not p.name.startswith("failed-attempt-"):
                    shutil.move(str(p), keep / p.name)
            log(f"WARNING: guest kernel panic ({str(exc).splitlines()[0]}); logs kept in "
                f"{keep}; retrying the whole run on a fresh overlay")
    raise AssertionError("unreachable")


def _run_once(script: str, *, files: list[str | os.PathLike[str]], mode: str, append: str, channel: str,
              nvdimm: str | None, qemu_args: Sequence[str], mem: str, smp: int | None,
              boot_timeout: float | None, max_boots: int, out: Path, image: Image | None,
              verbose: bool | None, expect_panic: re.Pattern[str] | None = None) -> RunResult:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    if mode != "kernel" and append:
        raise ValueError("append only works with mode='kernel' (other modes: edit the boot config in the job)")
    if channel not in ("9p", "disk"):
        raise ValueError("channel must be '9p' or 'disk'")
    if verbose is None:
        verbose = bool(os.environ.get("PMEMD_E2E_VERBOSE"))
    image = image or ensure_image(layout=MODES[mode])
    if image.layout.name != MODES[mode]:
        raise ValueError(f"mode {mode!r} boots a {MODES[mode]} image, not {image.layout.name}")
    accel_name = accel(image)
    if smp is None:
        smp = int(os.environ.get("PMEMD_E2E_SMP", "1" if accel_name == "tcg" else "2"))
    if boot_timeout is None:  # a boot with an apt install took 400-420 s under TCG on a loaded host
        boot_timeout = float(os.environ.get("PMEMD_E2E_BOOT_TIMEOUT",
                                            "900" if accel_name == "tcg" else "180"))
    result = RunResult(out=out, accel=accel_name, mode=mode)
    work = Path(tempfile.mkdtemp(prefix="pmemd-e2e-run-"))
    t_run = time.monotonic()
    try:
        jobdir = work / "job"
        (jobdir / "files").mkdir(parents=True)
        (jobdir / "out").mkdir()
        (jobdir / "job.sh").write_text(script)
        for f in files:
            shutil.copy(f, jobdir / "files" / Path(f).name)
        jobdisk = None
        if channel == "disk":
            size = 64 + 2 * sum(p.stat().st_size for p in jobdir.rglob("*") if p.is_file()) // (1 << 20)
            jobdisk = work / "jobdisk.ext4"
            build.run(["mkfs.ext4", "-q", "-F", "-L", "HARNESS", "-d", str(jobdir), str(jobdisk),
                       f"{size}M"])
        overlay = work / "overlay.qcow2"
        build.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.disk),
                   str(overlay)])
        nv_file = None
        nv_size = 0
        if nvdimm:
            nv_size = parse_size(nvdimm)
            nv_file = work / "nvdimm.img"
            with open(nv_file, "wb") as fh:
                fh.truncate(nv_size)
        vars_fd = None
        if image.layout.firmware == "uefi":
            # this run's own EFI variable store, kept across its reboots (one-shot entries,
            # BootOrder ...); a fresh overlay after a panic gets a fresh copy too
            vars_fd = work / "OVMF_VARS.fd"
            shutil.copyfile(OVMF_VARS, vars_fd)
        cmd = _qemu_cmd(image=image, overlay=overlay, accel_name=accel_name, mode=mode,
                        append=append, channel=channel, jobdir=jobdir, jobdisk=jobdisk,
                        nvdimm=nv_file, nvdimm_size=nv_size, mem=mem, smp=smp, extra=qemu_args,
                        vars_fd=vars_fd)
        log(f"accel: {accel_name}; mode: {mode} ({image.dir.name}); channel: {channel}")
        log("qemu: " + shlex.join(cmd))
        if expect_panic is not None:
            log(f"expected kernel panics: in boots whose console matches {expect_panic.pattern!r}")
        for n in range(1, max_boots + 1):
            result.qemu_cmds.append(cmd)
            info = _one_boot(cmd, n, out, boot_timeout, verbose, tag=mode, expect_panic=expect_panic)
            result.boots.append(info)
            if info.end == "poweroff":
                break
        else:
            raise GuestError(f"guest still rebooting after {max_boots} boots (see {out})")
        _collect(jobdir, jobdisk, work, out)
        # job-boot<k>.rc is numbered by HARNESS_BOOT k (BootInfo.job_boot), not by qemu boot
        missing = [f"{b.number} (HARNESS_BOOT {b.job_boot})" if b.job_boot is not None
                   else f"{b.number} (no 'HARNESS: boot <k>: job runner started' line)"
                   for b in result.boots
                   if b.end != "panic" and not (out / f"job-boot{b.job_boot}.rc").exists()]
        if missing:
            log(f"WARNING: no job result from qemu boot(s) {', '.join(missing)} "
                f"(see console-boot*.log in {out})")
        for b in result.boots:
            if b.end == "panic":
                log(f"[{mode}] qemu boot {b.number} ended in the expected panic "
                    + (f"during HARNESS_BOOT {b.job_boot} (its job output is lost)" if b.job_boot
                       else "before the job ran (HARNESS_BOOT did not advance)"))
        return result
    except BaseException:
        # a failed boot: the earlier boots' evidence is still worth having
        with contextlib.suppress(Exception):
            _collect(work / "job", work / "jobdisk.ext4" if channel == "disk" else None, work, out)
        raise
    finally:
        (out / "run.json").write_text(json.dumps({
            "accel": accel_name, "mode": mode, "channel": channel, "append": append,
            "nvdimm": nvdimm, "seconds": round(time.monotonic() - t_run, 1),
            "expect_panic": expect_panic.pattern if expect_panic is not None else None,
            # n: qemu boot (console-boot<n>.log); job_boot: its HARNESS_BOOT (job-boot<k>.*)
            "boots": [{"n": b.number, "job_boot": b.job_boot, "seconds": round(b.seconds, 1),
                       "end": b.end}
                      | ({"panic_at": round(b.panic_at, 1)} if b.panic_at is not None else {})
                      for b in result.boots],
            "qemu": result.qemu_cmds[:1] and shlex.join(result.qemu_cmds[0]),
            "image": image.manifest.get("kernel"),
        }, indent=1) + "\n")
        build.safe_rmtree(work)
        log(f"[{mode}] run: {len(result.boots)} boot(s) in {time.monotonic() - t_run:.1f} s; results in {out}")


def _collect(jobdir: Path, jobdisk: Path | None, work: Path, out: Path) -> None:
    """Unpack every boot's tarball from the channel into the result dir (in boot order)."""
    src = jobdir / "out"
    if jobdisk is not None:
        if not jobdisk.exists():
            return
        dst = work / "diskout"
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir()
        build.run(["debugfs", "-R", f"rdump /out {dst}", str(jobdisk)], capture_output=True)
        src = dst / "out"
    tars = sorted(src.glob("boot*.tar"), key=lambda p: int(re.sub(r"\D", "", p.name)))
    for tar in tars:
        build.run(["tar", "--no-same-owner", "-C", str(out), "-xf", str(tar)])


def _one_boot(cmd: list[str], n: int, out: Path, timeout: float, verbose: bool, tag: str = "",
              expect_panic: re.Pattern[str] | None = None) -> BootInfo:
    """Run qemu once, until it exits by itself; the console's last reboot line says why.

    A kernel panic raises GuestPanic PANIC_GRACE s after it is seen (or when qemu exits first),
    unless `expect_panic` matches the console text so far: then qemu must exit by itself
    (the kernel's panic=N reset) within the boot timeout and the boot ends as "panic".
    """
    console_log = out / f"console-boot{n}.log"
    t0 = time.monotonic()
    proc, con = _start_qemu(cmd, console_log, echo=verbose)

    def expected() -> bool:
        return expect_panic is not None and expect_panic.search(con.text()) is not None

    def unexpected(how: str) -> GuestPanic:
        why = (f" (expect_panic {expect_panic.pattern!r} did not match this boot's console)"
               if expect_panic is not None else "")
        return GuestPanic(f"boot {n}: kernel panic{why}, {how} (console: {console_log}); "
                          f"console tail:\n{con.tail()}")

    try:
        deadline = t0 + timeout
        panic_seen: float | None = None  # host time the harness saw it
        panic_ok = False
        while proc.poll() is None:
            now = time.monotonic()
            if now > deadline:
                if panic_ok:
                    raise GuestError(f"boot {n}: expected kernel panic at {con.panic_at() or 0:.1f} s, "
                                     f"but qemu did not exit within {timeout:.0f} s (qemu killed; is "
                                     f"panic=N on the kernel command line?); console tail:\n{con.tail()}")
                raise GuestError(f"boot {n}: no power-down/reboot within {timeout:.0f} s "
                                 f"(qemu killed); console tail:\n{con.tail()}")
            if not panic_ok and con.panic_at() is not None:
                panic_seen = panic_seen or now
                if expected():
                    panic_ok = True
                    log(f"[{tag}] boot {n}: expected kernel panic at {con.panic_at() or 0:.1f} s; "
                        f"waiting for the guest to reset (panic=N)")
                elif now - panic_seen > PANIC_GRACE:
                    raise unexpected("qemu killed")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
        con.close()
        secs = time.monotonic() - t0
        panic_at = con.panic_at()
        if panic_at is not None and not panic_ok:
            if not expected():  # qemu exited within the grace time (a panic=N reset)
                raise unexpected(f"then qemu exited (rc {proc.returncode})")
            panic_ok = True
        m = RE_JOB_BOOT.search(con.text())
        job_boot = int(m.group(1)) if m else None
        if panic_ok:
            assert panic_at is not None
            log(f"[{tag}] boot {n}: {secs:.1f} s, ended with the expected kernel panic at "
                f"{panic_at:.1f} s; qemu exited {secs - panic_at:.1f} s after it (rc {proc.returncode}); "
                + (f"HARNESS_BOOT {job_boot}" if job_boot else "the job runner never started"))
            return BootInfo(number=n, seconds=secs, end="panic", console=console_log,
                            job_boot=job_boot, panic_at=panic_at)
        ev = con.last_event()
        if ev not in ("restart", "poweroff"):
            raise GuestError(f"boot {n}: qemu exited (rc {proc.returncode}) without "
                             f"'reboot: Power down' or 'reboot: Restarting system'; "
                             f"console tail:\n{con.tail()}")
        assert ev is not None
        log(f"[{tag}] boot {n}: {secs:.1f} s, ended with {'reboot' if ev == 'restart' else 'power-off'}"
            + (f" (kernel up at {con.linux_version_at:.1f} s)" if con.linux_version_at else ""))
        return BootInfo(number=n, seconds=secs, end=ev, console=console_log, job_boot=job_boot)
    finally:
        _kill(proc)
        con.close()


# --------------------------------------------------------------------------- CLI

def _sigterm(signum, frame):  # type: ignore[no-untyped-def]
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="guest.py", description="pmemd e2e QEMU guest harness")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the cached guest image if the recipe changed")
    b.add_argument("--force", action="store_true")
    b.add_argument("--layout", choices=sorted(set(MODES.values())), default="bios")
    sub.add_parser("probe", help="probe kvm vs tcg (boots the kernel under KVM)")
    r = sub.add_parser("run", help="run a job in a guest, print the result dir")
    r.add_argument("--job", required=True, help="shell script run as job.sh on every boot")
    r.add_argument("--file", action="append", default=[], help="copied to $HARNESS_FILES/")
    r.add_argument("--append", default="", help="extra kernel args (direct-kernel mode)")
    r.add_argument("--grub", action="store_true", help="boot the disk through GRUB (= --mode grub)")
    r.add_argument("--mode", choices=sorted(MODES), help="boot mode (default kernel)")
    r.add_argument("--channel", choices=("9p", "disk"), default="9p")
    r.add_argument("--nvdimm", metavar="SIZE", help="add a QEMU NVDIMM of SIZE (e.g. 1G)")
    r.add_argument("--mem", default=DEFAULT_MEM)
    r.add_argument("--qemu-arg", action="append", default=[], help="extra qemu argument")
    r.add_argument("--out", help="result dir (default: new /tmp/pmemd-e2e-out-*)")
    r.add_argument("--timeout", type=float, help="per-boot timeout in seconds")
    r.add_argument("--max-boots", type=int, default=4)
    r.add_argument("-v", "--verbose", action="store_true", help="echo the serial console")
    r.add_argument("--expect-panic", metavar="REGEX",
                   help="a kernel panic in a boot whose console matches REGEX is expected: wait for "
                        "the guest's own reset (panic=N) and boot again")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    mode = "grub"
    if args.cmd == "run":
        mode = args.mode or ("grub" if args.grub else "kernel")
    elif args.cmd == "build":
        mode = next(m for m, lay in MODES.items() if lay == args.layout)
    reason = skip_reason(mode)
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    if args.cmd == "build":
        print(ensure_image(force=args.force, layout=args.layout).dir)
        return 0
    if args.cmd == "probe":
        print(accel())
        return 0
    try:
        res = run_job(Path(args.job).read_text(), files=args.file,
                      mode=mode, append=args.append,
                      channel=args.channel, nvdimm=args.nvdimm, qemu_args=args.qemu_arg,
                      mem=args.mem, boot_timeout=args.timeout, max_boots=args.max_boots,
                      out_dir=args.out, verbose=args.verbose, expect_panic=args.expect_panic)
    except GuestError as exc:
        print(f"guest.py: {exc}", file=sys.stderr)
        return 3
    for bi in res.boots:
        job = (f"HARNESS_BOOT {bi.job_boot}, job rc={res.rc(bi.job_boot)}" if bi.job_boot is not None
               else "job did not run")
        print(f"boot {bi.number}: {bi.seconds:.1f} s, {job}, ended with {bi.end}", file=sys.stderr)
    print(res.out)
    # every boot that did not end in an (expected) panic ran the job to its end
    ok = all(bi.job_boot is not None and res.rc(bi.job_boot) == 0
             for bi in res.boots if bi.end != "panic")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
