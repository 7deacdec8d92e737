"""pmemd's layering rules (README, "How it works"), checked on the code itself.

1. Functional core, imperative shell: the core modules import nothing that touches the OS.
2. The CLI's start-up does not pay for the daemon's dependencies (watchdog, systemd), nor for
   what only a change needs (the executor, the effects, the journal).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, copy_fixture

CORE = ("model", "fields", "config", "yamldoc", "parse", "bootloader.syntax", "validate", "actions", "diagnose", "plan",
        "plan_boot", "plan_fs", "report", "schema", "units", "facts", "state", "trial", "frozen")
FORBIDDEN_STDLIB = {"os", "subprocess", "pathlib", "shutil", "ctypes", "socket", "io", "tempfile", "glob",
                    "signal", "select", "fcntl", "importlib"}
FORBIDDEN_PMEMD = {"pmemd.fsroot", "pmemd.runner", "pmemd.observe", "pmemd.execute", "pmemd.engine",
                   "pmemd.journal", "pmemd.daemon", "pmemd.watch", "pmemd.notify", "pmemd.cli", "pmemd.sources",
                   "pmemd.effects", "pmemd.execute_boot"}


def violations(src: str, name: str = "<src>") -> list[str]:
    """Imports of OS-touching modules and calls of OS-reaching builtins in one module's source."""
    tree = ast.parse(src)
    names: set[str] = set()
    calls: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                base = "pmemd" + ("." + base if base else "")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if base == "pmemd")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("open", "__import__", "exec", "eval", "input", "print")):
            calls.append(f"{name}:{node.lineno}: {node.func.id}()")
    bad = sorted(n for n in names if n.split(".")[0] in FORBIDDEN_STDLIB or n in FORBIDDEN_PMEMD
                 or any(n.startswith(f + ".") for f in FORBIDDEN_PMEMD))
    return [f"{name}: import {n}" for n in bad] + calls


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_nothing_that_touches_the_os(module: str) -> None:
    path = REPO / "pmemd" / f"{module.replace('.', '/')}.py"
    assert violations(path.read_text(), path.name) == []


@pytest.mark.parametrize("module", CORE)
def test_core_module_pulls_in_no_shell_module_transitively(module: str) -> None:
    code = (f"import sys, json; import pmemd.{module}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('pmemd.'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=60)
    loaded = set(json.loads(r.stdout))
    assert not loaded & FORBIDDEN_PMEMD, f"pmemd.{module} loads {sorted(loaded & FORBIDDEN_PMEMD)}"
    assert loaded <= {f"pmemd.{m}" for m in CORE} | {"pmemd.bootloader"}


def test_the_checker_catches_violations() -> None:
    src = ("import os.path\nimport subprocess\nfrom pathlib import Path\nfrom pmemd.runner import Runner\n"
           "from . import fsroot\nfrom .observe import observe\nimport pmemd.execute\nopen('/etc/x')\n"
           "import re\nfrom pmemd.units import render\n")
    assert violations(src, "x.py") == [
        "x.py: import os.path", "x.py: import pathlib", "x.py: import pmemd.execute", "x.py: import pmemd.fsroot",
        "x.py: import pmemd.observe", "x.py: import pmemd.runner", "x.py: import subprocess", "x.py:8: open()"]


def _importtime_modules(stderr: str) -> set[str]:
    mods = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            mods.add(line.rsplit("|", 1)[1].strip())
    return mods


def test_cli_help_does_not_import_watchdog_or_systemd() -> None:
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "pmemd", "plan", "--help"], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=60, check=False)
    assert r.returncode == 0 and "usage: pmemd plan" in r.stdout
    mods = _importtime_modules(r.stderr)
    assert "pmemd.cli" in mods  # the importtime output was really parsed
    assert not {m for m in mods if m.split(".")[0] in ("watchdog", "systemd")}
    assert not {m for m in mods if m in ("pmemd.daemon", "pmemd.watch", "pmemd.execute")}


CLI_NEVER_LOADS = {"pmemd.daemon", "pmemd.watch", "pmemd.execute", "pmemd.execute_boot", "pmemd.effects",
                   "pmemd.journal"}


IN_SYNC = "version: 1\nnamespaces: {}\n"


@pytest.mark.parametrize("argv, config", [
    (["plan"], None), (["plan", "--json"], None), (["status"], None), (["validate"], None), (["config"], None),
    (["schema"], None),
    (["apply"], IN_SYNC),  # a host in sync: nothing to do, nothing to record, nothing journalled
])
def test_cli_run_loads_no_daemon_or_executor(tmp_path: Path, argv: list[str], config: str | None) -> None:
    t = copy_fixture("debian13-qemu-plain", tmp_path / "host")
    t.config(config or (REPO / "examples/pmem.yaml").read_text())
    code = ("import sys, json\nfrom pmemd.cli import main\n"
            f"rc = main(['--root', {str(t.path)!r}, *{argv!r}])\n"
            "mods = sorted(m for m in sys.modules if m.split('.')[0] in ('watchdog', 'systemd')"
            f" or m in {sorted(CLI_NEVER_LOADS)!r})\n"
            "print('MODULES=' + json.dumps(mods)); print('RC=' + str(rc))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=60, check=False)
    lines = r.stdout.splitlines()
    assert lines[-1] in ("RC=0", "RC=2"), r.stdout + r.stderr
    # apply holds a journal for what it might do (its module is small: no systemd binding until
    # an entry is written)
    assert json.loads(lines[-2].removeprefix("MODULES=")) == (["pmemd.journal"] if argv == ["apply"] else [])
