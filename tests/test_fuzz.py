"""The fuzz tier: generated configs, drop-in sets and corrupted host trees through the whole CLI.

Every case runs ``pmemd.cli.main([...])`` in-process with ``--root`` on a copy of a captured
host tree, and must: exit 0, 1 or 2; raise nothing out of ``main`` (no traceback); finish within
``CASE_SECONDS``; and every error line it prints must carry ``file:line`` or name the host file
it is about. Cases come from a seeded generator (``PMEMD_FUZZ_SEED``, ``PMEMD_FUZZ_CASES``):

- configs: structure-aware mutations of examples/, text mutations, YAML edge cases, random bytes;
- drop-in sets: fragments in the three drop-in directories, masks, shadowing, FIFOs, sockets,
  links (inside, out of the root, loops), bad names and modes;
- host trees: files of the captured trees truncated, emptied, replaced by garbage, made
  unreadable, turned into symlink loops, FIFOs, directories or links out of the root.

Two worker processes share the cases; a sample is replayed through the console script. The
counts are printed at the end. An exception the CLI's catch-all turns into an "internal error"
line counts as a traceback: it is a bug all the same.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests/fixtures/hosts"
EXAMPLES = [REPO / "examples/pmem.yaml", *sorted((REPO / "examples/pmem.d").glob("*.yaml"))]

SEED = int(os.environ.get("PMEMD_FUZZ_SEED", "1212"))
CONFIG_CASES = int(os.environ.get("PMEMD_FUZZ_CASES", "10000"))
DROPIN_CASES = max(CONFIG_CASES // 4, 20)
HOST_CASES = max(CONFIG_CASES // 4, 20)
CASE_SECONDS = 20.0  # a case takes milliseconds (slowest about 1.6 s on a loaded machine); this tells a hang
WORKERS = 2
REPLAY = 24  # cases replayed through `python -m pmemd`


FILE_LINE = re.compile(r"(?:^|[\s(])/\S*:\d+(?::\d+)?\b")
HOST_PATH = re.compile(r"(?:^|[\s('\"`])/(?:etc|proc|sys|var|boot|run|usr|dev|efi|lib)\b")


# --- generators ----------------------------------------------------------------------------

HOSTILE: list[Any] = [
    0, -1, 1, 2**63, 2**64 - 1, 2**64, 10**30, 128 << 20, 4 << 30, "9" * 5000, "99999999999999999999G",
    "16E", "0x", "0x" + "f" * 17 + "G", "0xffffffffffffffffT", "4GB", "4gb", "4 G", "010G", "1.5G", "1G!4G",
    "auto", "AUTO", "", " ", None, True, False, 1.5, float("inf"), float("nan"), [], {}, [1, 2], {"a": 1},
    "none", "/pmem/fast", "/pmem/fast/x", "/pmem", "/", "/proc/x", "relative", "/a/../b", "/a//b",
    "a" * 300, "\n", "\t", "\x00", "é", "😀", "\u202e", "1h30m", "2min 30s", "500ms", "0s", "-5s",
    "1y", "99999999999h", "1.5.5s", "Sun 03:00", "never", "now", "schedule", "flag", "ext4", "xfs",
    "fsdax", "devdax", "raw", "wipe", "refuse", "-F", "--force", "uuid=x", "dax=always", "noatime",
    "^inline_data", "-m reflink=1", "grub", "grubby", "systemd-boot", "keep", "disable", "v" * 40,
]
KEYS = ["version", "settings", "namespaces", "size", "offset", "mode", "filesystem", "mount", "path",
        "options", "type", "label", "on_foreign_data", "reboot", "reboot_window", "bootloader",
        "min_free_ram", "kaslr", "resync_interval", "unknown", "Size", "", "<<", "a" * 50]
NAMES = ["fast", "bulk", "x", "Bad", "a" * 33, "-lead", "n_1", "é", "0", "a b", "fast2"]

_LAUGHS = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))
EDGE: list[str] = [
    "", "\n", "---", "...", "~", "null", "[]", "{}", "- a", "version: 1", "version: 1\n---\nversion: 1\n",
    "%YAML 1.1\n---\nversion: 1\n", "%TAG ! tag:x,2000:\n--- !x\nversion: 1\n", "version: &v 1\nsettings: *v\n",
    "a: &a [*a]\n", _LAUGHS, "version: 1\n" + _LAUGHS, "<<: {version: 1}\n", "version: !!int abc\n",
    "version: !!float 1\n", "version: !!str 1\n", "version: !!binary aGk=\n", "!custom {version: 1}\n",
    "version: 1\nsettings: !custom {reboot: never}\n", "version: 1\nnamespaces: !!set {a}\n",
    "version: 1\nnamespaces: !!omap [a: 1]\n", "? [a]\n: 1\n", "? {a: 1}\n: 2\n", "version: 0x1\n",
    "version: 1e0\n", "version: 01\n", "version: +1\n", "version: 1\nversion: 1\n",
    "version: 1\nnamespaces:\n  a:\n    size: 1G\n  a:\n    size: 2G\n", "\tversion: 1\n",
    "version: 1 #" + "x" * 1000 + "\n", "'unterminated\n", '"\\x"\n', "version: 1\nnamespaces: {a: {size: "
    + "9" * 5000 + "}}\n", "a:" + " [" * 40 + " ]" * 40 + "\n", "[" * 2000, "{a: " * 100,
    "\ufeffversion: 1\n", "version: 1\x00\n", "version: 1\r\nnamespaces: {}\r\n", "version: 1\rnamespaces: {}\r",
    "\x85", 'version: "\\ud800"\n', "version: 1\nsettings: {resync_interval: 1h30m}\n",
    "version: 1\nsettings: {resync_interval: '2min 30s'}\n", "version: 1\nnamespaces:\n  a: {size: 1G}\n  b: "
    "{size: 1G, offset: 99999999999999999999G}\n", "version: 1\nnamespaces: {a: {size: 99999999999999999999G}}\n",
    "version: 1\nnamespaces:\n" + "".join(f"  n{i}: {{size: 128M}}\n" for i in range(70)),
    "version: 1\n" + "".join(f"k{i}: {i}\n" for i in range(3000)), "version: 1\nx: [" + ",".join(["1"] * 60000) + "]\n",
    "version: 1\nnamespaces:\n  a: {size: 1G, filesystem: {type: ext4}, mount: {path: /pmem/a}}\n"
    "  b: {size: 1G, filesystem: {type: ext4}, mount: {path: /pmem/a}}\n",
    "version: 1\nnamespaces:\n  a: {size: 1G, filesystem: {type: ext4}, mount: {path: /pmem/a}}\n"
    "  b: {size: 1G, filesystem: {type: ext4}, mount: {path: /pmem/a/b}}\n",
    "version: 1\nnamespaces:\n  'a\nb': {size: 1G}\n", "version: 1\n'\u202e': 1\n", "version: |\n  1\n",
    "version: >\n  1\n", "version: 1\nnamespaces: {fast: {size: 1G, mount: {path: /pmem/f}}}\n",
    "version: 1\nsettings: {reboot_window: '" + "*" * 100 + "'}\n", "&a version: 1\n", "version: 1 &a\n",
    "version: [1\n", "version: {1\n", "version: 1\n  bad-indent: 2\n", "- - - - - -\n", "key: value: other\n",
]
SNIPPETS = ["&a ", "*a", "!!int ", "!!str ", "!custom ", "<<: ", "---\n", "...\n", "\t", "? ", "[", "]", "{", "}",
            ": ", "- ", "#", "'", '"', "|", ">", "%", "@", "`", "\x00", "\x1b", "é", "\ufeff", "\r", " " * 7,
            "9" * 30, "0x", "G", "offset: auto\n", "size: 0\n", "  ", "\n"]


def _mutate_data(rng: random.Random, data: Any) -> Any:
    """One structural change somewhere in a loaded config."""
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k in list(node):
                paths.append((node, k))
                walk(node[k])
        elif isinstance(node, list):
            for i in range(len(node)):
                paths.append((node, i))
                walk(node[i])

    walk(data)
    if not paths or rng.random() < 0.1:
        return rng.choice(HOSTILE) if rng.random() < 0.3 else data
    parent, key = rng.choice(paths)
    op = rng.randrange(7)
    if op == 0:
        parent[key] = rng.choice(HOSTILE)
    elif op == 1 and isinstance(parent, dict):
        del parent[key]
    elif op == 2 and isinstance(parent, dict):
        parent[rng.choice(KEYS)] = rng.choice(HOSTILE)
    elif op == 3:
        parent[key] = [parent[key]] if rng.random() < 0.5 else {rng.choice(KEYS): parent[key]}
    elif op == 4 and isinstance(data, dict) and isinstance(data.get("namespaces"), dict) and data["namespaces"]:
        spaces = data["namespaces"]
        src = rng.choice(list(spaces))
        spaces[rng.choice(NAMES)] = json.loads(json.dumps(spaces[src], default=str))
    elif op == 5 and isinstance(parent, dict):
        parent[rng.choice(NAMES)] = parent.pop(key)
    else:
        parent[key] = rng.choice(HOSTILE)
    return data


def _dump(rng: random.Random, data: Any) -> str:
    try:
        return yaml.safe_dump(data, default_flow_style=rng.choice([None, True, False]),
                              allow_unicode=rng.random() < 0.5, sort_keys=False)
    except (yaml.YAMLError, ValueError, TypeError):
        return str(data)


def _mutate_text(rng: random.Random, text: str) -> bytes:
    lines = text.splitlines(keepends=True) or [""]
    for _ in range(rng.randint(1, 4)):
        lines = lines or [""]
        op = rng.randrange(8)
        i = rng.randrange(len(lines))
        if op == 0:
            lines.insert(i, rng.choice(SNIPPETS) + rng.choice(lines))
        elif op == 1 and len(lines) > 1:
            del lines[i]
        elif op == 2:
            lines.insert(i, lines[i])
        elif op == 3:
            pos = rng.randint(0, len(lines[i]))
            lines[i] = lines[i][:pos] + rng.choice(SNIPPETS) + lines[i][pos:]
        elif op == 4:
            lines[i] = " " * rng.randint(0, 9) + lines[i].lstrip()
        elif op == 5:
            lines = lines[:i]
        elif op == 6:
            lines[i] = lines[i].replace(":", "", 1)
        else:
            lines[i] = rng.choice(EDGE)
    out = "".join(lines)
    encoding = rng.choices(["utf-8", "utf-16", "utf-16-le", "latin-1", "cut"], [40, 2, 1, 2, 2])[0]
    if encoding == "latin-1":
        return out.encode("utf-8", errors="surrogateescape") + "# café\n".encode("latin-1")
    if encoding == "cut":
        raw = out.encode("utf-8", errors="surrogateescape")
        return raw[: rng.randint(0, len(raw))]
    return out.encode(encoding, errors="surrogateescape")


def _random_bytes(rng: random.Random) -> bytes:
    n = rng.randint(0, 3000)
    if rng.random() < 0.5:
        return bytes(rng.getrandbits(8) for _ in range(n))
    alphabet = "abcdefgv0123456789 :-[]{}&*!|>'\"#%@?,\n\t"
    return "".join(rng.choice(alphabet) for _ in range(n)).encode()


_EXAMPLE_TEXTS = [p.read_text() for p in EXAMPLES]


def gen_config(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.5:
        data = yaml.safe_load(rng.choice(_EXAMPLE_TEXTS))
        for _ in range(rng.randint(1, 3)):
            data = _mutate_data(rng, data)
        return _dump(rng, data).encode("utf-8", errors="surrogateescape")
    if r < 0.75:
        return _mutate_text(rng, rng.choice(_EXAMPLE_TEXTS))
    if r < 0.92:
        parts = [rng.choice(EDGE) for _ in range(rng.randint(1, 2))]
        return "\n".join(parts).encode("utf-8", errors="surrogateescape")
    return _random_bytes(rng)


# --- cases ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str
    index: int
    argv: list[str]
    what: str
    rc: int | str
    seconds: float
    stdout: str
    stderr: str
    crash_site: str | None = None  # file:line of the innermost pmemd frame of an escaped exception
    crash: str | None = None
    bad_lines: list[str] = field(default_factory=list)


class Trees:
    """Per-process copies of the captured trees: pristine ones for config and drop-in cases,
    scratch ones for corruption (restored after each case)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.names = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
        self.paths: dict[str, Path] = {}
        for name in self.names:
            dest = base / name
            if not dest.exists():
                shutil.copytree(FIXTURES / name, dest, symlinks=True)
                (dest / "etc").mkdir(exist_ok=True)
                (dest / "etc/pmem.yaml").write_text(_EXAMPLE_TEXTS[0])
            self.paths[name] = dest

    def pick(self, rng: random.Random) -> Path:
        return self.paths[rng.choice(self.names)]


def _reset_config(tree: Path) -> None:
    for d in ("etc/pmem.d", "run/pmem.d", "usr/lib/pmem.d"):
        shutil.rmtree(tree / d, ignore_errors=True)
    main = tree / "etc/pmem.yaml"
    if main.is_symlink() or main.is_file():
        main.unlink()
    elif main.exists():
        shutil.rmtree(main)
    main.write_text(_EXAMPLE_TEXTS[0])
    os.chmod(main, 0o644)


def _command(rng: random.Random, choices: list[tuple[list[str], int]]) -> list[str]:
    return list(rng.choices([c for c, _ in choices], [w for _, w in choices])[0])


CONFIG_COMMANDS = [(["validate"], 55), (["config"], 20), (["config", "--json"], 5), (["plan"], 10),
                   (["plan", "--json"], 4), (["status"], 4), (["status", "--json"], 2)]
HOST_COMMANDS = [(["validate"], 30), (["plan"], 30), (["plan", "--json"], 10), (["status"], 20),
                 (["status", "--json"], 10)]


def setup_config_case(rng: random.Random, trees: Trees) -> tuple[Path, list[str], str, Callable[[], None]]:
    tree = trees.pick(rng)
    _reset_config(tree)
    data = gen_config(rng)
    (tree / "etc/pmem.yaml").write_bytes(data)
    return tree, _command(rng, CONFIG_COMMANDS), f"{tree.name}: /etc/pmem.yaml = {data[:120]!r}", lambda: None


DROPIN_DIRS = ("etc/pmem.d", "run/pmem.d", "usr/lib/pmem.d")


def setup_dropin_case(rng: random.Random, trees: Trees) -> tuple[Path, list[str], str, Callable[[], None]]:
    tree = trees.pick(rng)
    _reset_config(tree)
    made: list[str] = []
    for _ in range(rng.randint(1, 5)):
        directory = tree / rng.choice(DROPIN_DIRS)
        directory.mkdir(parents=True, exist_ok=True)
        name = rng.choice(["10-a.yaml", "50-pmdk-tests.yaml", "90-z.yaml", "10-a.yml", ".hidden.yaml",
                           "a\nb.yaml", "tab\t.yaml", "é.yaml", "99-last.yaml"])
        path = directory / name
        if path.is_symlink() or path.exists():
            continue
        kind = rng.choices(["fragment", "config", "empty", "devnull", "fifo", "dir", "socket", "outside",
                            "inside", "loop", "zero", "groupw", "uid"],
                           [30, 20, 6, 6, 4, 3, 2, 4, 4, 4, 3, 3, 3])[0]
        if kind in ("fragment", "groupw", "uid"):
            text = rng.choice(_EXAMPLE_TEXTS[1:] or _EXAMPLE_TEXTS)
            data = yaml.safe_load(text)
            data = _mutate_data(rng, data) if rng.random() < 0.7 else data
            path.write_text(_dump(rng, data), errors="surrogateescape")
            if kind == "groupw":
                os.chmod(path, 0o664)
            elif kind == "uid":
                os.chown(path, 1000, 1000)
        elif kind == "config":
            path.write_bytes(gen_config(rng))
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "devnull":
            path.symlink_to("/dev/null")
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "dir":
            path.mkdir()
        elif kind == "socket":
            with contextlib.suppress(OSError):
                s = socket.socket(socket.AF_UNIX)
                s.bind(str(path))
                s.close()
        elif kind == "outside":
            path.symlink_to(rng.choice(["/etc/passwd", "/etc/hostname", "/proc/self/status"]))
        elif kind == "inside":
            path.symlink_to("../pmem.yaml" if rng.random() < 0.5 else "../../etc/os-release")
        elif kind == "loop":
            path.symlink_to(name)
        elif kind == "zero":
            path.symlink_to("/dev/zero")
        made.append(f"{directory.relative_to(tree)}/{name!r}:{kind}")
    if rng.random() < 0.15:  # the main file masked, or gone
        main = tree / "etc/pmem.yaml"
        main.unlink()
        if rng.random() < 0.5:
            main.symlink_to("/dev/null")
        made.append("main:" + ("devnull" if main.is_symlink() else "absent"))
    return tree, _command(rng, CONFIG_COMMANDS), f"{tree.name}: " + ", ".join(made), lambda: _reset_config(tree)


_KEY_FILES = ["var/lib/pmemd/state.json", "var/lib/pmemd/actions.jsonl", "proc/cmdline", "proc/self/mountinfo",
              "proc/iomem", "proc/meminfo", "boot/grub/grub.cfg", "etc/default/grub", "dev/kmsg",
              "proc/sys/kernel/osrelease", "proc/sys/kernel/random/boot_id", "etc/kernel/cmdline",
              "boot/grub/grubenv", "sys/devices/system/memory/block_size_bytes"]


def _tree_files(tree: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(tree):
        for n in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            rel = os.path.relpath(os.path.join(dirpath, n), tree)
            if not rel.startswith("etc/pmem"):
                out.append(rel)
    return sorted(out)


_FILES_CACHE: dict[Path, list[str]] = {}


def _save(path: Path) -> tuple[str, Any, int]:
    if path.is_symlink():
        return "link", os.readlink(path), 0
    if path.is_file():
        return "file", path.read_bytes(), path.stat().st_mode
    return "absent", None, 0


def _restore(path: Path, saved: tuple[str, Any, int]) -> None:
    if path.is_symlink() or path.is_file() or path.is_fifo() or path.is_socket():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    kind, value, mode = saved
    if kind == "link":
        path.symlink_to(value)
    elif kind == "file":
        path.write_bytes(value)
        os.chmod(path, stat_mode(mode))


def stat_mode(mode: int) -> int:
    return mode & 0o7777


def _deep_json(rng: random.Random) -> bytes:
    n = rng.choice([100, 2000, 100_000])
    return ("[" * n + "]" * n).encode() if rng.random() < 0.5 else ('{"a":' * n + "1" + "}" * n).encode()


def _state_mutation(rng: random.Random) -> bytes:
    base = {"version": 1, "kernel_args": ["memmap=1G!4G"], "backend": "grub",
            "namespaces": {"fast": {"start": 4 << 30, "size": 1 << 30, "filesystem": {"uuid": "u", "type": "ext4"},
                                    "mount_path": "/pmem/fast"}},
            "pending_reboot": {"since": "now", "boot_id": None, "reason": "r"}}
    data = _mutate_data(rng, base)
    return json.dumps(data, default=str).encode()


def setup_host_case(rng: random.Random, trees: Trees) -> tuple[Path, list[str], str, Callable[[], None]]:
    tree = trees.pick(rng)
    _reset_config(tree)
    files = _FILES_CACHE.setdefault(tree, _tree_files(tree))
    rel = rng.choice(_KEY_FILES) if rng.random() < 0.45 else rng.choice(files)
    path = tree / rel
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    saved = _save(path)
    kind = rng.choices(["truncate", "empty", "garbage", "text", "unreadable", "loop", "fifo", "dir",
                        "outside", "huge", "json", "nulls", "sparse-link"],
                       [12, 10, 12, 10, 4, 8, 8, 4, 6, 2, 8, 4, 2])[0]
    if rel == "dev/kmsg" and kind == "outside":
        kind = "garbage"  # observe reads /dev/kmsg as a live device: /dev/zero there never ends (see test_hostile)
    old = saved[1] if saved[0] == "file" else b""
    _restore(path, ("absent", None, 0))
    if kind == "truncate":
        path.write_bytes(old[: rng.randint(0, max(len(old) - 1, 0))])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400))))
    elif kind == "text":
        choices = ["zz\n", "0x\n", "-1\n", "0xffffffffffffffffffff\n", "0x10\n", "\n\n\n", "null\n",
                   "System RAM\n", "1 2 3 4 5 6 7 - x y z\n" * 3, "memmap=99999999999999999999G!4G\n",
                   "é" * 50, "[" * 50, "null\nnull\n{}\n[]\n\"x\"\n", "\x00" * 10]
        path.write_text(rng.choice(choices))
    elif kind == "unreadable":
        path.write_bytes(old or b"x\n")
        os.chmod(path, 0)
    elif kind == "loop":
        path.symlink_to(path.name)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "outside":
        path.symlink_to(rng.choice(["/etc/hostname", "/etc/passwd", "/dev/zero", "/dev/null"]))
    elif kind == "huge":
        with open(path, "wb") as f:
            f.truncate(20 << 20)
    elif kind == "json":
        path.write_bytes(_deep_json(rng) if rng.random() < 0.4 else _state_mutation(rng))
    elif kind == "nulls":
        path.write_text("null\n" + rng.choice(["1\n", "[]\n", '"x"\n', "{}\n", "{\"kind\": 5}\n"]))
    elif kind == "sparse-link":
        path.symlink_to("../" * 30 + "x")
    cmd = _command(rng, HOST_COMMANDS)
    return tree, cmd, f"{tree.name}: /{rel} -> {kind}", lambda: _restore(path, saved)


SETUPS = {"config": setup_config_case, "dropin": setup_dropin_case, "host": setup_host_case}


def case_rng(kind: str, index: int) -> random.Random:
    return random.Random(f"{SEED}:{kind}:{index}")  # noqa: S311 - reproducible test cases, not secrets


# --- running -------------------------------------------------------------------------------


class _Hang(BaseException):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Hang()


class _NoRunner:
    """Answers every command with 'not found': the fuzz tier starts no process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def run(self, argv: Any, *, timeout: float = 60.0) -> Any:
        from pmemd.runner import Result

        return Result(tuple(argv), 127, "", f"{argv[0]}: not run in the fuzz tier")


def _crash_site(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/pmemd/" in f.filename]
    if not frames:
        return "?"
    f = frames[-1]
    return f"{Path(f.filename).name}:{f.lineno}"


def _bad_lines(stdout: str, stderr: str) -> list[str]:
    bad = []
    candidates = stderr.splitlines() + [ln for ln in stdout.splitlines() if ln.startswith("error:")]
    for line in candidates:
        if not line.strip() or line.startswith((" ", "usage:")) or "warning:" in line:
            continue
        if FILE_LINE.search(line) or HOST_PATH.search(line):
            continue
        bad.append(line[:300])
    return bad


def run_case(kind: str, index: int, trees: Trees) -> Outcome:
    from pmemd.cli import main

    rng = case_rng(kind, index)
    tree, cmd, what, cleanup = SETUPS[kind](rng, trees)
    argv = ["--root", str(tree), *cmd]
    out, err = io.StringIO(), io.StringIO()
    crash = site = None
    start = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc: int | str = main(argv)
    except _Hang:
        rc = "hang"
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # a traceback: what the tier is looking for
        rc = "traceback"
        site = _crash_site(exc)
        crash = "".join(traceback.format_exception_only(exc)).strip()[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.monotonic() - start
    try:
        cleanup()
    except OSError:
        _reset_config(tree)
    internal = next((ln for ln in err.getvalue().splitlines() if ln.startswith("pmemd: internal error")), None)
    if internal is not None:  # the CLI's catch-all turned an exception into a line: still a bug
        rc, site, crash = "traceback", "cli.py:catch-all", internal[:300]
    o = Outcome(kind, index, argv, what, rc, seconds, out.getvalue(), err.getvalue(), site, crash)
    if isinstance(rc, int):
        o.bad_lines = _bad_lines(o.stdout, o.stderr)
    o.stdout, o.stderr = o.stdout[-400:], o.stderr[-600:]
    return o


_TREES: dict[int, Trees] = {}  # one set of tree copies per worker process


def _worker(job: tuple[str, list[int], str]) -> list[Outcome]:
    kind, indices, base = job
    import pmemd.cli

    pmemd.cli.SubprocessRunner = _NoRunner  # type: ignore[attr-defined,assignment]
    signal.signal(signal.SIGALRM, _alarm)
    trees = _TREES.get(os.getpid()) or _TREES.setdefault(os.getpid(), Trees(Path(base) / f"w{os.getpid()}"))
    return [run_case(kind, i, trees) for i in indices]


@dataclass
class Results:
    outcomes: list[Outcome]
    seconds: float
    replayed: list[tuple[Outcome, subprocess.CompletedProcess[str]]] = field(default_factory=list)

    def where(self, pred: Callable[[Outcome], bool]) -> list[Outcome]:
        return [o for o in self.outcomes if pred(o)]


def _chunks(kind: str, count: int, size: int = 200) -> Iterator[tuple[str, list[int]]]:
    for lo in range(0, count, size):
        yield kind, list(range(lo, min(lo + size, count)))


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Results:
    base = tmp_path_factory.mktemp("fuzz")
    jobs = [(k, idx, str(base)) for k, n in (("config", CONFIG_CASES), ("dropin", DROPIN_CASES),
                                            ("host", HOST_CASES)) for k, idx in _chunks(k, n)]
    start = time.monotonic()
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(WORKERS, maxtasksperchild=20) as pool:
        outcomes = [o for batch in pool.imap_unordered(_worker, jobs) for o in batch]
    return Results(sorted(outcomes, key=lambda o: (o.kind, o.index)), time.monotonic() - start)


def _show(outcomes: list[Outcome], limit: int = 8) -> str:
    return "\n".join(f"  {o.kind}#{o.index} {' '.join(o.argv[2:])} [{o.what[:160]}]: rc={o.rc} "
                     f"{o.crash_site or ''} {o.crash or ''} {o.bad_lines[:2] if o.bad_lines else ''}"
                     for o in outcomes[:limit])


def test_fuzz_counts(fuzz: Results, capsys: pytest.CaptureFixture[str]) -> None:
    kinds = Counter(o.kind for o in fuzz.outcomes)
    tracebacks = fuzz.where(lambda o: o.rc == "traceback")
    sites = Counter(o.crash_site for o in tracebacks)
    with capsys.disabled():
        print(f"\nfuzz: {len(fuzz.outcomes)} cases (configs {kinds['config']}, drop-in sets "
              f"{kinds['dropin']}, host trees {kinds['host']}) in {fuzz.seconds:.1f} s with {WORKERS} "
              f"workers, seed {SEED}: {len(tracebacks)} tracebacks or internal errors, "
              f"{len(fuzz.where(lambda o: o.rc == 'hang'))} hangs, "
              f"{len(fuzz.where(lambda o: bool(o.bad_lines)))} cases with error lines naming no file, "
              f"slowest case {max(o.seconds for o in fuzz.outcomes):.2f} s; exit codes "
              f"{dict(Counter(str(o.rc) for o in fuzz.outcomes))}")
        for site, n in sites.most_common():
            print(f"  crash site {site}: {n} cases")
    assert len(fuzz.outcomes) >= CONFIG_CASES + DROPIN_CASES + HOST_CASES


def test_fuzz_no_hangs(fuzz: Results) -> None:
    hangs = fuzz.where(lambda o: o.rc == "hang")
    assert not hangs, f"{len(hangs)} cases ran past {CASE_SECONDS} s:\n{_show(hangs)}"


def test_fuzz_no_traceback_at_all(fuzz: Results) -> None:
    crashes = fuzz.where(lambda o: o.rc == "traceback")
    assert not crashes, f"{len(crashes)} tracebacks:\n{_show(crashes)}"


def test_fuzz_exit_codes(fuzz: Results) -> None:
    odd = fuzz.where(lambda o: isinstance(o.rc, int) and o.rc not in (0, 1, 2))
    assert not odd, _show(odd)


def _status_text(o: Outcome) -> bool:
    return o.argv[2:] == ["status"]


def test_fuzz_every_error_line_names_its_file(fuzz: Results) -> None:
    bad = fuzz.where(lambda o: bool(o.bad_lines) and not _status_text(o))
    assert not bad, f"{len(bad)} cases print an error line without file:line or a host path:\n{_show(bad)}"


def test_fuzz_every_status_error_line_names_its_file(fuzz: Results) -> None:
    bad = fuzz.where(lambda o: bool(o.bad_lines) and _status_text(o))
    assert not bad, f"{len(bad)} status cases print an error line without file:line:\n{_show(bad)}"


def test_fuzz_replay_through_the_console_script(fuzz: Results, tmp_path: Path) -> None:
    """A sample (every kind, errors first) replayed with ``python -m pmemd``: same exit code, no
    traceback on stderr."""
    rng = random.Random(SEED)  # noqa: S311
    interesting = [o for o in fuzz.outcomes if o.rc == 1]
    plain = [o for o in fuzz.outcomes if o.rc in (0, 2)]
    sample = rng.sample(interesting, min(REPLAY * 2 // 3, len(interesting)))
    sample += rng.sample(plain, min(REPLAY - len(sample), len(plain)))
    trees = Trees(tmp_path / "replay")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": "/nonexistent"}  # no tool can run
    mismatched = []
    for o in sample:
        tree, cmd, _, cleanup = SETUPS[o.kind](case_rng(o.kind, o.index), trees)
        try:
            r = subprocess.run([sys.executable, "-m", "pmemd", "--root", str(tree), *cmd], capture_output=True,
                               text=True, env=env, timeout=60, check=False)
        finally:
            cleanup()
        if "Traceback" in r.stderr or r.returncode != o.rc:
            mismatched.append(f"{o.kind}#{o.index} {cmd}: in-process rc={o.rc}, console script "
                              f"rc={r.returncode} {r.stderr[-300:]}")
    assert not mismatched, "\n".join(mismatched)
