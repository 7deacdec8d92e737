"""The single place pmemd starts a process: argv lists only, never a shell.

Every command runs with ``LC_ALL=C`` (stable output to parse), a timeout, closed stdin and
captured output. Tests substitute a recording runner that answers only the commands it expects.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pmemd.frozen import frozen

if TYPE_CHECKING:  # subprocess is imported by the first command run: `pmemd plan` often runs none
    import subprocess


@frozen
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        lines = [ln.strip() for ln in (self.stderr.strip() or self.stdout.strip()).splitlines() if ln.strip()]
        # Tools like mkfs.xfs print the error, then their whole usage text: keep the error.
        usage = next((i for i, ln in enumerate(lines) if ln.lower().startswith("usage:")), None)
        if usage:
            lines = lines[:usage]
        detail = "; ".join(lines[-3:])
        return f"`{' '.join(self.argv)}` exited {self.returncode}" + (f": {detail}" if detail else "")


@dataclass
class Timings:
    """The wall time of the commands a runner ran, start-up included; each call while ``calls``
    is a list (the daemon records its first pass so)."""

    seconds: float = 0.0
    calls: list[tuple[tuple[str, ...], float]] | None = None

    def add(self, argv: tuple[str, ...], seconds: float) -> None:
        self.seconds += seconds
        if self.calls is not None:
            self.calls.append((argv, seconds))


class Runner(Protocol):
    def run(self, argv: Sequence[str], *, timeout: float = 60.0) -> Result: ...


_SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SubprocessRunner:
    """Runs real commands on this host.

    ``heartbeat`` is called every ``beat`` seconds while a command runs: the daemon feeds the
    systemd watchdog with it, so a mkfs of a large region that takes minutes does not get the
    service killed, while each command stays bounded by its own timeout.
    """

    def __init__(self, *, path: str | None = None, heartbeat: Callable[[], None] | None = None,
                 beat: float = 10.0) -> None:
        self._path = path or os.environ.get("PATH") or _SAFE_PATH
        self._heartbeat = heartbeat
        self._beat = beat
        self.timings = Timings()

    def run(self, argv: Sequence[str], *, timeout: float = 60.0) -> Result:
        args = tuple(argv)
        if not args or not isinstance(args[0], str):
            raise ValueError("argv must be a non-empty list of strings")
        started = time.monotonic()
        try:
            return self._start(args, timeout)
        finally:
            self.timings.add(args, time.monotonic() - started)

    def _start(self, args: tuple[str, ...], timeout: float) -> Result:
        env = {"PATH": self._path + ":" + _SAFE_PATH, "LC_ALL": "C", "LANG": "C"}
        import subprocess

        try:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, errors="replace", env=env)
        except FileNotFoundError:
            return Result(args, 127, "", f"{args[0]}: command not found")
        return self._wait(proc, args, timeout)

    def _wait(self, proc: subprocess.Popen[str], args: tuple[str, ...], timeout: float) -> Result:
        import subprocess

        deadline = time.monotonic() + timeout
        with proc:
            while True:
                left = deadline - time.monotonic()
                try:
                    out, err = proc.communicate(timeout=max(0.0, min(left, self._beat)))
                except subprocess.TimeoutExpired:
                    if time.monotonic() >= deadline:
                        proc.kill()
                        out, _ = proc.communicate()
                        return Result(args, 124, out or "", f"timed out after {timeout:g} s")
                    if self._heartbeat is not None:
                        self._heartbeat()
                    continue
                return Result(args, proc.returncode, out, err)
