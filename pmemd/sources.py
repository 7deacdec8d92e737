"""Config sources on disk: finding drop-ins, permission checks, reading.

Precedence follows systemd: a fragment in ``/etc/pmem.d`` shadows one of the same file name in
``/run/pmem.d``, which shadows ``/usr/lib/pmem.d``; an empty file or a symlink to ``/dev/null``
masks. ``/etc/pmem.yaml`` is merged first, then the remaining fragments in lexical order of their
file names.

Only regular files are read, each up to ``config.MAX_CONFIG_BYTES``; below a ``--root`` a
symlink must stay inside the root. Anything else is refused with the file's name and never
opened (a FIFO would block, ``/dev/zero`` would never end).
"""

from __future__ import annotations

import os
import stat
from dataclasses import replace

from pmemd.config import Discovery, Source
from pmemd.fsroot import HostFileError, Root, file_kind, shown
from pmemd.yamldoc import MAX_CONFIG_BYTES, ConfigErrors, ConfigIssue, Loc, decode_config

MAIN_CONFIG = "/etc/pmem.yaml"
DROPIN_DIRS = ("/etc/pmem.d", "/run/pmem.d", "/usr/lib/pmem.d")  # highest precedence first


def _is_dev_null(root: Root, path: str) -> bool:
    return root.readlink(path) == "/dev/null"


def _is_mask(root: Root, path: str) -> bool:
    """A symlink to /dev/null, or an empty regular file (a FIFO or device is no mask: refused)."""
    if _is_dev_null(root, path):
        return True
    st = root.stat(path)
    return st is not None and stat.S_ISREG(st.st_mode) and st.st_size == 0


def check_permissions(root: Root, path: str) -> str | None:
    """Why ``path`` must not be trusted, or None. Config can trigger mkfs: root-only writes."""
    st = root.stat(path)
    if st is None:
        return None
    allowed_owners = {0, os.geteuid()}
    if st.st_uid not in allowed_owners:
        return f"owned by uid {st.st_uid}, not root; run: chown root: {shown(path)}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"run: chmod go-w {shown(path)}")
    return None


def _dropins_by_name(root: Root, dropin_dirs: tuple[str, ...]) -> dict[str, list[str]]:
    """Fragment name -> its paths, highest precedence first; ConfigErrors for bad dirs and names."""
    issues: list[ConfigIssue] = []
    by_name: dict[str, list[str]] = {}
    for directory in dropin_dirs:
        try:
            names = root.listdir(directory)
        except HostFileError as exc:
            issues.append(ConfigIssue(Loc(directory, 1, 1), "", _without_path(str(exc), directory)))
            continue
        for name in names:
            if not name.endswith(".yaml") or name.startswith("."):
                continue
            if not name.isprintable():
                issues.append(ConfigIssue(Loc(shown(f"{directory}/{name}"), 1, 1), "", (
                    "the file name holds control characters (a newline, a tab); rename the file")))
                continue
            by_name.setdefault(name, []).append(f"{directory}/{name}")
    if issues:
        raise ConfigErrors(issues)
    return by_name


def discover(root: Root, main: str = MAIN_CONFIG, dropin_dirs: tuple[str, ...] = DROPIN_DIRS,
             main_root: Root | None = None) -> tuple[list[tuple[str, tuple[str, ...]]], list[str], list[str], bool]:
    """Find config files: [(path, shadowed paths)], masked, shadowed, main present.

    ``main_root`` is where the main file lives when ``--config`` names a file outside the root.
    A drop-in directory that cannot be listed, or a fragment whose name holds control
    characters, raises ConfigErrors.
    """
    mroot = main_root or root
    by_name = _dropins_by_name(root, dropin_dirs)
    chosen: list[tuple[str, tuple[str, ...]]] = []
    masked: list[str] = []
    shadowed: list[str] = []
    # Anything at the main path counts as present (a FIFO or a directory there is refused when
    # read, not taken for a missing file); only a link to /dev/null masks it.
    main_present = mroot.exists(main)
    if main_present and not _is_dev_null(mroot, main):  # an empty main file is read (and refused)
        chosen.append((main, ()))
    elif main_present:
        masked.append(main)
    for name in sorted(by_name):
        winner, *hidden = by_name[name]
        shadowed.extend(hidden)
        if _is_mask(root, winner):
            masked.append(winner)
        else:
            chosen.append((winner, tuple(hidden)))
    return chosen, masked, shadowed, main_present


def _without_path(message: str, path: str) -> str:
    """A HostFileError message without its leading path (the issue's location names it)."""
    return message.removeprefix(shown(path)).lstrip(": ") or message


def read_config_file(root: Root, path: str) -> str | ConfigIssue:
    """The decoded text of one config file, or the issue that refuses it."""
    try:
        root.check_inside(path)
    except HostFileError as exc:
        return ConfigIssue(Loc(path, 1, 1), "", _without_path(str(exc), path))
    st = root.stat(path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        what = "a directory" if stat.S_ISDIR(st.st_mode) else file_kind(st.st_mode)
        return ConfigIssue(Loc(path, 1, 1), "", (
            f"is {what}, not a regular file; pmemd reads config only from regular files: "
            "replace it with a file, or remove it"))
    if st is not None and st.st_size > MAX_CONFIG_BYTES:
        return ConfigIssue(Loc(path, 1, 1), "", (
            f"is {st.st_size} bytes, more than the {MAX_CONFIG_BYTES >> 10} KiB pmemd reads from "
            "one config file (see pmem.yaml(5), LIMITS); split it or remove what is not config"))
    why = check_permissions(root, path)
    if why:
        return ConfigIssue(Loc(path, 1, 1), "", f"refused: {why}")
    try:
        data = root.read_bytes(path, limit=MAX_CONFIG_BYTES, live=False)
    except HostFileError as exc:
        return ConfigIssue(Loc(path, 1, 1), "", _without_path(str(exc), path))
    if data is None:
        return ConfigIssue(Loc(path, 1, 1), "", "cannot be read")
    try:
        return decode_config(path, data)
    except ConfigErrors as exc:
        return exc.issues[0]


def read_sources(root: Root, main: str = MAIN_CONFIG, dropin_dirs: tuple[str, ...] = DROPIN_DIRS,
                 main_root: Root | None = None) -> Discovery:
    """Read every effective config file; refuse files non-root users could have written."""
    chosen, masked, shadowed, main_present = discover(root, main, dropin_dirs, main_root)
    issues: list[ConfigIssue] = []
    sources: list[Source] = []
    for path, hidden in chosen:
        where = (main_root or root) if path == main else root
        text = read_config_file(where, path)
        if isinstance(text, ConfigIssue):
            issues.append(text)
            continue
        if path == main and not text.strip():
            # Unlike a drop-in, the main file shadows nothing: empty, it would mean "no
            # namespaces" and pmemd would undo everything it set up (a truncated file, an editor
            # mid-save). Removing everything must be written out, like a missing file (engine).
            issues.append(ConfigIssue(Loc(path, 1, 1), "", (
                "is empty; pmemd does not take an empty main config as 'no namespaces'. Write "
                "`version: 1` and `namespaces: {}` to remove every namespace, or link it to "
                "/dev/null to use only the drop-ins")))
            continue
        sources.append(Source(path, text, hidden))
    if issues:
        raise ConfigErrors(issues)
    return Discovery(tuple(sources), tuple(masked), tuple(shadowed), main_present)


def with_candidate(discovery: Discovery, main: str, path: str, name: str) -> Discovery:
    """The discovery as if the fragment at ``path`` (a file on this machine) were installed as
    ``/etc/pmem.d/NAME``: it shadows fragments of that name and is merged in name order."""
    if not name.endswith(".yaml") or "/" in name or not name.isprintable():
        raise ConfigErrors([ConfigIssue(Loc(path, 1, 1), "", (
            f"{name!r} is not a drop-in file name; use a name like 50-mine.yaml (--as NAME)"))])
    text = read_config_file(Root(), path)
    if isinstance(text, ConfigIssue):
        raise ConfigErrors([text])

    def name_of(src: Source) -> str:
        return name if src.path == path else src.path.rsplit("/", 1)[-1]

    head = [src for src in discovery.sources if src.path == main]
    same = tuple(src.path for src in discovery.sources if src.path != main and name_of(src) == name)
    frags = [src for src in discovery.sources if src.path != main and src.path not in same]
    frags = sorted([*frags, Source(path, text, same)], key=name_of)
    return replace(discovery, sources=(*head, *frags), shadowed=(*discovery.shadowed, *same))
