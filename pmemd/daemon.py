"""``pmemd daemon``: reconcile at start, on config changes, on SIGHUP and periodically.

Level-triggered: every pass re-reads all config and all host state. Events (file changes,
signals) only wake the loop; a burst of them within the debounce window makes one pass. Between
events the process sleeps in one blocking ``queue.get`` that times out only for the periodic
resync and the systemd watchdog ping.

A config that fails to load (syntax error, a file half-written or deleted mid-edit) never
changes the host: the daemon keeps acting on the last good config, says so in STATUS and the
journal, and recovers by itself once the file is fixed. Deleting ``/etc/pmem.yaml`` is treated
the same way: to remove every namespace, write ``namespaces: {}``.
"""

from __future__ import annotations

import queue
import signal
import time
import traceback
from dataclasses import dataclass
from enum import StrEnum
from types import FrameType
from typing import TYPE_CHECKING

from pmemd.config import Discovery, Loaded
from pmemd.engine import Target, apply, assess, load_config, read_config
from pmemd.journal import DEBUG, ERR, INFO, NOTICE, Journal
from pmemd.notify import Notifier, watchdog_interval
from pmemd.observe import booted_regions_have_devices
from pmemd.plan import Assessment
from pmemd.report import summary_line
from pmemd.runner import Runner, SubprocessRunner, Timings
from pmemd.timing import Phases, since_process_start
from pmemd.yamldoc import ConfigErrors

if TYPE_CHECKING:
    from pmemd.watch import ConfigWatcher

DEBOUNCE = 0.25  # seconds of quiet after the last event before a pass starts
MAX_DELAY = 2.0  # ...but a continuous stream of events delays a pass at most this long
SETTLE_MAX = 60.0  # at start, wait this long at most for booted regions to get their devices
RETRY = (2.0, 4.0, 8.0, 16.0, 32.0, 60.0)  # then look again this often while a device is missing


class EventKind(StrEnum):
    CHANGE = "change"  # a config file changed
    RELOAD = "reload"  # SIGHUP / systemctl reload
    STOP = "stop"  # SIGTERM, SIGINT


@dataclass
class Event:
    kind: EventKind
    detail: str = ""


class Daemon:
    def __init__(self, target: Target, runner: Runner, journal: Journal, notifier: Notifier,
                 *, watch: bool = True, timings: Timings | None = None) -> None:
        self.target = target
        self.runner = runner
        self.journal = journal
        self.notifier = notifier
        self.debounce = DEBOUNCE
        self.watch = watch
        self.events: queue.Queue[Event] = queue.Queue()
        self.last_good: Loaded | None = None
        self.config_error: str | None = None
        self.passes = 0
        self.resync = 300.0
        self.settle_max = SETTLE_MAX
        self.devices_pending = False  # the last pass found a booted region without its device
        self.settled: Assessment | None = None  # what the wait for devices saw last
        self.timings = timings or Timings()  # the time spent in child processes
        self.phases: Phases | None = None  # set during the first pass, which is timed
        self._t0 = time.monotonic()

    # --- event sources ---------------------------------------------------------------------

    def _signal(self, signum: int, _frame: FrameType | None) -> None:
        self.events.put(Event(EventKind.RELOAD if signum == signal.SIGHUP else EventKind.STOP,
                              signal.Signals(signum).name))

    def post_change(self, path: str) -> None:
        self.events.put(Event(EventKind.CHANGE, path))

    # --- one pass --------------------------------------------------------------------------

    def load(self) -> Loaded | None:
        """The config to act on: the current one if it loads, else the last good one."""
        try:
            loaded = load_config(self.target)
        except ConfigErrors as exc:
            first = exc.issues[0]
            text = str(first) + (f" (+{len(exc.issues) - 1} more)" if len(exc.issues) > 1 else "")
            if text != self.config_error:
                for issue in exc.issues:
                    self.journal.event("config-error", str(issue), priority=ERR, result="error")
            self.config_error = text
            return self.last_good
        if self.config_error is not None:
            self.journal.event("config-error", "config is valid again", priority=NOTICE, result="ok")
        self.config_error = None
        self.last_good = loaded
        self.resync = float(loaded.config.settings.resync_interval)
        return loaded

    def run_pass(self) -> str:
        # The wait for devices has just loaded the config and seen the host: unless an event
        # came in since, the first pass acts on that.
        settled, self.settled = self.settled, None
        if settled is not None and self.events.empty():
            loaded: Loaded | None = settled.loaded
        else:
            settled = None
            with (self.phases or Phases()).phase("config"):
                loaded = self.load()
        self.passes += 1
        if loaded is None:
            return f"config error at {self.config_error}; no good config yet, changing nothing"
        try:
            results = apply(self.target, self.runner, self.journal, loaded=settled or loaded,
                            phases=self.phases)
        except Exception as exc:  # a bug or an unexpected host state must not kill the daemon
            self.devices_pending = False
            self.journal.event("pass", f"pass failed: {exc}\n{traceback.format_exc()}", priority=ERR,
                               result="error")
            return f"error: {exc} (retrying at the next event or resync)"
        # The last pass saw the host after every change but its own: its view is final when it
        # changed nothing; otherwise look once more.
        last = results[-1]
        final = last.assessment if not last.outcomes else assess(self.target, self.runner, loaded,
                                                                  phases=self.phases)
        self.devices_pending = any(v.device_pending for v in final.plan.namespaces)
        status = summary_line(final)
        done = sum(1 for r in results for o in r.outcomes if o.result == "ok")
        if done:
            self.journal.event("pass", f"pass finished: {done} action(s); {status}", priority=INFO,
                               result="ok")
        if self.config_error is not None:
            status = f"config error at {self.config_error} — keeping last good config; {status}"
        return status

    def settle(self) -> bool:
        """Early in boot the kernel and udev may still be probing the pmem regions. Wait (at
        most ``settle_max`` seconds) for the devices of the booted regions before the first
        pass, so that pass does not report a race as a failed region. False if a stop request
        came in meanwhile. Whatever goes wrong here is left for the first pass to report.

        pmemd runs as root and uses the kernel's device nodes, not udev's links or permissions,
        so it waits for the devices only: first with sysfs reads, then with a whole look."""
        phases = self.phases or Phases()
        try:
            with phases.phase("config"):
                loaded = self.load()
            until = time.monotonic() + self.settle_max
            with phases.phase("devices"):
                while not booted_regions_have_devices(self.target.root) and time.monotonic() < until:
                    if self._stop_requested(0.5):  # not faster: on one CPU the poll slows the probe
                        return False
            while loaded is not None and time.monotonic() < until:
                seen = assess(self.target, self.runner, loaded, phases=phases)
                self.settled = seen
                if not any(v.device_pending for v in seen.plan.namespaces):
                    break
                with phases.phase("devices"):  # the time spent waiting, not looking
                    if self._stop_requested(0.5):
                        return False
        except Exception as exc:  # a damaged state file, an unreadable /sys: the pass says so
            self.journal.event("pass", f"waiting for devices before the first pass failed: {exc}",
                               priority=ERR, result="error")
        return True

    def _stop_requested(self, wait: float) -> bool:
        """Wait ``wait`` seconds for an event; True if it is a stop request (any other event is
        put back: the first pass sees it anyway)."""
        try:
            ev = self.events.get(timeout=wait)
        except queue.Empty:
            return False
        if ev.kind is EventKind.STOP:
            return True
        self.events.put(ev)
        time.sleep(wait)
        return False

    # --- the loop --------------------------------------------------------------------------

    def _drain(self, first: Event) -> list[Event]:
        """Collect the burst that started with ``first`` until ``debounce`` seconds of quiet
        (or ``MAX_DELAY`` has passed, so an endless stream of edits cannot starve the passes)."""
        got = [first]
        until = time.monotonic() + MAX_DELAY
        while (left := until - time.monotonic()) > 0:
            try:
                got.append(self.events.get(timeout=min(self.debounce, left)))
            except queue.Empty:
                return got
            if got[-1].kind is EventKind.STOP:
                return got
        return got

    def run(self) -> int:
        self.phases = Phases()
        # the clock starts with the process: interpreter start-up and imports count
        self._t0 = time.monotonic() - (since_process_start() or 0.0)
        self.phases.add("start", time.monotonic() - self._t0)
        old = {sig: signal.signal(sig, self._signal) for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
        watcher: ConfigWatcher | None = None
        try:
            files = self._config_files() if self.watch else ""
            if self.settle():
                self.notifier.ready(self._first_pass())
                if self.watch:
                    watcher = self._watch(files)
                self._loop(_Clock.start(resync=self.resync, ping=watchdog_interval()))
            self.notifier.stopping()
            return 0
        finally:
            if watcher is not None:
                watcher.stop()
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _config_files(self) -> Discovery | str:
        """The config files as they are now (or why they cannot be read), to compare."""
        try:
            return read_config(self.target)
        except ConfigErrors as exc:
            return str(exc)

    def _watch(self, before: Discovery | str) -> ConfigWatcher:
        """Watch the config files from READY on: the watcher's import and its inotify set-up
        are not on the way to READY. An edit made before the watches were in place shows as a
        difference between the files now and before the first pass, and makes a pass."""
        from pmemd.watch import ConfigWatcher

        watcher = ConfigWatcher(self.target.root, self.post_change, self.target.config_path, self.target.config_root)
        watcher.start()
        if self._config_files() != before:
            self.post_change("a config file changed while pmemd was starting")
        return watcher

    def _first_pass(self) -> str:
        """The pass that READY waits for, timed per phase and summarised in the journal; the
        parts of each phase and every command it ran are logged at debug level."""
        assert self.phases is not None
        status = self.run_pass()
        total = time.monotonic() - self._t0
        children = self.timings.seconds
        for name, secs in self.phases.details().items():
            self.journal.event("pass", f"first pass: {name} {secs:.3f} s", priority=DEBUG,
                               phase=name, seconds=f"{secs:.3f}")
        for argv, secs in self.timings.calls or ():
            self.journal.event("pass", f"first pass: `{' '.join(argv)}` {secs:.3f} s", priority=DEBUG,
                               command=argv[0], seconds=f"{secs:.3f}")
        self.journal.event("pass", self.phases.summary(total=total, children=children), priority=INFO,
                           **self.phases.fields(total=total, children=children))
        self.phases = None
        self.timings.calls = None
        return status

    def _loop(self, clock: _Clock) -> None:
        """Wait for events and timers until a stop request comes in."""
        clock.passed(devices_pending=self.devices_pending, resync=self.resync, by_timer=False)
        while True:
            try:
                ev = self.events.get(timeout=clock.wait())
            except queue.Empty:
                if clock.ping_due():
                    self.notifier.watchdog()
                if clock.pass_due():
                    self.notifier.status(self.run_pass())
                    clock.passed(devices_pending=self.devices_pending, resync=self.resync, by_timer=True)
                continue
            burst = self._drain(ev)
            if any(e.kind is EventKind.STOP for e in burst):
                return
            reload = any(e.kind is EventKind.RELOAD for e in burst)
            if reload:
                self.notifier.reloading()
            status = self.run_pass()
            (self.notifier.ready if reload else self.notifier.status)(status)
            clock.passed(devices_pending=self.devices_pending, resync=self.resync, by_timer=False)
            if clock.ping_due():
                self.notifier.watchdog()


@dataclass
class _Clock:
    """When the loop wakes up by itself: the periodic resync, the watchdog ping, and soon-again
    retries while a booted region has no device (after the backoff runs out, a probe that really
    failed, only the resync looks again)."""

    resync_at: float
    ping: float | None
    ping_at: float | None
    retry_at: float | None = None
    retries: int = 0

    @classmethod
    def start(cls, *, resync: float, ping: float | None) -> _Clock:
        now = time.monotonic()
        return cls(now + resync, ping, now + ping if ping else None)

    def wait(self) -> float:
        deadline = min(t for t in (self.resync_at, self.ping_at, self.retry_at) if t is not None)
        return max(0.0, deadline - time.monotonic())

    def ping_due(self) -> bool:
        now = time.monotonic()
        if self.ping is None or self.ping_at is None or now < self.ping_at:
            return False
        self.ping_at = now + self.ping
        return True

    def pass_due(self) -> bool:
        now = time.monotonic()
        return now >= self.resync_at or (self.retry_at is not None and now >= self.retry_at)

    def passed(self, *, devices_pending: bool, resync: float, by_timer: bool) -> None:
        self.resync_at = time.monotonic() + resync
        self.retries = self.retries + 1 if by_timer and devices_pending else 0
        pending = devices_pending and self.retries < len(RETRY)
        self.retry_at = time.monotonic() + RETRY[self.retries] if pending else None


def main(target: Target) -> int:
    journal = Journal.default(target.root)
    notifier = Notifier()
    ping = watchdog_interval()
    # A long mkfs or update-grub feeds the watchdog while it runs (each command has its own timeout).
    runner = SubprocessRunner(heartbeat=notifier.watchdog if ping else None, beat=ping or 10.0)
    runner.timings.calls = []  # the first pass's commands, timed (logged at debug level at READY)
    return Daemon(target, runner, journal, notifier, timings=runner.timings).run()
