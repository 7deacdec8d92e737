"""The JSON Schema of pmem.yaml, in draft-07 (what editors' YAML language servers support). Pure."""

from __future__ import annotations

from typing import Any

from pmemd.model import Config

DRAFT_07 = "http://json-schema.org/draft-07/schema#"


def json_schema(*, main: bool = False) -> dict[str, Any]:
    """JSON Schema draft-07 of the config (what editors' YAML language servers support).

    By default one schema for both kinds of file: ``version`` is optional, as in a drop-in
    fragment (pmemd itself still requires it in /etc/pmem.yaml). ``main=True`` gives the stricter
    schema of /etc/pmem.yaml alone.
    """
    schema: dict[str, Any] = _draft07(Config.schema())
    schema["$schema"] = DRAFT_07
    schema["title"] = "pmem.yaml"
    if main:
        schema["description"] = "/etc/pmem.yaml, the main config file of pmemd (pmem.yaml(5))."
    else:
        schema.pop("required", None)
        schema["description"] = ("/etc/pmem.yaml or a fragment in /usr/lib/pmem.d, /run/pmem.d, "
                                 "/etc/pmem.d (pmem.yaml(5)); version: 1 is required in /etc/pmem.yaml.")
    return schema


def _draft07(node: Any) -> Any:
    """Draft-07 terms: ``definitions`` for ``$defs``, and a ``$ref`` alone in its object (draft-07
    ignores the keywords beside one)."""
    if isinstance(node, list):
        return [_draft07(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {("definitions" if k == "$defs" else k): _draft07(v) for k, v in node.items()}
    if isinstance(out.get("$ref"), str):
        out["$ref"] = out["$ref"].replace("#/$defs/", "#/definitions/")
    if "$ref" in out and len(out) > 1:
        ref = out.pop("$ref")
        keep = {k: out.pop(k) for k in ("description", "title", "default") if k in out}
        out = {**keep, "allOf": [{"$ref": ref}, *([out] if out else [])]}
    return out
