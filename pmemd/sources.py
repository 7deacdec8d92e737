"""Config sources on disk: finding drop-ins, permission checks, reading.

Precedence follows systemd: a fragment in ``/etc/pmem.d`` shadows one of the same file name in
``/run/pmem.d``, which shadows ``/usr/lib/pmem.d``; an empty file or a symlink to ``/dev/null``
masks. ``/etc/pmem.yaml`` is merged first, then the remaining fragments in lexical order of their
file names.
"""

from __future__ import annotations

import os
import stat

from pmemd.config import ConfigErrors, ConfigIssue, Discovery, Loc, Source
from pmemd.fsroot import Root

MAIN_CONFIG = "/etc/pmem.yaml"
DROPIN_DIRS = ("/etc/pmem.d", "/run/pmem.d", "/usr/lib/pmem.d")  # highest precedence first


def _is_dev_null(root: Root, path: str) -> bool:
    real = root.join(path)
    return real.is_symlink() and os.readlink(real) == "/dev/null"


def _is_mask(root: Root, path: str) -> bool:
    real = root.join(path)
    if _is_dev_null(root, path):
        return True
    try:
        return real.stat().st_size == 0
    except FileNotFoundError:
        return False


def check_permissions(root: Root, path: str) -> str | None:
    """Why ``path`` must not be trusted, or None. Config can trigger mkfs: root-only writes."""
    st = root.stat(path)
    if st is None:
        return None
    allowed_owners = {0, os.geteuid()}
    if st.st_uid not in allowed_owners:
        return f"owned by uid {st.st_uid}, not root; run: chown root: {path}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); run: chmod go-w {path}"
    return None


def discover(root: Root, main: str = MAIN_CONFIG, dropin_dirs: tuple[str, ...] = DROPIN_DIRS,
             main_root: Root | None = None) -> tuple[list[tuple[str, tuple[str, ...]]], list[str], list[str], bool]:
    """Find config files: [(path, shadowed paths)], masked, shadowed, main present.

    ``main_root`` is where the main file lives when ``--config`` names a file outside the root.
    """
    mroot = main_root or root
    by_name: dict[str, list[str]] = {}
    for directory in dropin_dirs:
        for name in root.listdir(directory):
            if name.endswith(".yaml") and not name.startswith("."):
                by_name.setdefault(name, []).append(f"{directory}/{name}")
    chosen: list[tuple[str, tuple[str, ...]]] = []
    masked: list[str] = []
    shadowed: list[str] = []
    main_present = mroot.join(main).is_file() or mroot.join(main).is_symlink()
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


def read_sources(root: Root, main: str = MAIN_CONFIG, dropin_dirs: tuple[str, ...] = DROPIN_DIRS,
                 main_root: Root | None = None) -> Discovery:
    """Read every effective config file; refuse files non-root users could have written."""
    chosen, masked, shadowed, main_present = discover(root, main, dropin_dirs, main_root)
    issues: list[ConfigIssue] = []
    sources: list[Source] = []
    for path, hidden in chosen:
        where = (main_root or root) if path == main else root
        why = check_permissions(where, path)
        if why:
            issues.append(ConfigIssue(Loc(path, 1, 1), "", f"refused: {why}"))
            continue
        text = where.read_text(path)
        if text is None:
            issues.append(ConfigIssue(Loc(path, 1, 1), "", "cannot be read"))
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


