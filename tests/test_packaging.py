"""Packaging: the .deb, the SRPM, the journal catalog, man pages, completion, the drop-in example.

The .deb is built for real with packaging/build-deb (dpkg-buildpackage + dh-python + lintian)
and inspected with dpkg-deb; nothing is installed. Builds are skipped, with the reason, where the
tools are missing (apt-get install --no-install-recommends debhelper dh-python
pybuild-plugin-pyproject python3-all python3-setuptools lintian rpm rpmlint).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PACKAGING = REPO / "packaging"
DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# action -> MESSAGE_ID, as documented for pmemd's journal entries (pmemd/journal.py).
CATALOG_IDS = {
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


def _missing(*tools: str) -> list[str]:
    return [t for t in tools if shutil.which(t, path=DEBIAN_PATH) is None]


def _run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd, env=env,
                          timeout=timeout)


def _skip_without_deb_tools() -> None:
    missing = _missing("dpkg-buildpackage", "dh", "dh_python3", "dpkg-deb")
    if not Path("/usr/share/dh-python/dhpython/build/plugin_pyproject.py").exists():
        missing.append("pybuild-plugin-pyproject")
    if missing:
        pytest.skip(f"Debian build tools missing ({', '.join(missing)}): apt-get install "
                    "--no-install-recommends debhelper dh-python pybuild-plugin-pyproject "
                    "python3-all python3-setuptools lintian")


# --- the .deb --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DebBuild:
    deb: Path
    outdir: Path
    log: str
    seconds: float
    files: dict[str, str]  # path in the package ("/etc/pmem.yaml") -> type char from dpkg-deb -c
    root: Path  # dpkg-deb -x of the package
    control: Path  # dpkg-deb -e of the package


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> DebBuild:
    _skip_without_deb_tools()
    out = tmp_path_factory.mktemp("deb")
    env = dict(os.environ, PMEMD_SCHEMA_PYTHON=sys.executable)
    start = time.monotonic()
    res = _run(["bash", str(PACKAGING / "build-deb"), str(out)], env=env, timeout=900)
    seconds = time.monotonic() - start
    log = res.stdout + res.stderr
    assert res.returncode == 0, f"packaging/build-deb failed (exit {res.returncode}):\n{log[-6000:]}"
    print(f"\npackaging/build-deb took {seconds:.1f} s")
    debs = sorted(out.glob("pmemd_*_all.deb"))
    assert len(debs) == 1, f"expected one pmemd_*_all.deb in {out}: {sorted(os.listdir(out))}"
    listing = _run(["dpkg-deb", "-c", str(debs[0])])
    assert listing.returncode == 0, listing.stderr
    files: dict[str, str] = {}
    for line in listing.stdout.splitlines():
        mode, *_rest = line.split()
        name = line.split(None, 5)[5].split(" -> ")[0]
        files["/" + name.removeprefix("./").rstrip("/")] = mode[0]
    root = out / "root"
    control = out / "control"
    assert _run(["dpkg-deb", "-x", str(debs[0]), str(root)]).returncode == 0
    assert _run(["dpkg-deb", "-e", str(debs[0]), str(control)]).returncode == 0
    return DebBuild(debs[0], out, log, seconds, files, root, control)


def test_deb_ships_the_units_in_usr_lib(deb: DebBuild) -> None:
    # A wrong symlink target in packaging/debian makes dh_installsystemd ship no unit, silently.
    for unit in ("pmemd.service", "pmem.target"):
        path = f"/usr/lib/systemd/system/{unit}"
        assert deb.files.get(path) == "-", f"{path} missing or not a regular file: {deb.files.get(path)}"
        assert (deb.root / path.lstrip("/")).read_text() == (REPO / unit).read_text()
    assert not any(p.startswith("/lib/") for p in deb.files), "units must not land in /lib"


def test_deb_postinst_enables_and_starts_the_service(deb: DebBuild) -> None:
    postinst = (deb.control / "postinst").read_text()
    assert "deb-systemd-helper enable 'pmemd.service'" in postinst
    assert "deb-systemd-invoke $_dh_action 'pmemd.service'" in postinst
    prerm = (deb.control / "prerm").read_text()
    assert "deb-systemd-invoke stop 'pmemd.service'" in prerm
    # removal undoes what pmemd set up, after the service is stopped, and not on upgrade
    stop, reset = prerm.index("deb-systemd-invoke stop 'pmemd.service'"), prerm.index("pmemd reset")
    assert stop < reset and 'if [ "$1" = remove ]' in prerm[:reset]
    postrm = (deb.control / "postrm").read_text()
    assert 'if [ "$1" = purge ]; then\n    rm -rf /var/lib/pmemd' in postrm
    # pmem.target has no [Install] section and is pulled in by the services that need it: the
    # maintainer scripts neither enable, start nor stop it (stopping it on upgrade would leave
    # it inactive afterwards).
    for script in ("preinst", "postinst", "prerm"):
        path = deb.control / script
        assert not path.exists() or "pmem.target" not in path.read_text(), script


def test_deb_config_is_a_conffile_declaring_no_namespaces(deb: DebBuild) -> None:
    conffiles = (deb.control / "conffiles").read_text().split()
    assert "/etc/pmem.yaml" in conffiles
    data = yaml.safe_load((deb.root / "etc/pmem.yaml").read_text())
    assert data["version"] == 1
    assert data["namespaces"] == {}
    # pmemd itself reads it the same way: no namespaces, every setting at its default.
    res = _run([sys.executable, "-m", "pmemd", "--root", str(deb.root), "config", "--json"], cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["config"]["namespaces"] == {}


def test_deb_ships_the_kernel_install_plugin(deb: DebBuild) -> None:
    path = "/usr/lib/kernel/install.d/91-pmemd.install"
    assert deb.files.get(path) == "-", path
    shipped = deb.root / path.lstrip("/")
    assert os.access(shipped, os.X_OK)
    assert shipped.read_text() == (PACKAGING / "kernel-install/91-pmemd.install").read_text()


def test_deb_directories(deb: DebBuild) -> None:
    for d in ("/usr/lib/pmem.d", "/etc/pmem.d", "/usr/share/pmemd"):
        assert deb.files.get(d) == "d", f"{d} is not a directory in the package"
    # Nothing else in the drop-in directories: the package itself declares no namespaces.
    assert not [p for p in deb.files if p.startswith(("/usr/lib/pmem.d/", "/etc/pmem.d/"))]


def test_deb_man_pages_completion_catalog(deb: DebBuild) -> None:
    for page, src in (("/usr/share/man/man8/pmemd.8.gz", "man/pmemd.8"),
                      ("/usr/share/man/man5/pmem.yaml.5.gz", "man/pmem.yaml.5")):
        assert deb.files.get(page) == "-", page
        assert gzip.decompress((deb.root / page.lstrip("/")).read_bytes()).decode() == \
            (PACKAGING / src).read_text()
    completion = deb.root / "usr/share/bash-completion/completions/pmemd"
    assert completion.read_text() == (PACKAGING / "completion/pmemd.bash").read_text()
    catalog = deb.root / "usr/lib/systemd/catalog/pmemd.catalog"
    assert catalog.read_text() == (PACKAGING / "pmemd.catalog").read_text()


def test_deb_schema_is_generated_from_the_built_package(deb: DebBuild) -> None:
    schema = json.loads((deb.root / "usr/share/pmemd/pmem.yaml.schema.json").read_text())
    assert "namespaces" in schema["properties"]
    assert "settings" in schema["properties"]
    from pmemd.schema import json_schema

    assert schema == json.loads(json.dumps(json_schema())), "schema differs from `pmemd schema`"


def test_deb_program_docs_and_examples(deb: DebBuild) -> None:
    assert deb.files.get("/usr/bin/pmemd") == "-"
    assert deb.files.get("/usr/lib/python3/dist-packages/pmemd/cli.py") == "-"
    assert deb.files.get("/usr/lib/python3/dist-packages/pmemd/bootloader/__init__.py") == "-"
    for example in ("pmem.yaml", "pmem.d/50-pmdk-tests.yaml"):
        assert f"/usr/share/doc/pmemd/examples/{example}" in deb.files
    assert "/usr/share/doc/pmemd/copyright" in deb.files


def test_deb_depends_on_pydantic_1_10_or_later_and_systemd(deb: DebBuild) -> None:
    res = _run(["dpkg-deb", "-f", str(deb.deb), "Depends", "Recommends"])
    fields = dict(line.split(": ", 1) for line in res.stdout.splitlines())
    depends = [d.strip() for d in fields["Depends"].split(",")]
    # pmemd runs on pydantic 1.10 (Debian 12) and 2.x (Debian 13); an older 1.x would fail.
    assert any(d.startswith("python3-pydantic (>= 1.10") for d in depends), depends
    assert "python3-pydantic" not in depends, depends
    assert "python3-systemd" in depends
    assert "python3-yaml" in " ".join(depends) and "python3-watchdog" in " ".join(depends)
    for tool in ("e2fsprogs", "xfsprogs", "ndctl", "util-linux"):
        assert tool in fields["Recommends"]


def test_deb_lintian_reports_no_errors(deb: DebBuild) -> None:
    if not _missing("lintian") and (deb.outdir / "lintian.txt").exists():
        report = (deb.outdir / "lintian.txt").read_text()
        errors = [line for line in report.splitlines() if line.startswith("E:")]
        assert not errors, report
    else:
        pytest.skip("lintian is missing: apt-get install lintian")


# --- the SRPM ----------------------------------------------------------------------------------


def test_srpm_builds_and_rpmlint_is_clean(tmp_path: Path) -> None:
    missing = _missing("rpmbuild", "rpmspec", "rpmlint")
    if missing:
        pytest.skip(f"{', '.join(missing)} missing: apt-get install rpm rpmlint")
    start = time.monotonic()
    res = _run(["bash", str(PACKAGING / "build-srpm"), str(tmp_path)], timeout=300)
    print(f"\npackaging/build-srpm took {time.monotonic() - start:.1f} s")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 errors" in res.stdout
    srpm = tmp_path / "pmemd-0.1.0-1.src.rpm"
    contents = _run(["rpm", "-qpl", str(srpm)]).stdout.split()
    assert sorted(contents) == ["pmemd-0.1.0.tar.gz", "pmemd.spec"]
    tarball = _run(["tar", "-tzf", str(tmp_path / "pmemd-0.1.0.tar.gz")]).stdout.split()
    for member in ("pmemd-0.1.0/pyproject.toml", "pmemd-0.1.0/pmemd.service",
                   "pmemd-0.1.0/packaging/pmemd.catalog", "pmemd-0.1.0/pmemd/cli.py"):
        assert member in tarball
    assert not [m for m in tarball if "/.git/" in m or m.endswith(".pyc")]
    # The spec by itself, as `rpmlint packaging/rpm/pmemd.spec` (with pmemd.rpmlintrc beside it).
    spec_lint = _run(["rpmlint", str(PACKAGING / "rpm/pmemd.spec")])
    assert re.search(r"\b0 errors\b", spec_lint.stdout), spec_lint.stdout
    requires = _run(["rpmspec", "-q", "--requires", str(PACKAGING / "rpm/pmemd.spec")]).stdout
    assert "python3-pydantic >= 1.10" in requires and "python3-systemd" in requires


# --- the drop-in example package -----------------------------------------------------------------


def test_example_dropin_package_builds_and_is_valid(tmp_path: Path) -> None:
    _skip_without_deb_tools()
    src = tmp_path / "pmdk-testenv"
    shutil.copytree(PACKAGING / "examples/pmdk-testenv", src, symlinks=True)
    start = time.monotonic()
    res = _run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, timeout=300,
               env=dict(os.environ, PATH=DEBIAN_PATH))
    print(f"\nexample dpkg-buildpackage took {time.monotonic() - start:.1f} s")
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    deb = tmp_path / "pmdk-testenv-pmem_0.1.0_all.deb"
    listing = _run(["dpkg-deb", "-c", str(deb)]).stdout
    files = {line.split(None, 5)[5].removeprefix(".") for line in listing.splitlines()
             if line.startswith("-")}
    assert files == {
        "/usr/lib/pmem.d/50-pmdk-testenv.yaml",
        "/usr/share/doc/pmdk-testenv-pmem/changelog.gz",
        "/usr/share/doc/pmdk-testenv-pmem/copyright",
    }
    assert "-rw-r--r--" in next(line for line in listing.splitlines() if "50-pmdk-testenv" in line)
    depends = _run(["dpkg-deb", "-f", str(deb), "Depends"]).stdout
    assert re.search(r"\bpmemd\b", depends), depends
    if not _missing("lintian"):
        lint = _run(["lintian", str(deb)])
        assert not [x for x in lint.stdout.splitlines() if x.startswith("E:")], lint.stdout

    # The drop-in merges with the packaged /etc/pmem.yaml and adds only its own namespace.
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    shutil.copy(PACKAGING / "pmem.yaml.default", root / "etc/pmem.yaml")
    assert _run(["dpkg-deb", "-x", str(deb), str(root)]).returncode == 0
    res = _run([sys.executable, "-m", "pmemd", "--root", str(root), "config", "--json"], cwd=REPO)
    assert res.returncode == 0, res.stderr
    cfg = json.loads(res.stdout)
    assert list(cfg["config"]["namespaces"]) == ["pmdk-testenv"]
    assert cfg["files"] == ["/etc/pmem.yaml", "/usr/lib/pmem.d/50-pmdk-testenv.yaml"]
    assert cfg["config"]["settings"] == json.loads(_run(
        [sys.executable, "-c", "import json; from pmemd.model import Settings; "
         "print(json.dumps(Settings().model_dump(mode='json')))"], cwd=REPO).stdout)


# --- the journal catalog -------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogEntry:
    message_id: str
    headers: dict[str, str]
    body: str


def parse_catalog(text: str) -> list[CatalogEntry]:
    """The format journalctl --update-catalog reads (systemd's catalog.c), strictly: '#' lines
    are comments; '-- <32 hex>' starts an entry; then 'Key: value' headers up to a blank line;
    then the body up to the next entry."""
    entries: list[CatalogEntry] = []
    current: tuple[str, dict[str, str], list[str]] | None = None
    in_headers = False
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            continue
        if line.startswith("-- "):
            m = re.fullmatch(r"-- ([0-9a-f]{32})", line)
            assert m, f"line {n}: bad entry header {line!r}"
            if current:
                entries.append(CatalogEntry(current[0], current[1], "\n".join(current[2]).strip()))
            current, in_headers = (m.group(1), {}, []), True
            continue
        if current is None:
            assert not line.strip(), f"line {n}: text before the first entry: {line!r}"
            continue
        if in_headers:
            if not line.strip():
                in_headers = False
                continue
            m = re.fullmatch(r"([A-Z][A-Za-z-]*): (\S.*)", line)
            assert m, f"line {n}: bad header {line!r}"
            assert m.group(1) not in current[1], f"line {n}: duplicate header {m.group(1)}"
            current[1][m.group(1)] = m.group(2)
        else:
            current[2].append(line)
    if current:
        entries.append(CatalogEntry(current[0], current[1], "\n".join(current[2]).strip()))
    return entries


def test_catalog_format_and_ids() -> None:
    entries = parse_catalog((PACKAGING / "pmemd.catalog").read_text())
    ids = [e.message_id for e in entries]
    assert len(ids) == len(set(ids)), "duplicate MESSAGE_ID"
    assert set(ids) == set(CATALOG_IDS.values())
    from pmemd.journal import MESSAGE_IDS

    assert MESSAGE_IDS == CATALOG_IDS, "pmemd/journal.py and the catalog disagree"
    for e in entries:
        assert set(e.headers) == {"Subject", "Defined-By", "Support", "Documentation"}, e.message_id
        assert e.headers["Defined-By"] == "pmemd"
        assert "man:pmemd(8)" in e.headers["Documentation"].split()
        assert len(e.headers["Subject"]) <= 80
        assert len(e.body) > 100, f"{e.message_id}: the body explains too little"
        fields = set(re.findall(r"@([A-Z_]+)@", e.body))
        assert fields <= {"PMEMD_NAMESPACE", "PMEMD_DEVICE", "PMEMD_RESULT"}, fields
        assert all(len(line) <= 80 for line in e.body.splitlines())


def test_catalog_loads_with_journalctl(tmp_path: Path) -> None:
    """journalctl --root compiles the catalog into <root>/var/lib/systemd/catalog/database, not
    into this machine's /var/lib/systemd."""
    if _missing("journalctl"):
        pytest.skip("journalctl missing")
    catalog_dir = tmp_path / "usr/lib/systemd/catalog"
    catalog_dir.mkdir(parents=True)
    (tmp_path / "var/lib/systemd/catalog").mkdir(parents=True)
    shutil.copy(PACKAGING / "pmemd.catalog", catalog_dir)
    res = _run(["journalctl", f"--root={tmp_path}", "--update-catalog"])
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "var/lib/systemd/catalog/database").stat().st_size > 0
    listed = _run(["journalctl", f"--root={tmp_path}", "--list-catalog"]).stdout
    assert {line.split()[0] for line in listed.splitlines() if line.strip()} == set(CATALOG_IDS.values())


# --- man pages and completion against the CLI ----------------------------------------------------


def _cli() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    from pmemd.cli import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, dict(sub.choices)


def _long_options(p: argparse.ArgumentParser) -> set[str]:
    return {o for a in p._actions for o in a.option_strings if o.startswith("--")} - {"--help"}


@pytest.mark.parametrize("page", ["pmemd.8", "pmem.yaml.5"])
def test_man_pages_render_without_warnings(page: str) -> None:
    if _missing("groff"):
        pytest.skip("groff missing: apt-get install groff-base")
    res = _run(["groff", "-man", "-Tutf8", "-ww", "-z", str(PACKAGING / "man" / page)],
               env=dict(os.environ, LC_ALL="C.UTF-8"))
    assert res.returncode == 0 and not res.stderr, res.stderr


def test_pmemd_8_documents_every_command_and_option() -> None:
    text = (PACKAGING / "man/pmemd.8").read_text().replace("\\-", "-")
    parser, commands = _cli()
    for name, sub in commands.items():
        assert re.search(rf"^\.(B|BR) {re.escape(name)}\b", text, re.M), f"command {name} undocumented"
        for opt in _long_options(sub):
            assert opt in text, f"{name} {opt} undocumented"
    for opt in _long_options(parser):
        assert opt in text, f"global option {opt} undocumented"
    for layout in ("grub", "grubby", "grub2-mkconfig", "systemd-boot"):
        assert f".B {layout}" in text
    for policy in ("never", "flag", "schedule", "now"):
        assert f".B {policy}" in text


def test_pmem_yaml_5_documents_every_key() -> None:
    from pmemd.model import Config, Filesystem, Mount, Namespace, Settings

    text = (PACKAGING / "man/pmem.yaml.5").read_text().replace("\\-", "-")
    documented = set(re.findall(r"^\.(?:B|BR|SS) ([a-z_]+)", text, re.M))
    for model in (Config, Settings, Namespace, Filesystem, Mount):
        missing = set(model.field_names()) - documented
        assert not missing, f"{model.__name__}: {sorted(missing)} not documented in pmem.yaml(5)"


def _complete(words: list[str]) -> list[str]:
    script = (
        f'source "{PACKAGING / "completion/pmemd.bash"}"\n'
        'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _pmemd; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    res = _run(["bash", "-c", script, "bash", *words])
    assert res.returncode == 0, res.stderr
    return [w for w in res.stdout.splitlines() if w]


def test_completion_matches_the_cli(tmp_path: Path) -> None:
    if _missing("bash"):
        pytest.skip("bash missing")
    parser, commands = _cli()
    assert set(_complete(["pmemd", ""])) == set(commands)
    assert set(_complete(["pmemd", "--"])) == _long_options(parser) | {"--help"}
    for name, sub in commands.items():
        assert set(_complete(["pmemd", name, "--"])) == _long_options(sub) | {"--help"}, name
        assert set(_complete(["pmemd", "--root", "/", name, "--"])) == _long_options(sub) | {"--help"}
    (tmp_path / "rootdir").mkdir()
    (tmp_path / "pmem-test.yaml").write_text("version: 1\n")
    assert _complete(["pmemd", "--root", str(tmp_path / "ro")]) == [str(tmp_path / "rootdir")]
    assert _complete(["pmemd", "--config", str(tmp_path / "pmem-")]) == [str(tmp_path / "pmem-test.yaml")]
    assert _complete(["pmemd", "apply", "--json", "--"]) == ["--dry-run", "--retry-trial", "--help"]


# Options that put the service in a mount namespace of its own, so its mounts would be invisible
# on the host. PrivateNetwork= is one on systemd 257 (it remounts /sys; measured in the e2e guest).
MOUNT_NAMESPACE_OPTIONS = (
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts", "PrivateNetwork",
    "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
    "ProtectProc", "ProcSubset", "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem",
    "BindPaths", "BindReadOnlyPaths", "RootDirectory", "RootImage", "MountAPIVFS", "PrivateIPC",
    "NetworkNamespacePath",
)


def test_unit_has_no_option_that_hides_its_mounts_from_the_host() -> None:
    unit = (REPO / "pmemd.service").read_text()
    keys = {ln.split("=", 1)[0].strip() for ln in unit.splitlines() if "=" in ln and not ln.startswith("#")}
    assert not keys & set(MOUNT_NAMESPACE_OPTIONS), keys & set(MOUNT_NAMESPACE_OPTIONS)
    assert {"Type", "WatchdogSec", "ExecReload", "NoNewPrivileges", "CapabilityBoundingSet",
            "SystemCallFilter"} <= keys


def _generated(shell: str) -> str:
    res = _run([sys.executable, str(PACKAGING / "completion/generate"), shell], cwd=REPO,
               env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_zsh_completion_is_generated_from_the_parser(tmp_path: Path) -> None:
    parser, commands = _cli()
    text = _generated("zsh")
    assert text.startswith("#compdef pmemd\n")
    listed = re.findall(r"^ {8}'([a-z]+):", text, re.M)
    assert listed == list(commands)
    for option in _long_options(parser):
        assert f"'{option}" in text.split("case $state in")[0], option
    for name, sub in commands.items():
        (line,) = [ln for ln in text.splitlines() if ln.strip().startswith(f"{name}) _arguments")]
        assert set(re.findall(r"'(--[a-z-]+)[=\[]", line)) == _long_options(sub), name
    assert "'--root=[" in text and ":dir:_files -/'" in text  # --root completes directories
    if _missing("zsh"):
        pytest.skip("zsh missing (apt-get install zsh): checked against the parser only")
    f = tmp_path / "_pmemd"
    f.write_text(text)
    res = _run(["zsh", "-n", str(f)])
    assert res.returncode == 0, res.stderr
    # compinit picks the file up from $fpath by its #compdef line
    res = _run(["zsh", "-fc", f'fpath=({tmp_path} $fpath); autoload -Uz compinit; '
                f'compinit -u -d {tmp_path}/zcompdump; print -r -- $_comps[pmemd]'])
    assert res.returncode == 0 and res.stdout.strip() == "_pmemd", (res.stdout, res.stderr)


def _fish_complete(script: Path, line: str) -> list[str]:
    res = _run(["fish", "--no-config", "-c", f"source {script}; complete -C '{line}'"])
    assert res.returncode == 0, res.stderr
    return [ln.split("\t")[0] for ln in res.stdout.splitlines() if ln]


def test_fish_completion_is_generated_from_the_parser(tmp_path: Path) -> None:
    parser, commands = _cli()
    text = _generated("fish")
    for name, sub in commands.items():
        assert f" -a {name} -d " in text
        for option in _long_options(sub):
            assert f"-n '__fish_seen_subcommand_from {name}' -l {option[2:]}" in text, (name, option)
    if _missing("fish"):
        pytest.skip("fish missing (apt-get install fish): checked against the parser only")
    f = tmp_path / "pmemd.fish"
    f.write_text(text)
    assert set(_fish_complete(f, "pmemd ")) == set(commands)
    assert set(_fish_complete(f, "pmemd --")) == _long_options(parser)
    for name, sub in commands.items():
        assert set(_fish_complete(f, f"pmemd {name} --")) == _long_options(sub), name
    (tmp_path / "rootdir").mkdir()
    assert _fish_complete(f, f"pmemd --root {tmp_path}/ro") == [f"{tmp_path}/rootdir/"]


def test_deb_ships_completions_and_tmpfiles(deb: DebBuild) -> None:
    for path in ("/usr/share/zsh/vendor-completions/_pmemd", "/usr/share/fish/vendor_completions.d/pmemd.fish",
                 "/usr/lib/tmpfiles.d/pmemd.conf"):
        assert deb.files.get(path) == "-", f"{path} is not a file in the package"
    # /var/lib/pmemd is the unit's StateDirectory=, made by systemd, not shipped
    assert "/var/lib/pmemd" not in deb.files
    postinst = _run(["dpkg-deb", "-I", str(deb.deb), "postinst"]).stdout
    assert "systemd-tmpfiles" in postinst and "pmemd.conf" in postinst, postinst


def test_tmpfiles_and_state_directory() -> None:
    conf = (PACKAGING / "tmpfiles/pmemd.conf").read_text()
    assert [ln.split() for ln in conf.splitlines() if ln and not ln.startswith("#")] == [
        ["d", "/run/pmem.d", "0755", "root", "root", "-"]]
    unit = (REPO / "pmemd.service").read_text()
    keys = dict(ln.split("=", 1) for ln in unit.splitlines() if "=" in ln and not ln.startswith("#"))
    assert keys["StateDirectory"] == "pmemd"
    # ProtectClock= implies DeviceAllow=char-rtc: on systemd without the char-rtc fix (252) the
    # device policy then shuts the service out of /dev/pmem*, unless block devices are allowed too
    assert "ProtectClock" not in keys or "block-* rw" in keys.get("DeviceAllow", "")


def test_rpm_spec_leaves_presets_to_the_distribution() -> None:
    spec = (PACKAGING / "rpm/pmemd.spec").read_text()
    body = "\n".join(ln for ln in spec.splitlines() if not ln.lstrip().startswith("#"))
    assert "preset" not in body
    for macro in ("%systemd_post pmemd.service", "%systemd_preun pmemd.service",
                  "%systemd_postun_with_restart pmemd.service", "%tmpfiles_create pmemd.conf"):
        assert macro in body, macro
    for path in ("%{_tmpfilesdir}/pmemd.conf", "%{zsh_completions_dir}/_pmemd", "%{fish_completions_dir}/pmemd.fish"):
        assert path in body.split("%files", 1)[1], path


@pytest.mark.parametrize("example", sorted(str(p.relative_to(REPO)) for p in REPO.glob("examples/*/pmem.yaml")))
def test_examples_are_valid_configs(example: str, tmp_path: Path) -> None:
    res = _run([sys.executable, "-m", "pmemd", "--root", str(tmp_path), "--config", str(REPO / example), "config"],
               cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert "namespaces" in res.stdout
