"""The daemon loop, driven by events and observed through a real sd_notify datagram socket.

The host is a systemd-boot tree with ``reboot: never``: reconciling it needs no external command
(the backend edits /etc/kernel/cmdline and the loader entries itself), so the real daemon runs
as a subprocess with real signals and nothing is faked.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

GOOD_EMPTY = "version: 1\nsettings: {reboot: never, kaslr: keep, min_free_ram: 1G}\nnamespaces: {}\n"
GOOD_ONE = (
    "version: 1\nsettings: {reboot: never, kaslr: keep, min_free_ram: 1G}\n"
    "namespaces:\n  fast:\n    size: 1G\n    offset: 5G\n"
)
BROKEN = "version: 1\nnamespaces:\n  fast:\n    size: [1G\n"


def recorder(into: list[str]) -> Callable[[str], bool]:
    """An sd_notify sender that keeps every message."""
    def send(msg: str) -> bool:
        into.append(msg)
        return True
    return send


def make_sdboot_tree(root: Path) -> None:
    (root / "proc").mkdir(parents=True)
    (root / "proc/cmdline").write_text("initrd=\\initrd.img root=/dev/vda1 rw quiet\n")
    ranges = [("0x0", "0x9fbff", "System RAM"), ("0x100000", "0xbffdcfff", "System RAM"),
              ("0xbffdd000", "0xbfffffff", "Reserved"), ("0x100000000", "0x23fffffff", "System RAM")]
    for i, (s, e, t) in enumerate(ranges):
        d = root / f"sys/firmware/memmap/{i}"
        d.mkdir(parents=True)
        (d / "start").write_text(s + "\n")
        (d / "end").write_text(e + "\n")
        (d / "type").write_text(t + "\n")
    (root / "efi/loader/entries").mkdir(parents=True)
    (root / "efi/loader/loader.conf").write_text("default debian-*\ntimeout 0\n")
    (root / "efi/loader/entries/debian-6.12.conf").write_text(
        "title Debian\nversion 6.12\nlinux /vmlinuz-6.12\ninitrd /initrd.img-6.12\noptions root=/dev/vda1 rw quiet\n")
    (root / "etc/kernel").mkdir(parents=True)
    (root / "etc/kernel/cmdline").write_text("root=/dev/vda1 rw quiet\n")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)  # what editors do: a new file renamed over the old one


class Notify:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(self, predicate: str, timeout: float = 15.0) -> str:
        """Receive datagrams until one contains ``predicate``; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append(data)
            if predicate in data:
                return data
        raise AssertionError(f"no sd_notify message containing {predicate!r}; got {self.messages}")


@pytest.fixture
def daemon(tmp_path: Path):  # type: ignore[no-untyped-def]
    root = tmp_path / "root"
    make_sdboot_tree(root)
    (root / "etc/pmem.yaml").write_text(GOOD_EMPTY)
    os.chmod(root / "etc/pmem.yaml", 0o644)
    notify = Notify(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "PYTHONPATH": str(REPO)}
    # Output goes to a file: a pipe nobody reads can fill and block the daemon mid-write.
    log = open(tmp_path / "daemon.log", "w")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen([sys.executable, "-m", "pmemd", "--root", str(root), "daemon"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        yield root, notify, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        notify.sock.close()
        log.close()


def entry_options(root: Path) -> str:
    text = (root / "efi/loader/entries/debian-6.12.conf").read_text()
    return next(line for line in text.splitlines() if line.startswith("options "))


def test_daemon_story(daemon) -> None:  # type: ignore[no-untyped-def]
    root, notify, proc = daemon
    ready = notify.wait_for("READY=1")
    assert "STATUS=in sync: no namespaces configured" in ready
    # the first pass is timed per phase, from the process's start (journal; stderr here)
    log = (root.parent / "daemon.log").read_text()
    m = re.search(r"first pass (\d+\.\d) s: start (\d+\.\d), .*config .*observe .*plan .*\(children (\d+\.\d)\)", log)
    assert m, log
    assert float(m.group(1)) >= float(m.group(2)) > 0
    # ... and each source of the observation at debug level
    for source in ("kernel-log", "nd-regions", "mounts", "boot-config", "proc-sys"):
        assert re.search(rf"pmemd debug: pass: first pass: observe:{source} \d+\.\d{{3}} s", log), log

    # An edit is picked up by the watcher: one pass writes the boot config.
    write_atomic(root / "etc/pmem.yaml", GOOD_ONE)
    status = notify.wait_for("STATUS=reboot pending")
    assert "memmap=1G!5G" in status
    assert "memmap=1G!5G" in entry_options(root)
    assert "memmap=1G!5G" in (root / "etc/kernel/cmdline").read_text()
    log = (root / "var/lib/pmemd/actions.jsonl").read_text().splitlines()
    assert sum('"set-kernel-args"' in line for line in log) == 1

    # A broken edit: the last good config stays in force and STATUS says why.
    write_atomic(root / "etc/pmem.yaml", BROKEN)
    status = notify.wait_for("config error")
    assert "/etc/pmem.yaml:" in status and "keeping last good config" in status
    assert "memmap=1G!5G" in entry_options(root)

    # Deleting the file mid-edit changes nothing either.
    (root / "etc/pmem.yaml").unlink()
    status = notify.wait_for("main config file is missing")
    assert "memmap=1G!5G" in entry_options(root)

    # Fixed again: the daemon recovers by itself.
    write_atomic(root / "etc/pmem.yaml", GOOD_ONE)
    status = notify.wait_for("STATUS=reboot pending")
    assert "config error" not in status

    # SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then READY=1 again.
    proc.send_signal(signal.SIGHUP)
    reloading = notify.wait_for("RELOADING=1")
    assert "MONOTONIC_USEC=" in reloading
    notify.wait_for("READY=1")

    # Removing the namespace removes exactly pmemd's token.
    write_atomic(root / "etc/pmem.yaml", GOOD_EMPTY)
    notify.wait_for("STATUS=in sync")
    assert "memmap" not in entry_options(root)
    assert entry_options(root) == "options root=/dev/vda1 rw quiet"

    proc.send_signal(signal.SIGTERM)
    notify.wait_for("STOPPING=1")
    assert proc.wait(timeout=10) == 0


def test_first_config_broken_changes_nothing(daemon) -> None:  # type: ignore[no-untyped-def]
    root, notify, proc = daemon
    notify.wait_for("READY=1")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    write_atomic(root / "etc/pmem.yaml", BROKEN)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.sock.getsockname()), "PYTHONPATH": str(REPO)}
    p2 = subprocess.Popen([sys.executable, "-m", "pmemd", "--root", str(root), "daemon"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    try:
        ready = notify.wait_for("READY=1")
        assert "config error at" in ready and "changing nothing" in ready
        assert entry_options(root) == "options root=/dev/vda1 rw quiet"
    finally:
        p2.send_signal(signal.SIGTERM)
        assert p2.wait(timeout=10) == 0


def test_a_booted_region_without_its_device_is_looked_at_again_soon(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Early in boot a region's /dev/pmemN can appear after the first pass: the daemon does not
    wait for the 5-minute resync but looks again after a short backoff, and stops doing so (idle
    again) once the device is there. In process, with the pass itself replaced."""
    from pmemd import daemon as d
    from pmemd.engine import Target
    from pmemd.journal import Journal
    from pmemd.notify import Notifier

    monkeypatch.setattr(d, "RETRY", (0.05, 0.1))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    sent: list[str] = []
    dm = d.Daemon(Target.make(str(tmp_path)), runner=None, journal=Journal(),  # type: ignore[arg-type]
                  notifier=Notifier(recorder(sent)), watch=False)
    times: list[float] = []

    def fake_pass() -> str:
        times.append(time.monotonic())
        dm.devices_pending = len(times) < 3  # the device shows up before the third pass
        if len(times) == 3:
            dm.events.put(d.Event(d.EventKind.STOP))
        return f"pass {len(times)}"

    monkeypatch.setattr(dm, "settle", lambda: True)
    monkeypatch.setattr(dm, "run_pass", fake_pass)
    assert dm.run() == 0
    assert len(times) == 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 0.05 <= gaps[0] < 5 and 0.1 <= gaps[1] < 5, gaps  # the backoff, not the resync
    assert sent[0] == "READY=1\nSTATUS=pass 1" and "STATUS=pass 3" in sent


def _in_process_daemon(tmp_path: Path, sent: list[str]) -> Any:
    from pmemd import daemon as d
    from pmemd.engine import Target
    from pmemd.journal import Journal
    from pmemd.notify import Notifier

    return d.Daemon(Target.make(str(tmp_path)), runner=None, journal=Journal(),  # type: ignore[arg-type]
                    notifier=Notifier(recorder(sent)), watch=False)


def test_retries_end_when_the_backoff_is_used_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A region whose probe really failed stays 'pending' forever: after the backoff the daemon
    falls back to the resync instead of a pass (and error entries) every minute."""
    import threading

    from pmemd import daemon as d

    monkeypatch.setattr(d, "RETRY", (0.02, 0.02))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    dm = _in_process_daemon(tmp_path, [])
    passes: list[float] = []

    def fake_pass() -> str:
        passes.append(time.monotonic())
        dm.devices_pending = True
        return "pending"

    monkeypatch.setattr(dm, "settle", lambda: True)
    monkeypatch.setattr(dm, "run_pass", fake_pass)
    threading.Timer(1.0, lambda: dm.events.put(d.Event(d.EventKind.STOP))).start()
    assert dm.run() == 0
    assert len(passes) == 3  # the first pass and one per backoff step, then quiet until the stop


def test_settle_survives_a_damaged_state_file_and_honours_a_stop(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from pmemd import daemon as d

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/pmem.yaml").write_text("version: 1\nnamespaces: {}\n")
    (tmp_path / "var/lib/pmemd").mkdir(parents=True)
    (tmp_path / "var/lib/pmemd/state.json").write_text("{not json")
    events: list[tuple[str, str]] = []
    dm = _in_process_daemon(tmp_path, [])
    monkeypatch.setattr(dm.journal, "event", lambda kind, msg, **kw: events.append((kind, msg)))
    assert dm.settle() is True  # the error is journalled; the first pass will report it too
    assert any("state.json is damaged" in msg for _, msg in events), events

    # a SIGTERM while the devices are awaited ends the daemon before any pass
    class Pending:
        class plan:
            namespaces = (type("V", (), {"device_pending": True})(),)

    sent: list[str] = []
    dm = _in_process_daemon(tmp_path, sent)
    monkeypatch.setattr(d, "assess", lambda *a, **kw: Pending)
    monkeypatch.setattr(dm, "load", object)
    monkeypatch.setattr(dm, "run_pass", lambda: pytest.fail("no pass after a stop request"))
    dm.events.put(d.Event(d.EventKind.STOP))
    t0 = time.monotonic()
    assert dm.run() == 0
    assert time.monotonic() - t0 < 5 and [m.split("\n")[0] for m in sent] == ["STOPPING=1"]


def test_an_edit_made_before_the_watcher_started_still_makes_a_pass(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The config watcher starts after READY (its import is not on the way there): the config is
    edited the moment READY is sent, before any watch exists, and the daemon still acts on it."""
    import threading

    from pmemd import daemon as d
    from pmemd.engine import Target
    from pmemd.journal import Journal
    from pmemd.notify import Notifier
    from pmemd.runner import SubprocessRunner

    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    root = tmp_path / "root"
    make_sdboot_tree(root)
    (root / "etc/pmem.yaml").write_text(GOOD_EMPTY)
    os.chmod(root / "etc/pmem.yaml", 0o644)
    sent: list[str] = []

    def send(msg: str) -> bool:
        sent.append(msg)
        if msg.startswith("READY=1"):
            write_atomic(root / "etc/pmem.yaml", GOOD_ONE)
        if "reboot pending" in msg:
            dm.events.put(d.Event(d.EventKind.STOP))
        return True

    dm = d.Daemon(Target.make(str(root)), runner=SubprocessRunner(), journal=Journal(use_journal=False),
                  notifier=Notifier(send), watch=True)
    watch = dm._watch

    def watching(files: Any) -> Any:
        sent.append("watching")
        return watch(files)

    monkeypatch.setattr(dm, "_watch", watching)
    stop = threading.Timer(30, lambda: dm.events.put(d.Event(d.EventKind.STOP)))
    stop.start()
    try:
        assert dm.run() == 0
    finally:
        stop.cancel()
    assert sent[0].startswith("READY=1\nSTATUS=in sync") and sent[1] == "watching", sent
    assert any("STATUS=reboot pending" in m for m in sent[2:]), sent
    assert "memmap=1G!5G" in entry_options(root)
