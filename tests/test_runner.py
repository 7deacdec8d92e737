"""The runner: argv only, LC_ALL=C, bounded by a timeout, and a heartbeat while a command runs."""

from __future__ import annotations

import time

from pmemd.runner import SubprocessRunner, Timings


def test_output_exit_code_and_a_missing_command() -> None:
    r = SubprocessRunner().run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert SubprocessRunner().run(["/nonexistent/tool"]).returncode == 127
    assert SubprocessRunner().run(["sh", "-c", "echo $LC_ALL"]).stdout == "C\n"


def test_a_long_command_feeds_the_heartbeat_and_keeps_its_output() -> None:
    beats: list[float] = []
    r = SubprocessRunner(heartbeat=lambda: beats.append(time.monotonic()), beat=0.2).run(
        ["sh", "-c", "echo start; sleep 1.1; echo done"], timeout=30)
    assert r.ok and r.stdout == "start\ndone\n"
    assert 3 <= len(beats) <= 7, beats  # about every 0.2 s for 1.1 s


def test_the_timeout_still_ends_a_command_that_hangs() -> None:
    beats: list[int] = []
    start = time.monotonic()
    r = SubprocessRunner(heartbeat=lambda: beats.append(1), beat=0.2).run(["sleep", "30"], timeout=1.0)
    assert r.returncode == 124 and "timed out after 1 s" in r.stderr
    assert time.monotonic() - start < 5 and beats


def test_timings_add_up_every_command_and_list_each_while_recording() -> None:
    runner = SubprocessRunner()
    runner.run(["sleep", "0.2"])
    assert runner.timings.seconds >= 0.2 and runner.timings.calls is None
    runner.timings.calls = []
    runner.run(["sleep", "0.3"])
    runner.run(["/nonexistent/tool"])  # a command that cannot start counts too
    (first, secs), (second, _) = runner.timings.calls
    assert first == ("sleep", "0.3") and secs >= 0.3 and second == ("/nonexistent/tool",)
    assert runner.timings.seconds >= 0.5
    t = Timings()
    t.add(("x",), 1.5)
    assert (t.seconds, t.calls) == (1.5, None)
