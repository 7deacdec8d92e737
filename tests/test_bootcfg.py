"""Tier 1: boot-loader files: grub.cfg, /etc/default/grub(+.d), BLS entries, grubenv,
/etc/kernel/cmdline. Real captures where they exist (debian13-qemu-plain's grub.cfg and
/etc/default/grub); shell semantics checked against a real /bin/sh."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import FIXTURES, FakeUpdateGrub, copy_fixture, shell_grub_vars
from hypothesis import given, settings
from hypothesis import strategies as st

from pmemd.bootloader import read_boot_config
from pmemd.bootloader.grub import MARKER, parse_dropin, render_dropin
from pmemd.bootloader.syntax import (
    expand_bls_options,
    grub_words,
    parse_bls_entries,
    parse_bls_entry,
    parse_default_grub,
    parse_grub_cfg,
    parse_grubenv,
    parse_kernel_cmdline_file,
    render_kernel_cmdline_file,
)
from pmemd.fsroot import Root

PLAIN = FIXTURES / "debian13-qemu-plain"


def root_uuid() -> str:
    tok = next(t for t in (PLAIN / "proc/cmdline").read_text().split() if t.startswith("root="))
    return tok.removeprefix("root=")


# --- grub.cfg --------------------------------------------------------------------------------


def test_real_debian_grub_cfg_default_entry() -> None:
    entries = parse_grub_cfg("/boot/grub/grub.cfg", (PLAIN / "boot/grub/grub.cfg").read_text())
    assert len(entries) == 3
    normal, advanced, recovery = entries
    assert normal.title == "Debian GNU/Linux" and normal.default
    assert advanced.title.startswith("submenu:Advanced options for Debian GNU/Linux > Debian GNU/Linux, with Linux 6.")
    assert recovery.title.endswith("(recovery mode)") and not recovery.default and not advanced.default
    assert normal.args == (f"root={root_uuid()}", "ro", "console=ttyS0,115200", "quiet")
    assert recovery.args == (f"root={root_uuid()}", "ro", "single", "dis_ucode_ldr", "console=ttyS0,115200")
    assert {e.source for e in entries} == {"/boot/grub/grub.cfg"}


DEBIAN13 = sorted(p.name for p in FIXTURES.iterdir() if p.name.startswith("debian13-"))


@pytest.mark.parametrize("name", DEBIAN13)
def test_fake_update_grub_reproduces_the_real_capture(tmp_path: Path, name: str) -> None:
    """The fake used by the apply tests regenerates every captured grub.cfg byte for byte,
    including the ones whose memmap= came from a grub.d drop-in the guest's update-grub read."""
    t = copy_fixture(name, tmp_path / "h")
    FakeUpdateGrub(t.path)(("update-grub",))
    assert t.read("/boot/grub/grub.cfg") == (FIXTURES / name / "boot/grub/grub.cfg").read_text()


@pytest.mark.parametrize("name", DEBIAN13)
def test_next_boot_args_of_real_captures_are_what_the_guest_booted(name: str) -> None:
    """For each capture, the grub.cfg default entry (what pmemd calls the next-boot arguments) is
    exactly the /proc/cmdline the guest booted with (minus BOOT_IMAGE)."""
    boot = read_boot_config(Root(FIXTURES / name))
    running = (FIXTURES / name / "proc/cmdline").read_text().split()
    assert boot.default_args == tuple(running[1:]) and running[0].startswith("BOOT_IMAGE=")


def _grub_cfg_with(default: str) -> str:
    text = (PLAIN / "boot/grub/grub.cfg").read_text()
    return text.replace('   set default="0"', f"   set default={default}")


@pytest.mark.parametrize(("default", "saved", "expected"), [
    ('"0"', None, 0),
    ('"1"', None, 1),  # a submenu: its first entry
    ("'1>1'", None, 2),  # the recovery entry inside the submenu
    ('"1>0"', None, 1),
    ('"Debian GNU/Linux"', None, 0),
    ('"Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux KVER (recovery mode)"', None, 2),
    ('"gnulinux-advanced-UUID>gnulinux-KVER-recovery-UUID"', None, 2),
    ('"gnulinux-KVER-advanced-UUID"', None, 0),  # an id at the wrong level matches nothing: entry 0
    ('"${saved_entry}"', "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux KVER (recovery mode)", 2),
    ('"${saved_entry}"', "1>1", 2),
    ('"${saved_entry}"', None, 0),  # no saved entry yet: the first one
    ('"Debian GNU/Linux, with Linux KVER (recovery mode)"', None, 2),  # bare title of a nested entry
    ('"no such entry"', None, 0),
])
def test_grub_default_by_number_title_id_and_path(default: str, saved: str | None, expected: int) -> None:
    text = (PLAIN / "boot/grub/grub.cfg").read_text()
    kver = next(w for w in text.split() if w.startswith("/boot/vmlinuz-")).removeprefix("/boot/vmlinuz-")
    uuid = root_uuid().removeprefix("UUID=")
    default = default.replace("KVER", kver).replace("UUID", uuid)
    saved = saved.replace("KVER", kver) if saved else None
    entries = parse_grub_cfg("/boot/grub/grub.cfg", _grub_cfg_with(default), saved)
    assert [e.default for e in entries].index(True) == expected
    assert sum(e.default for e in entries) == 1


def test_grub_default_picks_the_entry_whose_args_differ() -> None:
    cfg = """\
set default="2"
menuentry 'Linux' { linux /vmlinuz root=/dev/sda1 ro quiet
}
menuentry 'Windows' {
    chainloader +1
}
menuentry 'Custom pmem test' --id custom-pmem {
    linux16 /vmlinuz root=/dev/sda1 ro memmap=1G!8G
}
"""
    entries = parse_grub_cfg("/boot/grub/grub.cfg", cfg)
    assert [(e.title, e.default) for e in entries][-1] == ("Custom pmem test", True)
    assert entries[-1].args == ("root=/dev/sda1", "ro", "memmap=1G!8G")
    assert parse_grub_cfg("x", cfg.replace('"2"', "custom-pmem"))[-1].default


def test_grub_cfg_without_linux_entries() -> None:
    assert parse_grub_cfg("x", "set default=0\nmenuentry 'UEFI' {\n fwsetup\n}\n") == ()


@pytest.mark.parametrize(("line", "words"), [
    ("linux\t/boot/vmlinuz root=UUID=x ro  quiet", ["linux", "/boot/vmlinuz", "root=UUID=x", "ro", "quiet"]),
    ("linux /vmlinuz memmap=4G\\$12G", ["linux", "/vmlinuz", "memmap=4G$12G"]),  # \$ is a literal $
    ("linux /vmlinuz 'a b' \"c d\"", ["linux", "/vmlinuz", "a b", "c d"]),
    ("linux /vmlinuz $kernelopts", ["linux", "/vmlinuz", "$kernelopts"]),
    ("linux /vmlinuz memmap=4G!12G", ["linux", "/vmlinuz", "memmap=4G!12G"]),  # ! needs no escaping
])
def test_grub_words(line: str, words: list[str]) -> None:
    assert grub_words(line) == words


# --- /etc/default/grub and grub.d ------------------------------------------------------------


def test_real_etc_default_grub() -> None:
    env = parse_default_grub([("/etc/default/grub", (PLAIN / "etc/default/grub").read_text())])
    assert env["GRUB_CMDLINE_LINUX"] == "console=ttyS0,115200"
    assert env["GRUB_CMDLINE_LINUX_DEFAULT"] == "quiet"
    assert env["GRUB_DEFAULT"] == "0"
    assert "GRUB_DISABLE_OS_PROBER" not in env  # commented out


def test_dropins_expand_earlier_values_and_later_files_win() -> None:
    files = [
        ("/etc/default/grub", 'GRUB_CMDLINE_LINUX="console=ttyS0,115200"\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'),
        ("/etc/default/grub.d/50-cloudimg-settings.cfg", 'GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0"\n'),
        ("/etc/default/grub.d/99-pmemd.cfg", 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX memmap=1G!5G nokaslr"\n'),
    ]
    env = parse_default_grub(files)
    assert env["GRUB_CMDLINE_LINUX"] == "console=ttyS0,115200 memmap=1G!5G nokaslr"
    assert env["GRUB_CMDLINE_LINUX_DEFAULT"] == "console=tty1 console=ttyS0"


@pytest.mark.parametrize(("line", "value"), [
    ('GRUB_X="$GRUB_A b"', "a b"),
    ('GRUB_X="${GRUB_A}b"', "ab"),
    ("GRUB_X='$GRUB_A b'", "$GRUB_A b"),
    ('GRUB_X="memmap=4G\\\\\\$12G"', "memmap=4G\\$12G"),  # docs/facts.md: three backslashes give \$ in grub.cfg
    ('GRUB_X="memmap=32M\\$3000M"', "memmap=32M$3000M"),  # ...and one gives a bare $ that GRUB eats
    ("GRUB_X=plain", "plain"),
    ("GRUB_X=a#b", "a#b"),
    ("GRUB_X=a # comment", "a"),
    ('export GRUB_X="x y"', "x y"),
    ('GRUB_X="a"\'b\'c', "abc"),
    ('GRUB_X="$GRUB_UNSET"', ""),
])
def test_shell_values(line: str, value: str) -> None:
    assert parse_default_grub([("f", 'GRUB_A="a"\n' + line + "\n")])["GRUB_X"] == value


_plain = st.text(alphabet="abcXYZ019=!,.:-_/", min_size=1, max_size=6)
_dq = st.lists(st.one_of(
    st.text(alphabet="ab1 =!,.:-#'", min_size=1, max_size=5),
    st.sampled_from(["$GRUB_A", "${GRUB_A}", "$GRUB_NOPE", "\\\\", "\\$", "\\\"", "$ ", "$,", "\\x"]),
), max_size=4).map(lambda parts: '"' + "".join(parts) + '"')
_sq = st.text(alphabet="ab1 =!$\\\"#", max_size=6).map(lambda s: "'" + s + "'")
_word = st.lists(st.one_of(_plain, _dq, _sq, st.just("$GRUB_A")), min_size=1, max_size=4).map("".join)


@settings(max_examples=60)
@given(_word)
def test_default_grub_values_match_a_real_posix_shell(tmp_path_factory: pytest.TempPathFactory, word: str) -> None:
    """Differential test: pmemd's reader and /bin/sh agree on every generated assignment."""
    root = tmp_path_factory.mktemp("sh")
    (root / "etc/default").mkdir(parents=True)
    text = f'GRUB_A="a b"\nGRUB_CMDLINE_LINUX={word}\n'
    (root / "etc/default/grub").write_text(text)
    assert parse_default_grub([("f", text)])["GRUB_CMDLINE_LINUX"] == shell_grub_vars(root)["GRUB_CMDLINE_LINUX"]


# --- pmemd's drop-in -------------------------------------------------------------------------


def test_render_dropin() -> None:
    text = render_dropin(("memmap=512M!4G", "memmap=1G!5G", "nokaslr"))
    assert text.startswith(MARKER)
    assert text.splitlines()[-1] == 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX memmap=512M!4G memmap=1G!5G nokaslr"'
    assert parse_dropin(text) == ("memmap=512M!4G", "memmap=1G!5G", "nokaslr")


@pytest.mark.parametrize("token", [
    "memmap=4G$12G", 'memmap="4G!12G"', "memmap='4G!12G'", "memmap=4G\\!12G", "a b", "x`id`", "x;y",
    "memmap=4G!12G\n", "",
])
def test_render_grub_dropin_refuses_unsafe_tokens(token: str) -> None:
    with pytest.raises(ValueError, match="refusing to write unsafe kernel argument"):
        render_dropin(("memmap=1G!5G", token))


@settings(max_examples=40)
@given(st.lists(st.tuples(st.integers(1, 2**30), st.integers(0, 2**30)), min_size=1, max_size=5))
def test_dropin_sourced_by_a_real_shell_appends_exactly_the_tokens(tmp_path_factory: pytest.TempPathFactory,
                                                                   ranges: list[tuple[int, int]]) -> None:
    from pmemd.validate import memmap_token

    tokens = tuple(memmap_token(s * 4096, o * 4096) for s, o in ranges)
    root = tmp_path_factory.mktemp("dropin")
    (root / "etc/default/grub.d").mkdir(parents=True)
    (root / "etc/default/grub").write_text((PLAIN / "etc/default/grub").read_text())
    (root / "etc/default/grub.d/99-pmemd.cfg").write_text(render_dropin((*tokens, "nokaslr")))
    assert shell_grub_vars(root)["GRUB_CMDLINE_LINUX"].split() == ["console=ttyS0,115200", *tokens, "nokaslr"]


# --- BLS, grubenv, /etc/kernel/cmdline ---------------------------------------------------------


def test_rhel8_kernelopts_are_expanded_from_grubenv() -> None:
    t = FIXTURES / "rhel8-bls-kernelopts"
    boot = read_boot_config(Root(t))
    assert boot.layout == "grubby"
    default = next(e for e in boot.entries if e.default)
    assert default.title == "Red Hat Enterprise Linux (4.18.0-513.5.1.el8_9.x86_64) 8.9 (Ootpa)"
    assert boot.default_args == ("root=/dev/mapper/rhel-root", "ro", "crashkernel=auto",
                                 "resume=/dev/mapper/rhel-swap", "rd.lvm.lv=rhel/root", "rd.lvm.lv=rhel/swap",
                                 "rhgb", "quiet")
    assert len(boot.entries) == 3
    assert all(e.args == boot.default_args for e in boot.entries)  # all entries share $kernelopts


def test_fedora_full_options_and_saved_entry() -> None:
    t = FIXTURES / "fedora-bls-grubby"
    boot = read_boot_config(Root(t))
    assert boot.layout == "grubby" and "grubby" in boot.detected_by
    default = next(e for e in boot.entries if e.default)
    assert default.source.endswith("-6.8.9-300.fc40.x86_64.conf")
    assert boot.default_args == ("root=UUID=7d2f5a1c-3b4e-4f6a-9c8d-2e1f0a9b8c7d", "ro", "rootflags=subvol=root",
                                 "rhgb", "quiet")
    assert any("/etc/kernel/cmdline seeds future kernel entries" in n for n in boot.notes)


def test_saved_entry_chooses_an_older_kernel(tmp_path: Path) -> None:
    t = copy_fixture("fedora-bls-grubby", tmp_path / "h")
    env = t.read("/boot/grub2/grubenv").replace("6.8.9-300", "6.8.5-301")
    t.write("/boot/grub2/grubenv", env)
    entry = t.p("/boot/loader/entries").glob("*6.8.5-301*.conf").__next__()
    entry.write_text(entry.read_text().replace("rhgb quiet", "rhgb quiet memmap=1G!8G"))
    boot = read_boot_config(Root(t.path))
    assert next(e for e in boot.entries if e.default).source.endswith("6.8.5-301.fc40.x86_64.conf")
    assert boot.default_args is not None and "memmap=1G!8G" in boot.default_args


def test_bls_default_selection() -> None:
    files = [
        ("/boot/loader/entries/m-6.8.5.conf", "title Old\nversion 6.8.5\noptions root=/a old\n"),
        ("/boot/loader/entries/m-6.10.2.conf", "title New\nversion 6.10.2\noptions root=/a new\n"),
        ("/boot/loader/entries/m-0-rescue.conf", "title Rescue\nversion 0-rescue-m\noptions root=/a rescue\n"),
    ]

    def default_of(default: str | None) -> str:
        return next(e.title for e in parse_bls_entries(files, {}, default) if e.default)

    assert default_of(None) == "New"  # highest version (6.10 > 6.8: not a string sort)
    assert default_of("m-6.8.5") == "Old"
    assert default_of("m-6.8.5.conf") == "Old"
    assert default_of("Rescue") == "Rescue"  # by title
    assert default_of("m-0-*") == "Rescue"  # systemd-boot glob
    assert default_of("unknown") == "New"


def test_bls_entry_keys_and_repeated_options() -> None:
    keys = parse_bls_entry("# comment\ntitle      Debian GNU/Linux 13 (trixie)\nversion    6.12\n"
                           "options    root=UUID=x ro\noptions    quiet\n")
    assert keys == {"title": "Debian GNU/Linux 13 (trixie)", "version": "6.12", "options": "root=UUID=x ro quiet"}


def test_grubenv_block() -> None:
    text = "# GRUB Environment Block\nsaved_entry=abc-6.8\nkernelopts=root=/dev/x ro quiet \n" + "#" * 900
    assert parse_grubenv(text) == {"saved_entry": "abc-6.8", "kernelopts": "root=/dev/x ro quiet "}
    assert parse_grubenv(None) == {}


@pytest.mark.parametrize(("options", "env", "args"), [
    ("$kernelopts $tuned_params", {"kernelopts": "root=/a ro quiet "}, ("root=/a", "ro", "quiet")),
    ("${kernelopts} memmap=1G!8G", {"kernelopts": "root=/a"}, ("root=/a", "memmap=1G!8G")),
    ("root=/a memmap=4G\\$12G", {}, ("root=/a", "memmap=4G$12G")),  # escaped: not a variable
    ("root=/a memmap=4G$12G", {}, ("root=/a", "memmap=4G")),  # blscfg eats $12G: a memory limit!
])
def test_expand_bls_options(options: str, env: dict[str, str], args: tuple[str, ...]) -> None:
    assert expand_bls_options(options, env) == args


def test_systemd_boot_fixture() -> None:
    boot = read_boot_config(Root(FIXTURES / "systemd-boot"))
    assert boot.layout == "systemd-boot"
    default = next(e for e in boot.entries if e.default)
    assert default.source == "/efi/loader/entries/3f1c6a0e5b2d4c8e9a7b1d2e3f405162-6.12.117+deb13-amd64.conf"
    assert boot.default_args == ("root=UUID=c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f", "ro", "quiet")


def test_kernel_cmdline_file() -> None:
    assert parse_kernel_cmdline_file("# seeds new entries\nroot=UUID=x ro\nquiet 'a b'\n") == (
        "root=UUID=x", "ro", "quiet", "a b")
    assert parse_kernel_cmdline_file("\n# nothing\n") == ()
    assert render_kernel_cmdline_file(("root=/a", "memmap=1G!5G")) == "root=/a memmap=1G!5G\n"
    args = ("root=UUID=x", "ro", "memmap=1G!5G", "nokaslr")
    assert parse_kernel_cmdline_file(render_kernel_cmdline_file(args)) == args


# --- detection -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "layout"), [
    *((n, "grub") for n in DEBIAN13),
    ("debian-grub-foreign-memmap", "grub"),
    ("fedora-bls-grubby", "grubby"),
    ("rhel8-bls-kernelopts", "grubby"),
    ("systemd-boot", "systemd-boot"),
])
def test_layout_detection_on_fixture_trees(name: str, layout: str) -> None:
    assert read_boot_config(Root(FIXTURES / name)).layout == layout


def test_fedora_without_grubby_is_grub2_mkconfig(tmp_path: Path) -> None:
    t = copy_fixture("fedora-bls-grubby", tmp_path / "h")
    t.p("/usr/sbin/grubby").unlink()
    assert read_boot_config(Root(t.path)).layout == "grub2-mkconfig"


def test_forced_layout() -> None:
    boot = read_boot_config(Root(FIXTURES / "fedora-bls-grubby"), "systemd-boot")
    assert (boot.layout, boot.detected_by) == ("systemd-boot", "settings.bootloader")


def test_debian_layout_reports_a_stale_grub_cfg(tmp_path: Path) -> None:
    import os

    t = copy_fixture("debian13-qemu-plain", tmp_path / "h")
    os.utime(t.p("/boot/grub/grub.cfg"), (1_000_000, 1_000_000))
    os.utime(t.p("/etc/default/grub"), (2_000_000, 2_000_000))
    boot = read_boot_config(Root(t.path))
    assert boot.notes == ("/boot/grub/grub.cfg is older than /etc/default/grub: update-grub has not run since "
                          "they changed",)
    assert boot.owned_file == "/etc/default/grub.d/99-pmemd.cfg" and boot.owned_tokens == ()


# --- the kernel-install plugin (safety net for kernels added later on systemd-boot) -----------


def _plugin(tmp_path: Path, entry: str, state: dict[str, object] | None, *args: str) -> str:
    import json
    import os
    import subprocess
    import sys

    from helpers import REPO

    boot = tmp_path / "boot"
    entries = boot / "loader/entries"
    entries.mkdir(parents=True, exist_ok=True)
    (entries / "abc-6.12.99.conf").write_text(entry)
    st = tmp_path / "state.json"
    if state is not None:
        st.write_text(json.dumps(state))
    env = {**os.environ, "KERNEL_INSTALL_BOOT_ROOT": str(boot), "KERNEL_INSTALL_ENTRY_TOKEN": "abc",
           "KERNEL_INSTALL_LAYOUT": "bls", "PMEMD_STATE": str(st)}
    r = subprocess.run([sys.executable, str(REPO / "packaging/kernel-install/91-pmemd.install"), *args],
                       env=env, capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    return (entries / "abc-6.12.99.conf").read_text()


ENTRY = "title Debian\nversion 6.12.99\noptions root=/dev/vda1 ro systemd.machine_id=abc\nlinux /abc/6.12.99/linux\n"


def test_kernel_install_plugin_adds_pmemds_tokens_to_a_new_entry(tmp_path: Path) -> None:
    out = _plugin(tmp_path, ENTRY, {"kernel_args": ["memmap=1G!5G", "nokaslr"]}, "add", "6.12.99", "/x", "/vmlinuz")
    assert "options root=/dev/vda1 ro systemd.machine_id=abc memmap=1G!5G nokaslr\n" in out
    assert out.replace(" memmap=1G!5G nokaslr", "") == ENTRY  # nothing else changed


def test_kernel_install_plugin_changes_nothing_it_need_not(tmp_path: Path) -> None:
    has = ENTRY.replace("ro systemd", "ro memmap=1G!5G systemd")
    assert _plugin(tmp_path / "a", has, {"kernel_args": ["memmap=1G!5G"]}, "add", "6.12.99", "/x", "/v") == has
    assert _plugin(tmp_path / "b", ENTRY, None, "add", "6.12.99", "/x", "/v") == ENTRY  # pmemd owns nothing
    assert _plugin(tmp_path / "c", ENTRY, {"kernel_args": ["nokaslr"]}, "remove", "6.12.99") == ENTRY
