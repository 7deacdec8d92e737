"""Tier 4: the Ansible collection (ansible/ansible_collections/pmemd/pmem) rolls pmemd out over two
Debian 13 guests over SSH, one host at a time.

ansible-core from PyPI (its own venv in the e2e cache) on this machine drives two guests of the
``ssh-bios`` image (BIOS GRUB + openssh-server), each reachable only through QEMU user
networking with a host forward bound to 127.0.0.1 (``restrict=on``: the guests reach nothing
else) and a key made for this run (tests/e2e/jobs/ansible-guest.sh sets them up). In order:

1. the rollout (``pmemd.pmem.rollout``, ``serial: 1``): each guest in turn gets the .deb, the
   config, ``pmemd apply``, a reboot (a trial boot, verified and committed) and comes back with
   its namespace mounted with DAX before the next guest starts;
2. the same run again: ``changed=0`` on every host;
3. check mode with a changed config: ``changed`` reported, nothing changed on the guests (the
   sha256 of their config and boot config files before and after);
4. a rollout whose first guest's config is refused: it fails, and the second guest is not touched.

Run: sudo python3 -m pytest -m e2e tests/e2e/test_ansible.py -rs -s   (about 10-15 min under TCG)
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import build
import guest
from evidence import REPO
from pool import Pool, Session, Work

pytestmark = pytest.mark.e2e

_REASON = guest.skip_reason("ssh-grub")
if _REASON:
    pytest.skip(f"e2e guests unavailable: {_REASON}", allow_module_level=True)

HERE = Path(__file__).resolve().parent
COLLECTIONS = REPO / "ansible"
COLLECTION = COLLECTIONS / "ansible_collections/pmemd/pmem"
ANSIBLE_CORE, ANSIBLE_LINT = "ansible-core==2.19.14", "ansible-lint==26.10.1"
HOSTS = ("guest1", "guest2")
FAST = {"size": "1G", "offset": "5G", "filesystem": {"type": "ext4", "label": "fast"}, "mount": {"path": "/pmem/fast"}}
BULK = {"size": "512M", "offset": "4G", "filesystem": {"type": "xfs", "label": "bulk"}, "mount": {"path": "/pmem/bulk"}}
WATCHED = "/etc/pmem.yaml /boot/grub/grub.cfg /boot/grub/grubenv /etc/default/grub.d/99-pmemd.cfg"


def ansible_venv() -> Path:
    """ansible-core and ansible-lint from PyPI, in a venv of their own in the e2e cache."""
    venv = build.cache_dir() / "ansible-venv"
    marker = venv / f".{ANSIBLE_CORE}+{ANSIBLE_LINT}"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        subprocess.run([str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check", ANSIBLE_CORE,
                        ANSIBLE_LINT], check=True, timeout=900)
        marker.touch()
    return venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Fleet:
    """Two guests reachable over SSH, and ansible-playbook to drive them."""

    top: Path
    ports: dict[str, int]
    key: Path
    venv: Path
    deb: Path
    runs: dict[str, guest.RunResult | BaseException] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def ssh(self, host: str, command: str, *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ssh", "-p", str(self.ports[host]), "-i", str(self.key), "-o", "BatchMode=yes",
                               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                               "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "root@127.0.0.1", command],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def wait_ssh(self, host: str, timeout: float = 900) -> None:
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            if self.ssh(host, "true", timeout=30).returncode == 0:
                return
            if self.runs.get(host) is not None or guest.stopping():
                raise AssertionError(f"{host} stopped before SSH came up: {self.runs[host]}")
            time.sleep(5)
        raise AssertionError(f"{host}: no SSH after {timeout:.0f} s")

    def inventory(self, config: dict[str, Any], host_vars: dict[str, dict[str, Any]] | None) -> Path:
        """A YAML inventory: the role's variables as the group's, ``host_vars`` over them per host
        (extra vars would override every host)."""
        hosts = {h: {"ansible_host": "127.0.0.1", "ansible_port": self.ports[h], **(host_vars or {}).get(h, {})}
                 for h in HOSTS}
        group = {"ansible_user": "root", "ansible_ssh_private_key_file": str(self.key),
                 "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
                 "ansible_python_interpreter": "/usr/bin/python3", "emulated_pmem_deb": str(self.deb),
                 "emulated_pmem_reboot": True, "emulated_pmem_ready_timeout": 900, "emulated_pmem_ready_delay": 5,
                 "emulated_pmem_config": config}
        path = self.top / f"inventory-{len(self.log)}.yml"
        path.write_text(json.dumps({"pmem": {"hosts": hosts, "vars": group}}, indent=1))  # JSON is YAML
        return path

    def playbook(self, config: dict[str, Any], *extra: str, host_vars: dict[str, dict[str, Any]] | None = None
                 ) -> tuple[int, str, float]:
        """ansible-playbook pmemd.pmem.rollout with this config; (exit code, output, seconds)."""
        env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS), "ANSIBLE_HOME": str(self.top / "home"),
               "ANSIBLE_LOCAL_TEMP": str(self.top / "tmp"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
               "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_CONFIG": str(self.top / "ansible.cfg"),
               "ANSIBLE_HOST_KEY_CHECKING": "0", "ANSIBLE_PIPELINING": "1"}
        (self.top / "ansible.cfg").write_text("[defaults]\n")
        t0 = time.monotonic()
        r = subprocess.run([str(self.venv / "bin/ansible-playbook"), "-i", str(self.inventory(config, host_vars)),
                            *extra, "pmemd.pmem.rollout"],
                           capture_output=True, text=True, env=env, timeout=3600, check=False)
        seconds = time.monotonic() - t0
        self.log.append(f"$ ansible-playbook {' '.join(extra)} pmemd.pmem.rollout  # exit {r.returncode}, "
                        f"{seconds:.0f} s\n{r.stdout}{r.stderr}")
        return r.returncode, r.stdout + r.stderr, seconds

    def sha(self, host: str) -> str:
        return self.ssh(host, f"sha256sum {WATCHED} 2>&1").stdout


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP: host -> {ok, changed, failed, ...}."""
    out = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.M):
        out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out


@contextlib.contextmanager
def fleet_up(top: Path, deb: Path) -> Iterator[Fleet]:
    """Both guests booted and reachable over SSH; powered off (and their runs ended) on leaving."""
    key = top / "id_e2e"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pmemd-e2e", "-f", str(key)], check=True)
    f = Fleet(top, {h: free_port() for h in HOSTS}, key, ansible_venv(), deb)
    job = (HERE / "jobs/ansible-guest.sh").read_text()
    # One vCPU each: serial: 1 keeps one guest busy while the other waits, and the pool runs
    # another module's guest beside the pair.
    jobs = {h: {"script": job, "files": [HERE / "jobs/lib.sh", key.with_suffix(".pub")], "mode": "ssh-grub",
                "max_boots": 4, "out_dir": top / h, "boot_timeout": 3600,  # a boot lasts while Ansible works
                "qemu_args": ["-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{f.ports[h]}-:22",
                              "-device", "virtio-net-pci,netdev=n0"]} for h in HOSTS}
    thread = threading.Thread(target=lambda: f.runs.update(guest.run_jobs(jobs)), daemon=True)
    thread.start()
    try:
        for h in HOSTS:
            f.wait_ssh(h)
        yield f
    finally:
        for h in HOSTS:
            f.ssh(h, "touch /var/lib/e2e/finished", timeout=60)
        thread.join(timeout=600)
        with (top / "ansible.log").open("w") as fh:
            fh.write("\n\n".join(f.log))


@dataclass
class Story:
    """What the four runs showed, in order."""

    rollout: tuple[int, str, float]
    noop: tuple[int, str, float]
    check: tuple[int, str, float]
    refused: tuple[int, str, float]
    sha: dict[str, tuple[str, str]]  # host -> (before, after) of a step that must not change it
    status: dict[str, dict[str, Any]]
    cmdline: dict[str, str]
    guest2_untouched: tuple[str, str]


def tell_story(top: Path, deb: Path) -> Story:
    """The four playbook runs over the two guests."""
    with fleet_up(top, deb) as fleet:
        one = {"version": 1, "namespaces": {"fast": FAST}}
        rollout = fleet.playbook(one)
        status = {h: json.loads(fleet.ssh(h, "pmemd status --json").stdout or "{}") for h in HOSTS}
        cmdline = {h: fleet.ssh(h, "cat /proc/cmdline").stdout.strip() for h in HOSTS}
        noop = fleet.playbook(one)
        two = {"version": 1, "namespaces": {"fast": FAST, "bulk": BULK}}
        before = {h: fleet.sha(h) for h in HOSTS}
        check = fleet.playbook(two, "--check")
        sha = {h: (before[h], fleet.sha(h)) for h in HOSTS}
        bad = {"version": 1, "namespaces": {"fast": FAST, "bad": {"size": "1G", "offset": "5000M"}}}
        g2 = fleet.sha("guest2")
        refused = fleet.playbook(two, host_vars={"guest1": {"emulated_pmem_config": bad}})
        return Story(rollout, noop, check, refused, sha, status, cmdline, (g2, fleet.sha("guest2")))


def guest_work(session: Session) -> list[Work]:
    """The whole story in one pool run: two guests, about 15-20 min under TCG."""
    return [Work("ansible", "fleet", 20, functools.partial(tell_story, session.tmp.mktemp("e2e-ansible"),
                                                           session.deb()))]


@pytest.fixture(scope="module")
def story(guest_pool: Pool) -> Story:
    res = guest_pool.results("ansible")["fleet"]
    if isinstance(res, BaseException):
        raise res
    assert isinstance(res, Story)
    return res


def test_rollout_one_host_at_a_time_each_back_with_dax(story: Story) -> None:
    rc, out, _ = story.rollout
    assert rc == 0, out[-6000:]
    counts = recap(out)
    assert set(counts) == set(HOSTS) and all(c["failed"] == 0 and c["changed"] > 0 for c in counts.values()), counts
    # serial: 1: guest1 was rebooted and waited for before guest2 was touched at all
    g1_reboot = out.index("changed: [guest1]", out.index("Reboot into the new kernel arguments"))
    g2_first = out.index("[guest2]")
    assert g1_reboot < g2_first, out[-6000:]
    assert out.count("TASK [pmemd.pmem.emulated_pmem : Reboot into the new kernel arguments]") == 2
    for h in HOSTS:
        st = story.status[h]
        assert st["summary"] == "in sync: 1/1 namespaces mounted with DAX", st
        assert st["trial"]["state"] == "committed", st["trial"]  # the rollout's reboot was a trial boot
        assert "memmap=1G!5G" in story.cmdline[h].split() and "pmemd.trial=1" in story.cmdline[h].split()


def test_second_run_changes_nothing(story: Story) -> None:
    rc, out, _ = story.noop
    assert rc == 0, out[-6000:]
    counts = recap(out)
    assert set(counts) == set(HOSTS) and all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), counts


def test_check_mode_reports_the_change_and_changes_nothing(story: Story) -> None:
    rc, out, _ = story.check
    assert rc == 0, out[-6000:]
    counts = recap(out)
    assert all(c["changed"] > 0 for c in counts.values()), counts
    assert "Plan the candidate configuration with pmemd" in out
    for h, (before, after) in story.sha.items():
        assert before == after and "/etc/pmem.yaml" in before, (h, before, after)


def test_a_refused_config_on_the_first_host_stops_the_rollout_before_the_second(story: Story) -> None:
    rc, out, _ = story.refused
    assert rc != 0
    counts = recap(out)
    assert counts["guest1"]["failed"] == 1, counts
    assert "guest2" not in counts, counts  # never reached
    assert "is not a multiple of 128 MiB" in out, out[-4000:]
    assert story.guest2_untouched[0] == story.guest2_untouched[1]


def test_print_timings(story: Story, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [f"== Ansible rollout of pmemd over {len(HOSTS)} guests (TCG, serial: 1):",
             f"   rollout (install, configure, apply, reboot, wait for DAX): {story.rollout[2]:.0f} s",
             f"   second run, converged (changed=0): {story.noop[2]:.0f} s",
             f"   check mode with a changed config: {story.check[2]:.0f} s",
             f"   refused config on guest1, rollout stopped: {story.refused[2]:.0f} s"]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert story.rollout[2] > 0


def test_ansible_lint_is_clean_on_the_collection(tmp_path: Path) -> None:
    venv = ansible_venv()
    env = {**os.environ, "ANSIBLE_HOME": str(tmp_path / "home"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
           "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS), "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    r = subprocess.run([str(venv / "bin/ansible-lint"), "--offline", "--profile", "production", "--nocolor"],
                       cwd=COLLECTION, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
