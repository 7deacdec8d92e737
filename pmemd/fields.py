"""The field types and the base model of pmemd's config models (``pmemd.model``).

The models use pydantic's v1 API, the one API that every pydantic from 1.10 to 2.x provides
(pydantic 2 ships it as ``pydantic.v1``): the same code, and so the same validation, error
messages and JSON Schema, on Debian 12 and Ubuntu 22.04/24.04 (python3-pydantic 1.10) and on
Debian 13 (2.10). The import below is the only place that knows which pydantic is installed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeVar

try:
    from pydantic.v1 import BaseModel, Extra, Field, StrictStr, ValidationError, root_validator, validator
except ImportError:  # pydantic 1.x (before 1.10.17 it has no pydantic.v1 alias)
    from pydantic import (  # type: ignore[assignment,no-redef]
        BaseModel,
        Extra,
        Field,
        StrictStr,
        ValidationError,
        root_validator,
        validator,
    )

from pmemd.units import MAX_BYTES, MAX_DURATION, TIMESPAN_PATTERN, SizeError, parse_size, parse_timespan, token

__all__ = ["BaseModel", "Extra", "Field", "StrictStr", "ValidationError", "root_validator", "token", "validator"]


def _size(value: object) -> int:
    try:
        return parse_size(value)
    except SizeError as exc:
        raise ValueError(str(exc)) from None


def _offset(value: object) -> int | str:
    if value == "auto":
        return "auto"
    return _size(value)


# The JSON Schema of sizes is written out: the Python types (int, or int | "auto") would give a
# schema that rejects the strings the config accepts ("4G", "0x100000000").
_SIZE_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_BYTES},
              {"type": "string", "pattern": r"^(0|[1-9][0-9]{0,19}|0[xX][0-9a-fA-F]{1,16})[KMGT]?$"}],
}
_ALIGN = 128 << 20  # validate.ALIGN; repeated here only for the schema


def checked(name: str, check: Callable[[Any], Any], schema: dict[str, Any]) -> type:
    """A field type that `check` converts (it raises ValueError with pmemd's message) and whose
    JSON Schema is `schema` (plus the field's own title, description and default)."""

    def validators(cls: type) -> Iterator[Callable[[Any], Any]]:
        yield check

    def modify_schema(cls: type, field_schema: dict[str, Any]) -> None:
        field_schema.update(json.loads(json.dumps(schema)))

    return type(name, (), {"__get_validators__": classmethod(validators),
                           "__modify_schema__": classmethod(modify_schema)})


if TYPE_CHECKING:  # what the values are, for the type checker
    Size = int
    NsSize = int
    Offset = int | Literal["auto"]
    Duration = int
else:
    Size = checked("Size", _size, _SIZE_SCHEMA)
    # A namespace size: the integer form can carry the 128 MiB rule, the string form only the shape.
    NsSize = checked("NsSize", _size, {"anyOf": [
        {"type": "integer", "minimum": _ALIGN, "maximum": MAX_BYTES, "multipleOf": _ALIGN},
        _SIZE_SCHEMA["anyOf"][1]]})
    Offset = checked("Offset", _offset, {"anyOf": [
        {"type": "integer", "minimum": 4 << 30, "maximum": MAX_BYTES, "multipleOf": _ALIGN},
        _SIZE_SCHEMA["anyOf"][1], {"const": "auto"}]})

M = TypeVar("M", bound="Strict")


class Strict(BaseModel):
    # Unknown keys are errors, values are immutable. The methods are the names the rest of pmemd
    # uses, the same whichever pydantic is installed. (No docstring: pydantic would put it into
    # every model's JSON Schema.)

    class Config:
        extra = Extra.forbid
        frozen = True

        @staticmethod
        def schema_extra(schema: dict[str, Any], model: type[BaseModel]) -> None:
            # A field's Field(x_schema={...}) replaces the schema pydantic derives from its type
            # (its title and description stay).
            for prop in schema.get("properties", {}).values():
                override = prop.pop("x_schema", None)
                if override is not None:
                    for key in ("allOf", "$ref", "type", "enum", "additionalProperties"):
                        prop.pop(key, None)
                    prop.update(override)

    @classmethod
    def model_validate(cls: type[M], data: Any) -> M:
        return cls.parse_obj(data)

    def model_dump(self, *, mode: Literal["python", "json"] = "python") -> dict[str, Any]:
        if mode == "json":
            data: dict[str, Any] = json.loads(self.json())
            return data
        return self.dict()

    def model_copy(self: M, *, update: dict[str, Any]) -> M:
        return self.copy(update=update)

    @classmethod
    def field_names(cls) -> list[str]:
        return list(cls.__fields__)


def _duration(value: object) -> int:
    """Whole seconds; a span with a fraction of a second is rounded up (at least 1s)."""
    hint = "write e.g. 300, 90s, 5min, 1h30m or '2min 30s' (systemd.time(7))"
    if isinstance(value, bool):
        raise ValueError(f"expected a duration; {hint}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_timespan(value)
        except ValueError:
            raise ValueError(f"{token(value)} is not a duration; {hint}") from None
    else:
        raise ValueError(f"expected a duration; {hint}")
    if not seconds > 0:
        raise ValueError(f"a duration must be positive; {hint}")
    if seconds > MAX_DURATION:
        raise ValueError(f"{token(value)} is more than a year; {hint}")
    whole = int(seconds)
    return whole if whole == seconds else whole + 1


if not TYPE_CHECKING:
    Duration = checked("Duration", _duration, {
        "anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DURATION},
                  {"type": "string", "pattern": TIMESPAN_PATTERN}]})
