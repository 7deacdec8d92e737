"""Tier 3: foreign-data refusal proven on real signatures written by the real tools.

Each case writes a signature onto the loop device behind the tree's /dev/pmem0 (mkfs.ext4,
mkswap, sfdisk, pvcreate, mkfs.xfs) before pmemd runs. pmemd must refuse to format it (exit 1,
a message naming the device, what it found and the key ``on_foreign_data: wipe``) and leave every
byte as it was; with ``on_foreign_data: wipe`` it wipes and formats.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import rootfixtures as rf
from rootfixtures import leak_check  # noqa: F401  (session-wide check for leaked loops/mounts)

pytestmark = rf.pytestmark_root


def _mkfs_ext4(dev: str) -> None:
    rf.sh("mkfs.ext4", "-q", "-F", "-L", "someones", dev)


def _mkswap(dev: str) -> None:
    rf.sh("mkswap", "-L", "swap0", dev)


def _sfdisk(label: str) -> Callable[[str], None]:
    def write(dev: str) -> None:
        proc = subprocess.run(["sfdisk", "-q", "--no-reread", dev], input=f"label: {label}\n,32M,L\n",
                                 capture_output=True, text=True, check=False, timeout=60)
        assert proc.returncode == 0, proc.stderr
    return write


def _backup_gpt_only(dev: str) -> None:
    """A stale GPT whose primary header is gone (e.g. zeroed start): only the backup at the end."""
    _sfdisk("gpt")(dev)
    with open(dev, "r+b") as f:
        f.write(b"\0" * rf.MIB)


def _pvcreate(dev: str) -> None:
    rf.sh("pvcreate", "-y", "-ff", dev)


def _mkfs_xfs(dev: str) -> None:
    rf.sh("mkfs.xfs", "-q", "-f", "-L", "theirs", dev)


@dataclass(frozen=True)
class Case:
    id: str
    write: Callable[[str], None]
    found: str  # what pmemd must name
    tool: str
    size: int = rf.IMAGE_SIZE


CASES = [
    Case("ext4", _mkfs_ext4, "ext4 (LABEL=someones, UUID=", "mkfs.ext4"),
    Case("swap", _mkswap, "swap (LABEL=swap0, UUID=", "mkswap"),
    Case("dos-partition-table", _sfdisk("dos"), "dos", "sfdisk"),
    Case("gpt-partition-table", _sfdisk("gpt"), "gpt", "sfdisk"),
    Case("gpt-backup-header-only", _backup_gpt_only, "gpt", "sfdisk"),
    Case("lvm-pv", _pvcreate, "LVM2_member (UUID=", "pvcreate"),
    Case("xfs", _mkfs_xfs, "xfs (LABEL=theirs, UUID=", "mkfs.xfs", rf.XFS_IMAGE_SIZE),
]


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        hint = "apt-get install -y --no-install-recommends lvm2" if tool == "pvcreate" else f"install {tool}"
        pytest.skip(f"{tool} is not installed ({hint})")


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def foreign(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[rf.HostTree, Case]]:
    case: Case = request.param
    _require(case.tool)
    with rf.host_tree(tmp_path, size=case.size) as t:
        case.write(t.loop.dev)
        yield t, case


def test_foreign_signature_is_refused_and_left_intact(foreign: tuple[rf.HostTree, Case]) -> None:
    host, case = foreign
    host.write_config(fs="ext4")
    before = host.digest()
    sig_before = host.blkid()

    plan = rf.pmemd(host, "plan")
    assert plan.rc == 1, plan.text
    run = rf.pmemd(host, "apply", "--json")

    assert run.rc == 1, run.text
    assert run.actions() == [], "nothing of the namespace's chain may run"
    [issue] = [i for i in run.issues() if i["severity"] == "error"]
    msg = issue["message"]
    assert issue["key"] == "namespaces.fast.on_foreign_data"
    assert msg.startswith("/dev/pmem0 holds data pmemd did not write ("), msg
    assert case.found in msg, msg
    assert "on_foreign_data: wipe" in msg
    assert host.digest() == before, "pmemd changed bytes on a device with foreign data"
    assert host.blkid() == sig_before
    assert host.owned_fs() is None
    assert not host.p("/pmem").exists()
    # the human output says the same
    apply_text = rf.pmemd(host, "apply")
    assert apply_text.rc == 1
    assert "error: namespaces.fast.on_foreign_data: /dev/pmem0 holds data pmemd did not write" in apply_text.stderr


def test_on_foreign_data_wipe_formats_it(foreign: tuple[rf.HostTree, Case]) -> None:
    host, _ = foreign
    host.write_config(fs="ext4", mount=None, on_foreign_data="wipe")

    plan = rf.pmemd(host, "plan", "--json")
    assert plan.rc == 2
    [mkfs] = plan.json["actions"]
    assert mkfs["kind"] == "mkfs" and mkfs["reason"] == "wipe" and mkfs["label"] == "destructive"
    assert mkfs["summary"].startswith("fast: WIPE /dev/pmem0 (")
    run = rf.pmemd(host, "apply", "--json")

    assert run.rc == 0, run.text
    assert [s for s in run.side_effects() if s.startswith("run:")] == [
        f"run: wipefs -a {host.dev}", f"run: mkfs.ext4 -q -b 4096 -L fast -U UUID {host.dev}"]
    sig = host.blkid()
    assert sig["TYPE"] == "ext4" and sig["LABEL"] == "fast"
    assert host.owned_fs() == {"uuid": sig["UUID"], "type": "ext4", "label": "fast", "complete": True}
    left = json.loads(rf.sh("wipefs", "--no-act", "--json", host.loop.dev).stdout or '{"signatures": []}')
    assert [s["type"] for s in left["signatures"]] == ["ext4"], "the old signatures must all be gone"
    # and from now on it is pmemd's own: nothing more to do
    again = rf.pmemd(host, "apply")
    assert again.rc == 0 and again.stdout.strip() == "in sync: nothing to do"


# --- filesystems that look like pmemd's but are not --------------------------------------------


@pytest.fixture
def host(tmp_path: Path) -> Iterator[rf.HostTree]:
    with rf.host_tree(tmp_path, size=rf.XFS_IMAGE_SIZE) as t:
        yield t


def test_ext4_with_another_uuid_than_the_recorded_one_is_foreign(host: rf.HostTree) -> None:
    host.write_config(fs="ext4", mount=None)
    assert rf.pmemd(host, "apply").rc == 0
    ours = host.owned_fs()
    assert ours is not None
    rf.sh("mkfs.ext4", "-q", "-F", "-L", "fast", host.loop.dev)  # same type and label, new UUID
    theirs = host.blkid()["UUID"]
    assert theirs != ours["uuid"]
    before = host.digest()

    run = rf.pmemd(host, "apply", "--json")

    assert run.rc == 1
    assert run.actions() == []
    msg = " ".join(i["message"] for i in run.issues())
    assert f"UUID={theirs}" in msg and "on_foreign_data: wipe" in msg
    assert host.digest() == before
    assert host.owned_fs() == ours


@rf.needs("mkfs.xfs")
def test_changed_filesystem_type_is_not_reformatted_silently(host: rf.HostTree) -> None:
    """pmemd made xfs; the config now says ext4. Formatting would destroy the data: refuse."""
    host.write_config(fs="xfs", label="fast", mount=None)
    assert rf.pmemd(host, "apply").rc == 0
    before = host.digest()
    host.write_config(fs="ext4", label="fast", mount=None)

    run = rf.pmemd(host, "apply", "--json")

    assert run.rc == 1
    assert run.actions() == []
    msg = " ".join(i["message"] for i in run.issues())
    assert "/dev/pmem0" in msg and "xfs" in msg and "on_foreign_data: wipe" in msg
    assert host.digest() == before
    assert host.blkid()["TYPE"] == "xfs"


@rf.needs("mkswap")
def test_signature_appearing_after_the_plan_stops_mkfs(tmp_path: Path) -> None:
    """The executor probes again right before mkfs: the plan may be seconds old."""
    from pmemd.engine import Target, apply_pass, assess
    from pmemd.journal import Journal
    from pmemd.runner import SubprocessRunner

    with rf.host_tree(tmp_path) as t:
        t.write_config(fs="ext4")
        target, runner = Target.make(str(t.path)), SubprocessRunner()
        a = assess(target, runner)
        assert a.plan.actions[0].kind.value == "mkfs"
        rf.sh("mkswap", "-L", "late", t.loop.dev)
        before = t.digest()

        r = apply_pass(target, runner, Journal(root=None, sender=None), dry_run=False, assessment=a)

        assert [(o.action.kind.value, o.result) for o in r.outcomes] == [
            ("mkfs", "failed"), ("mkdir", "skipped"), ("mount", "skipped"), ("verify-dax", "skipped")]
        assert r.outcomes[0].message.startswith("/dev/pmem0 is no longer blank (swap (LABEL=late")
        assert t.digest() == before
        assert t.owned_fs() is None
