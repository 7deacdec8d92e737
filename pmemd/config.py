"""The config core, pure: strict YAML with locations, drop-in merge with provenance, validation.

Maps merge, everything else (scalars, lists) is replaced by the later file. Errors carry
``file:line:col`` and the key path, and all of them are reported, not just the first.

The work per file is bounded (pmem.yaml(5), LIMITS): at most ``MAX_CONFIG_BYTES`` of UTF-8, at
most ``MAX_NODES`` YAML values nested at most ``MAX_DEPTH`` deep, no aliases (an alias is a
pointer: nine levels of nine of them expand a few hundred bytes into hundreds of millions of
values) and no explicit tags. A message never quotes more of a file than the offending token.
"""


from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from pmemd.model import Config, token
from pmemd.units import parse_size

# A real config is a few KiB: one namespace is about ten lines. The limits are far above that
# and far below what would keep pmemd (and the daemon, which re-reads on every save) busy.
MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 32  # the config itself nests 5 deep (namespaces.x.filesystem.options.0)
MAX_NODES = 50_000  # values per file; 64 namespaces of 20 values each are 1,280
MAX_REPORTED = 50  # issues printed from one validation; the rest are counted


@dataclass(frozen=True)
class Loc:
    file: str
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class ConfigIssue:
    """One problem with the config, printed as ``file:line:col: key.path: message``."""

    loc: Loc | None
    keypath: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.loc}: " if self.loc else ""
        key = f"{self.keypath}: " if self.keypath else ""
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{where}{prefix}{key}{self.message}"


class ConfigErrors(Exception):
    def __init__(self, issues: list[ConfigIssue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


@dataclass(frozen=True)
class Source:
    """One config file as found on disk (after shadowing)."""

    path: str  # host path
    text: str
    shadows: tuple[str, ...] = ()


@dataclass(frozen=True)
class Discovery:
    sources: tuple[Source, ...]
    masked: tuple[str, ...]  # host paths of masking files
    shadowed: tuple[str, ...]  # host paths hidden by a same-named file of higher precedence
    main_present: bool


# --- strict YAML ---------------------------------------------------------------------------


_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """YAML with YAML 1.2-like scalars: only true/false are booleans, no sexagesimal or octal
    ints, no ``on``/``yes``. Everything else is a string, so a model validator sees what the
    user wrote (``0755``, ``010G``) and can say what is wrong with it."""


_StrictLoader.yaml_implicit_resolvers = {}
for _tag, _regexp, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    ("tag:yaml.org,2002:float", r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$",
     list("-+0123456789.")),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    # Resolved only so that _construct can reject merge keys with a clear message.
    ("tag:yaml.org,2002:merge", r"^(?:<<)$", ["<"]),
):
    _StrictLoader.add_implicit_resolver(_tag, re.compile(_regexp), _first)


@dataclass
class Doc:
    """A loaded YAML document: plain data plus the location of every key and value."""

    data: Any
    key_locs: dict[tuple[str, ...], Loc] = field(default_factory=dict)
    value_locs: dict[tuple[str, ...], Loc] = field(default_factory=dict)


def _mark(file: str, node: yaml.Node) -> Loc:
    return Loc(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _loc_at(path: str, text: str, index: int) -> Loc:
    """file:line:col of a character index in ``text``."""
    line = text.count("\n", 0, index) + 1
    return Loc(path, line, index - (text.rfind("\n", 0, index) + 1) + 1)


_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
         (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


def decode_config(path: str, data: bytes) -> str:
    """A config file's bytes as text: UTF-8 (a UTF-8 byte-order mark is allowed), nothing else."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigErrors([ConfigIssue(Loc(path, 1, 1), "", _too_large(len(data)))])
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            raise ConfigErrors([ConfigIssue(Loc(path, 1, 1), "", (
                f"is encoded as {encoding} (it starts with a byte-order mark); pmemd reads UTF-8: "
                f"convert it, e.g. iconv -f {encoding} -t UTF-8"))])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = data[: exc.start].decode("utf-8")
        raise ConfigErrors([ConfigIssue(_loc_at(path, good, len(good)), "", (
            f"byte 0x{data[exc.start]:02x} is not valid UTF-8; pmemd reads config files as UTF-8: "
            "convert the file (e.g. iconv -f LATIN1 -t UTF-8) or remove the byte"))]) from None


def _too_large(size: int) -> str:
    return (f"is {size} bytes, more than the {MAX_CONFIG_BYTES >> 10} KiB pmemd reads from one "
            "config file (see pmem.yaml(5), LIMITS); split it or remove what is not config")


class _Refused(Exception):
    """Composing stopped at a limit; carries the one issue that says which."""

    def __init__(self, issue: ConfigIssue) -> None:
        super().__init__(str(issue))
        self.issue = issue


def load_yaml(path: str, text: str) -> Doc:
    """Parse one YAML document strictly; raises ConfigErrors with file:line:col."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigErrors([ConfigIssue(Loc(path, 1, 1), "", _too_large(len(text)))])
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # text decoded with surrogateescape: not UTF-8 on disk
        raise ConfigErrors([ConfigIssue(_loc_at(path, text, exc.start), "", (
            "is not valid UTF-8 here; pmemd reads config files as UTF-8: convert the file"))]) from None
    issues: list[ConfigIssue] = []
    try:
        node = _compose(path, text, issues)
    except _Refused as exc:
        raise ConfigErrors([exc.issue]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Loc(path, mark.line + 1, mark.column + 1) if mark else Loc(path, 1, 1)
        # problem and context are fixed phrases ("found character '\\t' that cannot start any
        # token"); the exception's own text would add a snippet of the file.
        what = exc.problem or exc.context or type(exc).__name__
        raise ConfigErrors([ConfigIssue(loc, "", f"YAML syntax: {what}")]) from None
    except yaml.reader.ReaderError as exc:
        loc = _loc_at(path, text, min(max(exc.position, 0), len(text)))
        raise ConfigErrors([ConfigIssue(loc, "", (
            f"character #x{exc.character:04x} is not allowed in YAML ({exc.reason}); remove it"
            if isinstance(exc.character, int) else f"YAML: {exc.reason}"))]) from None
    except yaml.YAMLError as exc:
        raise ConfigErrors([ConfigIssue(Loc(path, 1, 1), "", f"YAML: {type(exc).__name__}")]) from None
    doc = Doc(data=None)
    if node is None and issues:
        raise ConfigErrors(issues)
    if node is None:
        doc.data = {}
        return doc
    doc.data = _construct(path, node, (), doc, issues)
    if issues:
        raise ConfigErrors(issues)
    return doc


_PLAIN_TAGS = {"tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


def _compose(path: str, text: str, issues: list[ConfigIssue]) -> yaml.Node | None:
    """The node tree of a single-document stream, built from parser events without recursion.

    Refuses aliases and explicit tags (as issues) and stops at ``MAX_DEPTH`` and ``MAX_NODES``
    (raising _Refused), so the tree is small and acyclic whatever the text.
    """
    loader = _StrictLoader(text)
    try:
        loader.get_event()  # StreamStartEvent
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # DocumentStartEvent
        root: yaml.Node | None = None
        # Open collections: (node, pending key) - a map's key waits here for its value.
        stack: list[list[Any]] = []
        count = 0
        while True:
            event = loader.get_event()
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                node = stack.pop()[0]
                node.end_mark = event.end_mark
            elif isinstance(event, yaml.DocumentEndEvent):
                break
            else:
                count += 1
                if count > MAX_NODES:
                    raise _Refused(ConfigIssue(_event_loc(path, event), "", (
                        f"more than {MAX_NODES} YAML values in one file (see pmem.yaml(5), LIMITS); "
                        "this is not a pmemd config: remove what does not belong")))
                node = _node(path, loader, event, issues)
                if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
                    if len(stack) >= MAX_DEPTH:
                        raise _Refused(ConfigIssue(_event_loc(path, event), "", (
                            f"YAML nested more than {MAX_DEPTH} levels deep (see pmem.yaml(5), "
                            "LIMITS); a pmemd config nests 5 levels: flatten it")))
                    _attach(stack, node)
                    stack.append([node, None])
                    continue
                _attach(stack, node)
            if not stack:
                root = node
        if not loader.check_event(yaml.StreamEndEvent):
            extra = loader.get_event()
            issues.append(ConfigIssue(_event_loc(path, extra), "", (
                "a second YAML document ('---'); a config file holds one: move it to its own file")))
        return root
    finally:
        loader.dispose()


def _event_loc(path: str, event: Any) -> Loc:
    mark = event.start_mark
    return Loc(path, mark.line + 1, mark.column + 1) if mark else Loc(path, 1, 1)


def _node(path: str, loader: Any, event: Any, issues: list[ConfigIssue]) -> Any:
    start: Any = event.start_mark
    end: Any = event.end_mark
    if isinstance(event, yaml.AliasEvent):
        if not any(i.message.startswith("YAML aliases") for i in issues):  # one per file is enough
            name = event.anchor or ""
            anchor = name if len(name) <= 32 else name[:29] + "..."
            issues.append(ConfigIssue(_event_loc(path, event), "", (
                f"YAML aliases (*{anchor}) are not supported; write the value out at each place")))
        return yaml.ScalarNode("tag:yaml.org,2002:null", "", start, end)
    tag = event.tag
    if isinstance(event, yaml.ScalarEvent):
        if tag is None or tag == "!":
            tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        elif tag not in _PLAIN_TAGS:
            issues.append(_tag_issue(path, event, tag))
            tag = "tag:yaml.org,2002:str"  # refused above; kept as text so nothing converts it
        return yaml.ScalarNode(tag, event.value, start, end, style=event.style)
    kind = yaml.SequenceNode if isinstance(event, yaml.SequenceStartEvent) else yaml.MappingNode
    default = "tag:yaml.org,2002:seq" if kind is yaml.SequenceNode else "tag:yaml.org,2002:map"
    if tag is not None and tag not in ("!", default):
        issues.append(_tag_issue(path, event, tag))
    return kind(default, [], start, None, flow_style=event.flow_style)


def _tag_issue(path: str, event: Any, tag: str) -> ConfigIssue:
    shown = "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag
    return ConfigIssue(_event_loc(path, event), "", (
        f"YAML tag {token(shown)} is not supported; write a plain value (quote it to make it a string)"))


def _attach(stack: list[list[Any]], node: yaml.Node) -> None:
    if not stack:
        return
    top = stack[-1]
    parent = top[0]
    if isinstance(parent, yaml.SequenceNode):
        parent.value.append(node)
    elif top[1] is None:
        top[1] = node
    else:
        parent.value.append((top[1], node))
        top[1] = None


def _construct(file: str, node: yaml.Node, path: tuple[str, ...], doc: Doc,
               issues: list[ConfigIssue]) -> Any:
    doc.value_locs[path] = _mark(file, node)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                issues.append(ConfigIssue(_mark(file, key_node), ".".join(path),
                                          "YAML merge keys (<<) are not supported; write the keys out"))
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                got = (token(key_node.value) if isinstance(key_node, yaml.ScalarNode)
                       else "a list" if isinstance(key_node, yaml.SequenceNode) else "a map")
                issues.append(ConfigIssue(_mark(file, key_node), ".".join(path),
                                          f"keys must be plain strings, got {got}"))
                continue
            key = key_node.value
            sub = (*path, key)
            if key in out:
                first = doc.key_locs[sub]
                issues.append(ConfigIssue(_mark(file, key_node), ".".join(sub),
                                          f"duplicate key (first set at line {first.line}); "
                                          "remove one of them"))
                continue
            doc.key_locs[sub] = _mark(file, key_node)
            out[key] = _construct(file, value_node, sub, doc, issues)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(file, item, (*path, str(i)), doc, issues) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    tag, value = node.tag, node.value
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        return value.lower() == "true"
    if tag == "tag:yaml.org,2002:int":
        digits = value.lstrip("+-")
        if len(digits) > 40:  # 2**64 has 20 decimal digits; int() refuses 4,300 and more
            issues.append(ConfigIssue(_mark(file, node), ".".join(path), (
                f"a number of {len(digits)} digits is far beyond 64 bits; sizes and offsets "
                "are at most 16E (2^64 - 1 bytes)")))
            return value
        try:
            return int(value, 16) if value.startswith("0x") else int(value)
        except ValueError:  # the implicit resolver only matches integers; kept as a guard
            issues.append(ConfigIssue(_mark(file, node), ".".join(path), f"{token(value)} is not an integer"))
            return value
    if tag == "tag:yaml.org,2002:float":
        try:
            return float(value)
        except ValueError:
            issues.append(ConfigIssue(_mark(file, node), ".".join(path), f"{token(value)} is not a number"))
            return value
    if tag == "tag:yaml.org,2002:str":
        return value
    # Tags are refused while composing; only merge keys' values etc. get here.
    return value


# --- merge ---------------------------------------------------------------------------------

# Keys whose disagreement between two files is an error, not last-wins: they decide which
# physical memory is reserved, and so what may be formatted.
_DESTRUCTIVE_KEYS = {"size", "offset"}


@dataclass(frozen=True)
class Origin:
    loc: Loc
    overrides: tuple[Loc, ...] = ()


@dataclass
class Merged:
    data: dict[str, Any]
    origins: dict[tuple[str, ...], Origin]  # leaf path -> where it was set
    key_locs: dict[tuple[str, ...], Loc]  # any path -> where its key was last written


def merge(docs: list[tuple[str, Doc]]) -> Merged:
    """Merge documents in order; raise ConfigErrors for destructive-key conflicts."""
    merged = Merged({}, {}, {})
    issues: list[ConfigIssue] = []
    for path, doc in docs:
        if doc.data is None:
            continue
        if not isinstance(doc.data, dict):
            issues.append(ConfigIssue(doc.value_locs.get((), Loc(path, 1, 1)), "",
                                      "the top level must be a map (version:, settings:, namespaces:)"))
            continue
        _merge_into(merged.data, doc.data, (), doc, merged, issues)
    if issues:
        raise ConfigErrors(issues)
    return merged


def _merge_into(dst: dict[str, Any], src: dict[str, Any], path: tuple[str, ...], doc: Doc,
                merged: Merged, issues: list[ConfigIssue]) -> None:
    for key, value in src.items():
        sub = (*path, key)
        loc = doc.value_locs.get(sub) or doc.key_locs[sub]
        merged.key_locs[sub] = doc.key_locs[sub]
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge_into(dst[key], value, sub, doc, merged, issues)
            continue
        previous = merged.origins.get(sub)
        if key in dst and previous is not None:
            is_ns_key = len(sub) == 3 and sub[0] == "namespaces" and key in _DESTRUCTIVE_KEYS
            if is_ns_key and not _same_amount(dst[key], value) and previous.loc.file != loc.file:
                prev_file = previous.loc.file
                # Only a lower-precedence drop-in can be shadowed; /etc/pmem.yaml and
                # /etc/pmem.d files can only be edited.
                shadow = ("/pmem.d/" in prev_file and not prev_file.startswith("/etc/pmem.d/"))
                issues.append(ConfigIssue(
                    loc, ".".join(sub),
                    f"conflicts with {previous.loc} ({token(dst[key])} there, {token(value)} here); "
                    "this key decides which memory is reserved, so pmemd does not pick one: "
                    "remove it from one file"
                    + (f", or shadow {prev_file} with a file of the same name in /etc/pmem.d"
                       if shadow else "")))
                continue
            overrides: tuple[Loc, ...] = (*previous.overrides, previous.loc)
        else:
            overrides = ()
        if isinstance(dst.get(key), dict) and dst[key]:
            # A map replaced by a scalar or list: forget where its leaves were set. Only then:
            # a scan of every origin per key would make merging quadratic in the key count.
            for stale in [p for p in merged.origins if p[: len(sub)] == sub and p != sub]:
                del merged.origins[stale]
        dst[key] = value
        _record_leaves(value, sub, doc, merged, overrides)


def _same_amount(a: Any, b: Any) -> bool:
    """Whether two spellings of a size/offset mean the same bytes (``1G`` == ``1024M``)."""
    if a == b:
        return True
    try:
        return parse_size(a) == parse_size(b)
    except ValueError:  # SizeError too
        return False  # e.g. "auto" against a number, or an invalid value (validation reports it)


def _record_leaves(value: Any, path: tuple[str, ...], doc: Doc, merged: Merged,
                   overrides: tuple[Loc, ...]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            merged.key_locs[(*path, k)] = doc.key_locs[(*path, k)]
            _record_leaves(v, (*path, k), doc, merged, ())
        return
    loc = doc.value_locs.get(path) or doc.key_locs[path]
    merged.origins[path] = Origin(loc, overrides)


def iter_leaves(data: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(data, dict) and data:
        for k, v in data.items():
            yield from iter_leaves(v, (*path, k))
    else:
        yield path, data


# --- validation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """The effective config and where each of its values came from."""

    config: Config
    merged: Merged
    discovery: Discovery

    def origin(self, *path: str) -> Loc | None:
        """Where a key was set; for a key left at its default, where its nearest parent is."""
        while path:
            o = self.merged.origins.get(path)
            loc = o.loc if o else self.merged.key_locs.get(path)
            if loc:
                return loc
            path = path[:-1]
        return None


def build(discovery: Discovery) -> Loaded:
    """Parse, merge and validate every source; all problems in one ConfigErrors."""
    issues: list[ConfigIssue] = []
    docs: list[tuple[str, Doc]] = []
    for source in discovery.sources:
        try:
            docs.append((source.path, load_yaml(source.path, source.text)))
        except ConfigErrors as exc:
            issues.extend(exc.issues)
    if issues:
        raise ConfigErrors(issues)
    merged = merge(docs)
    data = dict(merged.data)
    if "version" not in data and not docs:
        data["version"] = 1  # no files at all: the empty config
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        fallback = Loc(docs[0][0], 1, 1) if docs else None
        errors = exc.errors()
        found = [_issue(err, merged, fallback) for err in errors[:MAX_REPORTED]]
        if len(errors) > MAX_REPORTED:
            found.append(ConfigIssue(found[-1].loc, "", (
                f"and {len(errors) - MAX_REPORTED} more errors not shown; fix these first")))
        raise ConfigErrors(found) from None
    mounts = _check_mounts(config, merged)
    if mounts:
        raise ConfigErrors(mounts)
    return Loaded(config, merged, discovery)


def _check_mounts(config: Config, merged: Merged) -> list[ConfigIssue]:
    """Two namespaces on one mount point, or one mounted inside another's: both lines named.

    A mount inside another would hide the inner one or be hidden by it, depending on the order
    of mounting; pmemd refuses both instead of choosing.
    """
    issues: list[ConfigIssue] = []
    by_path: dict[str, str] = {}
    for name in sorted(config.namespaces):
        mount = config.namespaces[name].mount
        if mount is not None:
            by_path.setdefault(mount.path, name)

    def loc(name: str) -> Loc | None:
        origin = merged.origins.get(("namespaces", name, "mount", "path"))
        return origin.loc if origin else merged.key_locs.get(("namespaces", name))

    for name in sorted(config.namespaces):
        mount = config.namespaces[name].mount
        if mount is None:
            continue
        key = f"namespaces.{name}.mount.path"
        first = by_path[mount.path]
        if first != name:
            issues.append(ConfigIssue(loc(name), key, (
                f"{mount.path} is also the mount path of namespace {first} (at {loc(first)}); "
                "give each namespace its own mount point")))
            continue
        parent = mount.path.rpartition("/")[0]
        while parent:
            outer = by_path.get(parent)
            if outer is not None:
                issues.append(ConfigIssue(loc(name), key, (
                    f"{mount.path} lies inside {parent}, the mount path of namespace {outer} (at "
                    f"{loc(outer)}); mount points must not nest: move one of them")))
                break
            parent = parent.rpartition("/")[0]
    return issues


def _issue(err: Any, merged: Merged, fallback: Loc | None = None) -> ConfigIssue:
    path: tuple[str, ...] = ()
    node: Any = merged.data
    for part in err["loc"]:
        key = str(part)
        if isinstance(node, dict) and key in node:
            node = node[key]
            path = (*path, key)
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
            path = (*path, key)
        elif err["type"] in ("extra_forbidden", "missing") and isinstance(node, dict):
            path = (*path, key)
            break
        else:
            break
    loc = None
    probe = path
    while probe and loc is None:
        origin = merged.origins.get(probe)
        loc = origin.loc if origin else merged.key_locs.get(probe)
        probe = probe[:-1]
    if loc is None and merged.key_locs:
        loc = next(iter(merged.key_locs.values()))
    if loc is None:
        loc = fallback  # a file with no keys at all (only comments): still name it
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(path[:-1])
        msg = f"unknown key {token(path[-1])}" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
    elif err["type"] == "missing":
        msg = f"required key {token(path[-1])} is missing"
    elif err["type"] == "literal_error" and path == ("version",):
        msg = "version must be 1 (the only config format so far)"
    elif err["type"] == "enum":
        msg = f"{token(err.get('input'))} is not allowed; {err['msg'].lower()}"
    elif err["type"] == "string_pattern_mismatch" and len(path) == 2 and path[0] == "namespaces":
        msg = ("namespace names are 1-32 characters of lower-case letters, digits, '-' and '_', "
               "starting with a letter or digit")
    return ConfigIssue(loc, ".".join(path), msg)


def _allowed_keys(path: tuple[str, ...]) -> list[str]:
    from pmemd.model import Filesystem, Mount, Namespace, Settings

    if not path:
        return list(Config.model_fields)
    if path == ("settings",):
        return list(Settings.model_fields)
    if len(path) == 2 and path[0] == "namespaces":
        return list(Namespace.model_fields)
    if len(path) == 3 and path[0] == "namespaces":
        if path[2] == "filesystem":
            return list(Filesystem.model_fields)
        if path[2] == "mount":
            return list(Mount.model_fields)
    return []
