"""The config core, pure: strict YAML with locations, drop-in merge with provenance, validation.

Maps merge, everything else (scalars, lists) is replaced by the later file. Errors carry
``file:line:col`` and the key path, and all of them are reported, not just the first.
"""


from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from pmemd.model import Config
from pmemd.units import SizeError, parse_size


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


def load_yaml(path: str, text: str) -> Doc:
    """Parse one YAML document strictly; raises ConfigErrors with file:line:col."""
    try:
        node = yaml.compose(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Loc(path, mark.line + 1, mark.column + 1) if mark else Loc(path, 1, 1)
        raise ConfigErrors([ConfigIssue(loc, "", f"YAML syntax: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigErrors([ConfigIssue(Loc(path, 1, 1), "", f"YAML: {exc}")]) from None
    doc = Doc(data=None)
    issues: list[ConfigIssue] = []
    if node is None:
        doc.data = {}
        return doc
    doc.data = _construct(path, node, (), doc, issues)
    if issues:
        raise ConfigErrors(issues)
    return doc


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
                issues.append(ConfigIssue(_mark(file, key_node), ".".join(path),
                                          f"keys must be plain strings, got {key_node.value!r}"))
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
        return int(value, 16) if value.startswith("0x") else int(value)
    if tag == "tag:yaml.org,2002:float":
        return float(value)
    if tag == "tag:yaml.org,2002:str":
        return value
    issues.append(ConfigIssue(_mark(file, node), ".".join(path),
                              f"YAML tag {tag} is not supported; write a plain value"))
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
                    f"conflicts with {previous.loc} ({dst[key]!r} there, {value!r} here); "
                    "this key decides which memory is reserved, so pmemd does not pick one: "
                    "remove it from one file"
                    + (f", or shadow {prev_file} with a file of the same name in /etc/pmem.d"
                       if shadow else "")))
                continue
            overrides: tuple[Loc, ...] = (*previous.overrides, previous.loc)
        else:
            overrides = ()
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
    except SizeError:
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
        raise ConfigErrors([_issue(err, merged, fallback) for err in exc.errors()]) from None
    return Loaded(config, merged, discovery)


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
        msg = f"unknown key {path[-1]!r}" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
    elif err["type"] == "missing":
        msg = f"required key {path[-1]!r} is missing"
    elif err["type"] == "literal_error" and path == ("version",):
        msg = "version must be 1 (the only config format so far)"
    elif err["type"] == "enum":
        msg = f"{err.get('input')!r} is not allowed; {err['msg'].lower()}"
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
