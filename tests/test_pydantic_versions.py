"""pmemd behaves the same on pydantic 1.10 (Debian 12, Ubuntu 22.04/24.04) and 2.x (Debian 13).

The other interpreter is $PMEMD_PYDANTIC1_PYTHON (tools/test makes it: .venv-pd1 with
pydantic 1.10.4, Debian 12's version); this test runs pmemd's schema and a set of broken configs
through both and compares the output byte for byte.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OTHER = os.environ.get("PMEMD_PYDANTIC1_PYTHON") or str(REPO / ".venv-pd1/bin/python")

BROKEN = {
    "unknown-key": "version: 1\nsetings: {}\n",
    "missing-size": "version: 1\nnamespaces:\n  fast: {offset: 5G}\n",
    "bad-name": "version: 1\nnamespaces:\n  Fast: {size: 1G}\n",
    "enum": "version: 1\nsettings: {reboot: sometimes, bootloader: lilo}\n",
    "types": ("version: 1\nsettings: {reboot_window: 5}\nnamespaces:\n  a:\n    size: 1G\n"
              "    filesystem: {type: ext4, label: 7, options: [1]}\n    mount: 5\n"),
    "not-a-map": "version: 1\nnamespaces: [1, 2]\n",
    "version": "version: 2\n",
    "version-bool": "version: true\n",
    "size": "version: 1\nnamespaces:\n  a: {size: 4GB}\n  b: {size: 0}\n  c: {size: 010G}\n",
    "combination": ("version: 1\nnamespaces:\n  a: {size: 256M, filesystem: {type: xfs}}\n"
                    "  b: {size: 1G, mode: devdax, filesystem: {type: ext4}}\n  c: {size: 1G, mount: {path: /x}}\n"),
    "mount": ("version: 1\nnamespaces:\n"
              "  a: {size: 1G, filesystem: {type: ext4}, mount: {path: pmem, options: [dax]}}\n"),
    "duration": "version: 1\nsettings: {resync_interval: -5}\n",
}


def _pydantic_major(python: str) -> int:
    out = subprocess.run([python, "-c", "import pydantic; print(pydantic.VERSION)"], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split(".")[0])


def _pmemd(python: str, *args: str) -> tuple[int, str, str]:
    res = subprocess.run([python, "-m", "pmemd", *args], capture_output=True, text=True, check=False, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    return res.returncode, res.stdout, res.stderr


@pytest.fixture(scope="module")
def pythons() -> tuple[str, str]:
    if not Path(OTHER).exists():
        pytest.skip(f"no pydantic 1.10 interpreter at {OTHER} (tools/test makes .venv-pd1)")
    versions = {_pydantic_major(sys.executable), _pydantic_major(OTHER)}
    assert versions == {1, 2}, f"need one pydantic 1 and one pydantic 2 interpreter, got majors {versions}"
    return sys.executable, OTHER


def test_schema_is_identical(pythons: tuple[str, str]) -> None:
    a, b = (_pmemd(p, "schema") for p in pythons)
    assert a[0] == b[0] == 0, (a[2], b[2])
    assert a[1] == b[1]
    assert '"definitions"' in a[1]


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_errors_are_identical(pythons: tuple[str, str], case: str, tmp_path: Path) -> None:
    cfg = tmp_path / "pmem.yaml"
    cfg.write_text(BROKEN[case])
    cfg.chmod(0o644)
    a, b = (_pmemd(p, "--root", str(tmp_path), "--config", str(cfg), "config") for p in pythons)
    assert a[0] == b[0] == 1, (case, a, b)
    assert a[2] == b[2], case
    lines = a[2].splitlines()
    assert lines and all(ln.startswith(f"{cfg}:") for ln in lines), lines
    assert "Traceback" not in a[2]
