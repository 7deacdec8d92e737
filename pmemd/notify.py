"""sd_notify: READY=1, STATUS=, RELOADING=1, STOPPING=1, WATCHDOG=1.

Uses systemd-python's ``systemd.daemon.notify`` when it is importable and a small built-in
sender otherwise (one datagram to ``$NOTIFY_SOCKET``, abstract sockets included). Outside
systemd (no ``NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable


def _builtin(message: str) -> bool:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    addr = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message.encode(), addr)
        except OSError:
            return False
    return True


def _sender() -> Callable[[str], bool]:
    try:
        from systemd import daemon
    except ImportError:
        return _builtin

    def send(message: str) -> bool:
        return bool(daemon.notify(message))

    return send


class Notifier:
    def __init__(self, send: Callable[[str], bool] | None = None) -> None:
        self._send = send or _sender()
        self.last_status: str | None = None

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")
        self.last_status = status

    def status(self, status: str) -> None:
        if status != self.last_status:
            self._send(f"STATUS={status}")
            self.last_status = status

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the config")
        self.last_status = "reloading the config"

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec=), or None when not asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2_000_000, 0.5)
    except ValueError:
        return None
