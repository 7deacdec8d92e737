"""Structured logging: one journal entry per action, plus an append-only action log.

Through systemd-python when it is importable (fields ``PMEMD_ACTION``, ``PMEMD_NAMESPACE``,
``PMEMD_DEVICE``, ``PMEMD_RESULT`` and a stable ``MESSAGE_ID`` per action type, documented in
``pmemd.catalog``); otherwise readable lines on stderr, which systemd also collects.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pmemd.fsroot import Root
from pmemd.state import ACTION_LOG, ACTION_LOG_MAX

MESSAGE_IDS = {
    "set-kernel-args": "17a5249fd1e450fe87b19bf94110bde6",
    "reboot": "0798e30b0212574b8bb14830c71360c3",
    "clear-reboot": "9ba932d18a7e5a168a990b0aafa94575",
    "set-mode": "b8cc8d10c1a55aa9acc7d97381a6c15d",
    "mkfs": "deb5a3965bea5537a87a6fb0aa4a5105",
    "mkdir": "77d320288aa757d8b52e4399db77ef12",
    "mount": "ded8e5faa4235d27b2c1ef859cbc1f06",
    "verify-dax": "3ca4a104cd2b5100ae30d933ee5f4756",
    "unmount": "a8486836e0ec548c9de7cce6f70f49e1",
    "forget": "8867a1e61624592099a50dceefb71845",
    "config-error": "93164677d78058ec92c07f36c00e855e",
    "pass": "b6a121cbe5ea510d9750a34b22065984",
    "verify-region": "d17039b27d125957a194be77d899a1c8",
    "arm-trial": "d573ff228f884955a7b680fc994cfceb",
    "commit-trial": "e8bbc9184c974594ad68e54a1b6d3c3b",
    "fail-trial": "b7345ca25e7a4c0b808baaa30eaa7a53",
    "end-trial": "39a5530df4454a479e502ed7d55a5fc4",
}

# syslog priorities
ERR, WARNING, NOTICE, INFO, DEBUG = 3, 4, 5, 6, 7

# journald's native socket on the machine pmemd runs on (not a path of the managed --root tree).
JOURNAL_SOCKET = "/run/systemd/journal/socket"


def _journal_sender() -> Callable[..., Any] | None:
    # sd_journal_send() reports success when journald's socket is missing (containers, chroots,
    # hosts without systemd), so every entry would silently vanish: use stderr there instead.
    if not os.path.exists(JOURNAL_SOCKET):
        return None
    try:
        from systemd import journal
    except ImportError:
        return None
    send: Callable[..., Any] = journal.send
    return send


@dataclass
class Journal:
    """Where entries go. ``sender`` is systemd.journal.send or None for stderr."""

    root: Root | None = None  # where the action log lives; None: no action log
    sender: Callable[..., Any] | None = None
    use_journal: bool = True
    log_failed: bool = False  # the action log could not be written (said once)
    find_sender: bool = False  # look for journald with the first entry (a run in sync logs none)

    @classmethod
    def default(cls, root: Root | None) -> Journal:
        return cls(root=root, find_sender=True)

    def event(self, kind: str, message: str, *, priority: int = INFO, namespace: str | None = None,
              device: str | None = None, result: str | None = None, **fields: str) -> None:
        if self.find_sender:
            self.sender, self.find_sender = _journal_sender(), False
        extra = {f"PMEMD_{k.upper()}": str(v) for k, v in fields.items() if v is not None}
        sent = False
        if self.sender is not None and self.use_journal:
            try:
                self.sender(
                    message,
                    MESSAGE_ID=MESSAGE_IDS.get(kind, MESSAGE_IDS["pass"]),
                    PRIORITY=str(priority),
                    SYSLOG_IDENTIFIER="pmemd",
                    PMEMD_ACTION=kind,
                    **({"PMEMD_NAMESPACE": namespace} if namespace else {}),
                    **({"PMEMD_DEVICE": device} if device else {}),
                    **({"PMEMD_RESULT": result} if result else {}),
                    **extra,
                )
                sent = True
            except OSError:
                sent = False  # journald not reachable: fall back to stderr below
        if not sent:
            tag = {ERR: "error", WARNING: "warning", NOTICE: "notice", DEBUG: "debug"}.get(priority, "info")
            ns = f" [{namespace}]" if namespace else ""
            res = f" ({result})" if result else ""
            print(f"pmemd {tag}: {kind}{ns}{res}: {message}", file=sys.stderr, flush=True)
        if self.root is not None and result is not None:
            entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "action": kind, "namespace": namespace,
                     "device": device, "result": result, "message": message}
            try:
                self.root.append_line(ACTION_LOG, json.dumps(entry, sort_keys=True), rotate_at=ACTION_LOG_MAX)
            except OSError as exc:  # a full or read-only /var: the journal above has the entry
                if not self.log_failed:
                    print(f"pmemd: cannot append to {ACTION_LOG} ({exc.strerror}); the journal keeps "
                          "the record", file=sys.stderr, flush=True)
                self.log_failed = True
