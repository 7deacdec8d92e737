"""The syntax of boot-loader files, parsed and rendered. Pure: text in, values out.

Shared by the layouts in this package. These read what a boot loader will pass to the next
kernel; they never evaluate a shell.
``/etc/default/grub`` and its drop-ins are POSIX shell: pmemd reads their simple
``VAR="..."`` assignments (with ``$VAR`` expansion of earlier values), which is what distributions
and pmemd's own drop-in use. The authoritative next-boot line on a Debian host is the default
entry of ``/boot/grub/grub.cfg``, which ``update-grub`` generates.
"""

from __future__ import annotations

import fnmatch
import re
import shlex

from pmemd.facts import BootEntry
from pmemd.frozen import frozen

# --- /etc/default/grub ---------------------------------------------------------------------

_ASSIGN = re.compile(r"^\s*(?:export\s+)?(?P<var>GRUB_[A-Z0-9_]+)=(?P<value>.*)$")


def parse_default_grub(files: list[tuple[str, str]]) -> dict[str, str]:
    """Evaluate simple ``GRUB_*=`` assignments across files in order (later wins)."""
    env: dict[str, str] = {}
    for _path, text in files:
        for line in text.splitlines():
            m = _ASSIGN.match(line)
            if not m:
                continue
            env[m.group("var")] = _shell_value(m.group("value"), env)
    return env


def _shell_value(raw: str, env: dict[str, str]) -> str:
    """The value of a shell word like ``"$GRUB_CMDLINE_LINUX memmap=4G!12G"``."""
    out: list[str] = []
    i, n = 0, len(raw)
    quote: str | None = None
    while i < n:
        ch = raw[i]
        if quote is None and ch in " \t;":
            break  # the end of the assignment word ('#' only starts a comment at a word start)
        if ch == "'" and quote != '"':
            quote = None if quote == "'" else "'"
            i += 1
            continue
        if ch == '"' and quote != "'":
            quote = None if quote == '"' else '"'
            i += 1
            continue
        if ch == "\\" and quote != "'" and i + 1 < n:
            nxt = raw[i + 1]
            if quote is None or nxt in '$`"\\\n':
                out.append(nxt)
                i += 2
                continue
        if ch == "$" and quote != "'":
            m = re.match(r"\$(?:\{(?P<b>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<p>[A-Za-z_][A-Za-z0-9_]*))", raw[i:])
            if m:
                out.append(env.get(m.group("b") or m.group("p") or "", ""))
                i += m.end()
                continue
        out.append(ch)
        i += 1
    return "".join(out)


# --- grub.cfg ------------------------------------------------------------------------------


def grub_words(line: str) -> list[str]:
    """Split a GRUB script line into words: quotes group, backslash escapes, ``$var`` kept."""
    words: list[str] = []
    cur: list[str] = []
    have = False
    quote: str | None = None
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if quote is None and ch.isspace():
            if have:
                words.append("".join(cur))
                cur, have = [], False
            i += 1
            continue
        have = True
        if ch in "'\"" and (quote is None or quote == ch):
            quote = None if quote == ch else ch
        elif ch == "\\" and quote != "'" and i + 1 < n:
            cur.append(line[i + 1])
            i += 1
        else:
            cur.append(ch)
        i += 1
    if have:
        words.append("".join(cur))
    return words


_MENUENTRY = re.compile(r"^\s*(?P<kind>menuentry|submenu)\s+(?P<rest>.*)\{\s*$")


@frozen
class _Frame:
    """One open menuentry/submenu: its position among its siblings, title and id."""

    index: int
    title: str
    id: str
    submenu: bool

    def matches(self, spec: str) -> bool:
        return (spec.isdigit() and int(spec) == self.index) or spec in (self.title, self.id)


def _entry_id(words: list[str]) -> str:
    for i, w in enumerate(words[:-1]):
        if w in ("$menuentry_id_option", "${menuentry_id_option}", "--id"):
            return words[i + 1]
    return ""


def parse_grub_cfg(path: str, text: str, saved_entry: str | None = None) -> tuple[BootEntry, ...]:
    """Linux entries of a grub.cfg, the default one marked.

    The default follows GRUB: the last top-level ``set default`` (``${saved_entry}`` is read from
    grubenv) names an entry by number, title or id, with ``>`` between submenu levels
    (``1>2``, ``Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux …``,
    ``gnulinux-advanced-…>gnulinux-…-recovery-…``). Anything that matches nothing is entry 0.
    """
    entries: list[tuple[str, tuple[str, ...], tuple[_Frame, ...]]] = []  # title, args, menu path
    default_spec = "0"
    stack: list[_Frame] = []
    counters = [0]  # next sibling index at each open level
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not stack and re.match(r"set\s+default=", line):
            default_spec = " ".join(grub_words(line)[1:]).partition("=")[2]
            continue
        mm = _MENUENTRY.match(line)
        if mm:
            words = grub_words(mm.group("rest"))
            stack.append(_Frame(counters[-1], words[0] if words else "", _entry_id(words),
                                mm.group("kind") == "submenu"))
            counters[-1] += 1
            counters.append(0)
            continue
        if line == "}" and stack:
            stack.pop()
            counters.pop()
            continue
        words = grub_words(line)
        if words and words[0] in ("linux", "linux16", "linuxefi") and stack:
            title = " > ".join(("submenu:" if f.submenu else "") + f.title for f in stack)
            entries.append((title, tuple(words[2:]), tuple(stack)))
    if default_spec in ("${saved_entry}", "$saved_entry", "saved"):
        default_spec = saved_entry or "0"
    chosen = _grub_default(entries, default_spec)
    return tuple(BootEntry(path, t, a, default=idx == chosen) for idx, (t, a, _p) in enumerate(entries))


def _grub_default(entries: list[tuple[str, tuple[str, ...], tuple[_Frame, ...]]], spec: str) -> int | None:
    if not entries:
        return None
    parts = spec.split(">")
    for idx, (_t, _a, menu_path) in enumerate(entries):
        # A spec naming a submenu (fewer parts than levels) picks the first entry in it.
        if len(menu_path) >= len(parts) and all(f.matches(p) for f, p in zip(menu_path, parts, strict=False)):
            return idx
    for idx, (_t, _a, menu_path) in enumerate(entries):
        if menu_path[-1].title == spec:  # an entry's own title without its submenu (old habit)
            return idx
    return 0


# --- BLS / systemd-boot --------------------------------------------------------------------


def parse_bls_entry(text: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key in keys and key == "options":
            keys[key] += " " + value.strip()
        else:
            keys[key] = value.strip()
    return keys


def parse_grubenv(text: str | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (text or "").splitlines():
        if line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        if eq:
            env[key] = value
    return env


def expand_bls_options(options: str, grubenv: dict[str, str]) -> tuple[str, ...]:
    """BLS ``options`` with ``$kernelopts``-style grubenv variables expanded (as blscfg does)."""
    def sub(m: re.Match[str]) -> str:
        return grubenv.get(m.group(1) or m.group(2), "")

    expanded = re.sub(r"(?<!\\)\$(?:\{(\w+)\}|(\w+))", sub, options)
    return tuple(grub_words(expanded))


def _version_key(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name) if p]


def parse_bls_entries(files: list[tuple[str, str]], grubenv: dict[str, str],
                      default: str | None) -> tuple[BootEntry, ...]:
    """BLS entries; default = ``default`` id/title if given, else the highest version."""
    parsed = []
    for path, text in files:
        keys = parse_bls_entry(text)
        entry_id = path.rsplit("/", 1)[-1].removesuffix(".conf")
        parsed.append((path, entry_id, keys))
    parsed.sort(key=lambda p: _version_key(p[2].get("version", p[1])), reverse=True)
    chosen = 0
    if default:
        pattern = default.removesuffix(".conf")
        for idx, (_p, eid, keys) in enumerate(parsed):
            if eid == pattern or keys.get("title") == default or _glob(pattern, eid):
                chosen = idx
                break
    return tuple(
        BootEntry(path, keys.get("title", eid), expand_bls_options(keys.get("options", ""), grubenv),
                  default=idx == chosen)
        for idx, (path, eid, keys) in enumerate(parsed)
    )


def _glob(pattern: str, name: str) -> bool:
    return "*" in pattern and fnmatch.fnmatchcase(name, pattern)


def parse_kernel_cmdline_file(text: str) -> tuple[str, ...]:
    """``/etc/kernel/cmdline``: one line of arguments (comments ignored). ValueError when a quote
    is not closed: the kernel would take the rest of the line as one argument."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    try:
        return tuple(shlex.split(" ".join(lines))) if lines else ()
    except ValueError:
        raise ValueError("has a quote that is not closed; fix it by hand") from None


def render_kernel_cmdline_file(args: tuple[str, ...]) -> str:
    return " ".join(args) + "\n"
