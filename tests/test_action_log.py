"""The action log (/var/lib/pmemd/actions.jsonl) stays bounded: it rotates to actions.jsonl.1."""

from __future__ import annotations

import json
from pathlib import Path

from pmemd.fsroot import Root
from pmemd.journal import Journal
from pmemd.state import ACTION_LOG, ACTION_LOG_MAX


def test_append_line_rotates_past_the_limit(tmp_path: Path) -> None:
    root = Root(tmp_path)
    log = "/var/lib/pmemd/test.jsonl"
    for i in range(10):
        root.append_line(log, f"{i:09d}", rotate_at=35)  # 10 bytes a line: three fit
    current = (tmp_path / log.lstrip("/")).read_text().splitlines()
    previous = (tmp_path / (log.lstrip("/") + ".1")).read_text().splitlines()
    assert current == [f"{i:09d}" for i in (9,)]
    assert previous == [f"{i:09d}" for i in (6, 7, 8)]
    assert not (tmp_path / (log.lstrip("/") + ".2")).exists()


def test_append_line_without_a_limit_keeps_everything(tmp_path: Path) -> None:
    root = Root(tmp_path)
    for i in range(100):
        root.append_line("/log", str(i))
    assert len((tmp_path / "log").read_text().splitlines()) == 100
    assert not (tmp_path / "log.1").exists()


def test_journal_caps_the_action_log(tmp_path: Path) -> None:
    sent: list[str] = []
    journal = Journal(root=Root(tmp_path), sender=lambda message, **_: sent.append(message))
    log = tmp_path / ACTION_LOG.lstrip("/")
    log.parent.mkdir(parents=True)
    log.write_text("x" * (ACTION_LOG_MAX - 10) + "\n")
    journal.event("mkfs", "made ext4 on /dev/pmem0", namespace="fast", device="/dev/pmem0", result="ok")
    assert sent == ["made ext4 on /dev/pmem0"]
    (entry,) = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert entry["action"] == "mkfs" and entry["result"] == "ok"
    assert log.with_name(log.name + ".1").stat().st_size == ACTION_LOG_MAX - 9
