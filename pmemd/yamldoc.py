"""Strict YAML with locations. Pure: text in, plain values (and where each was written) out.

The work per file is bounded (pmem.yaml(5), LIMITS): at most ``MAX_CONFIG_BYTES`` of UTF-8, at
most ``MAX_NODES`` YAML values nested at most ``MAX_DEPTH`` deep, no aliases (an alias is a
pointer: nine levels of nine of them expand a few hundred bytes into hundreds of millions of
values) and no explicit tags. A message never quotes more of a file than the offending token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from pmemd.frozen import frozen
from pmemd.model import token

# A real config is a few KiB: one namespace is about ten lines. The limits are far above that
# and far below what would keep pmemd (and the daemon, which re-reads on every save) busy.
MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 32  # the config itself nests 5 deep (namespaces.x.filesystem.options.0)
MAX_NODES = 50_000  # values per file; 64 namespaces of 20 values each are 1,280
MAX_REPORTED = 50  # issues printed from one validation; the rest are counted


@frozen
class Loc:
    file: str
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@frozen
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


# --- parsing ---------------------------------------------------------------------------


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
        return _construct_map(file, node, path, doc, issues)
    if isinstance(node, yaml.SequenceNode):
        return [_construct(file, item, (*path, str(i)), doc, issues) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    return _scalar(file, node, path, issues)


def _construct_map(file: str, node: yaml.MappingNode, path: tuple[str, ...], doc: Doc,
                   issues: list[ConfigIssue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        problem = _key_problem(key_node)
        if problem:
            issues.append(ConfigIssue(_mark(file, key_node), ".".join(path), problem))
            continue
        key = key_node.value
        sub = (*path, key)
        if key in out:
            first = doc.key_locs[sub]
            issues.append(ConfigIssue(_mark(file, key_node), ".".join(sub),
                                      f"duplicate key (first set at line {first.line}); remove one of them"))
            continue
        doc.key_locs[sub] = _mark(file, key_node)
        out[key] = _construct(file, value_node, sub, doc, issues)
    return out


def _key_problem(key_node: yaml.Node) -> str | None:
    if key_node.tag == "tag:yaml.org,2002:merge":
        return "YAML merge keys (<<) are not supported; write the keys out"
    if isinstance(key_node, yaml.ScalarNode) and key_node.tag == "tag:yaml.org,2002:str":
        return None
    got = (token(key_node.value) if isinstance(key_node, yaml.ScalarNode)
           else "a list" if isinstance(key_node, yaml.SequenceNode) else "a map")
    return f"keys must be plain strings, got {got}"


def _scalar(file: str, node: yaml.ScalarNode, path: tuple[str, ...], issues: list[ConfigIssue]) -> Any:
    """A scalar's value by its resolved tag (tags written in the file are refused while composing)."""
    tag, value = node.tag, node.value
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        return value.lower() == "true"
    if tag == "tag:yaml.org,2002:int":
        return _integer(file, node, path, issues)
    if tag == "tag:yaml.org,2002:float":
        try:
            return float(value)
        except ValueError:
            issues.append(ConfigIssue(_mark(file, node), ".".join(path), f"{token(value)} is not a number"))
    return value


def _integer(file: str, node: yaml.ScalarNode, path: tuple[str, ...], issues: list[ConfigIssue]) -> Any:
    value = node.value
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
