"""The config core, pure: drop-in merge with provenance, and validation (YAML in ``yamldoc``).

Maps merge, everything else (scalars, lists) is replaced by the later file. Errors carry
``file:line:col`` and the key path, and all of them are reported, not just the first.
"""


from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pmemd.frozen import frozen
from pmemd.model import NAME_RE, Config, ValidationError, token
from pmemd.units import parse_size
from pmemd.yamldoc import MAX_REPORTED, ConfigErrors, ConfigIssue, Doc, Loc, load_yaml


@frozen
class Source:
    """One config file as found on disk (after shadowing)."""

    path: str  # host path
    text: str
    shadows: tuple[str, ...] = ()


@frozen
class Discovery:
    sources: tuple[Source, ...]
    masked: tuple[str, ...]  # host paths of masking files
    shadowed: tuple[str, ...]  # host paths hidden by a same-named file of higher precedence
    main_present: bool


# --- merge ---------------------------------------------------------------------------------

# Keys whose disagreement between two files is an error, not last-wins: they decide which
# physical memory is reserved, and so what may be formatted.
_DESTRUCTIVE_KEYS = {"size", "offset"}


@frozen
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


@frozen
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
    path = _error_path(err, merged)
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
    return ConfigIssue(loc, ".".join(path), _error_message(err, path, merged))


def _error_path(err: Any, merged: Merged) -> tuple[str, ...]:
    """The key path of a pydantic error, as far as the merged data has it."""
    path: tuple[str, ...] = ()
    node: Any = merged.data
    loc = tuple(str(part) for part in err["loc"])
    if loc[-1:] == ("__key__",) and isinstance(node := _node_at(merged.data, loc[:-1]), dict):
        # a bad mapping key: pydantic names no key, the first one that fails the check is it
        loc = (*loc[:-1], next((k for k in map(str, node) if not re.fullmatch(NAME_RE, k)), "__key__"))
        node = merged.data
    for key in loc:
        if isinstance(node, dict) and key in node:
            node = node[key]
            path = (*path, key)
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
            path = (*path, key)
        elif err["type"] in ("value_error.extra", "value_error.missing") and isinstance(node, dict):
            path = (*path, key)
            break
        else:
            break
    return path


def _node_at(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if isinstance(data, dict) and key in data:
            data = data[key]
        elif isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        else:
            return None
    return data


# pmemd's wording of pydantic's type errors (the ones this model can raise)
_TYPE_MESSAGES = {
    "type_error.str": "expected a string",
    "type_error.dict": "expected a mapping (key: value pairs)",
    "type_error.tuple": "expected a list",
    "type_error.none.not_allowed": "must have a value (it is empty)",
}


def _error_message(err: Any, path: tuple[str, ...], merged: Merged) -> str:
    msg = str(err["msg"])
    kind = err["type"]
    if kind == "value_error.extra":
        allowed = _allowed_keys(path[:-1])
        msg = f"unknown key {token(path[-1])}" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
    elif kind == "value_error.missing":
        msg = f"required key {token(path[-1])} is missing"
    elif kind == "value_error.const" and path == ("version",):
        msg = "version must be 1 (the only config format so far)"
    elif kind == "type_error.enum":
        choices = ", ".join(token(getattr(v, "value", v)) for v in err.get("ctx", {}).get("enum_values", ()))
        msg = f"{token(_node_at(merged.data, path))} is not allowed; allowed: {choices}"
    elif kind in _TYPE_MESSAGES:
        msg = f"{_TYPE_MESSAGES[kind]}, not {token(_node_at(merged.data, path))}"
    return msg


def _allowed_keys(path: tuple[str, ...]) -> list[str]:
    from pmemd.model import Filesystem, Mount, Namespace, Settings

    if not path:
        return Config.field_names()
    if path == ("settings",):
        return Settings.field_names()
    if len(path) == 2 and path[0] == "namespaces":
        return Namespace.field_names()
    if len(path) == 3 and path[0] == "namespaces":
        if path[2] == "filesystem":
            return Filesystem.field_names()
        if path[2] == "mount":
            return Mount.field_names()
    return []
