"""Checks of tools/capture-host-tree and the captured fixtures that need no guest.

* every tests/fixtures/hosts/debian13-* tree still matches the sha256 sums the
  guest computed at capture time (nobody hand-edited it);
* running the capture tool with --root on a captured tree reproduces the tree
  (same files, same bytes, same relative symlinks), which exercises the tool's
  nd-bus/symlink logic without a VM.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "capture-host-tree"
FIXTURES = sorted(p for p in (REPO / "tests" / "fixtures" / "hosts").glob("debian13-*")
                  if (p / "SHA256SUMS").exists())
NOT_TREE = {"README.md", "SHA256SUMS", "CAPTURE.txt"}


def _tree(root: Path) -> dict[str, tuple[str, str]]:
    """rel path -> ("file", sha256) | ("link", target); directories are implied."""
    out: dict[str, tuple[str, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if rel in NOT_TREE:
                continue
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_file():
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.mark.skipif(not FIXTURES, reason="no captured debian13-* fixtures")
@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_fixture_is_verbatim(fixture: Path) -> None:
    for line in (fixture / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split(None, 1)
        assert hashlib.sha256((fixture / rel).read_bytes()).hexdigest() == digest, rel


@pytest.mark.skipif(not FIXTURES, reason="no captured debian13-* fixtures")
@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_capture_of_a_capture_is_identical(fixture: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    subprocess.run([sys.executable, str(TOOL), "--root", str(fixture), str(out)], check=True,
                   capture_output=True)
    assert _tree(out) == _tree(fixture)
    # nd bus symlinks are relative, as in sysfs
    nd = out / "sys/bus/nd/devices"
    for link in nd.iterdir() if nd.is_dir() else ():
        assert not os.readlink(link).startswith("/")
        assert link.resolve().is_dir()


def test_refuses_dangerous_outdirs(tmp_path: Path) -> None:
    for bad in ("/", "/proc/x", "/sys/x"):
        r = subprocess.run([sys.executable, str(TOOL), bad], capture_output=True, text=True,
                           check=False)
        assert r.returncode == 2, (bad, r.stderr)
    nonempty = tmp_path / "full"
    nonempty.mkdir()
    (nonempty / "f").write_text("x")
    r = subprocess.run([sys.executable, str(TOOL), str(nonempty)], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 2
