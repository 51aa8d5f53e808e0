"""The input each REST API operation accepts, declared once and used twice: to check a
request (unknown keys, wrong types and over-long values are refused with a message naming
the key) and to describe the operation in the OpenAPI document."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from node.errors import ValidationError
from node.inputs import is_decimal

STRING = "string"
ID = "id"  # a positive whole number, sent as a string (or, leniently, a JSON number)
CHOICE = "choice"  # one of ``choices``, compared without regard to case
OBJECTS = "objects"  # a list of objects described by ``item``


def _encodable(text: str) -> bool:
    """Whether ``text`` can be stored and sent as UTF-8: JSON's ``\\ud800`` escape, alone,
    decodes to a lone surrogate, which no encoder takes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Field:
    name: str
    kind: str = STRING
    max_len: int = 256
    required: bool = False
    choices: tuple[str, ...] = ()
    item: Spec | None = None
    max_items: int = 100
    description: str = ""
    secret: bool = False  # never echoed back, not even in an error message

    def parse(self, value: Any, where: str) -> Any:
        if self.kind == OBJECTS:
            assert self.item is not None
            if not isinstance(value, list):
                raise ValidationError(f"{where} must be a list")
            if len(value) > self.max_items:
                raise ValidationError(f"{where} may have at most {self.max_items} entries")
            return [self.item.parse(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if self.kind == ID:
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not is_decimal(value.strip()):
                raise ValidationError(f"{where} must be a numeric id")
            text = value.strip()
            if len(text) > 18 or int(text) < 1:
                raise ValidationError(f"{where} must be a numeric id")
            return int(text)
        if not isinstance(value, str):
            raise ValidationError(f"{where} must be a string")
        if len(value) > self.max_len:
            raise ValidationError(f"{where} is too long (at most {self.max_len} characters)")
        if "\x00" in value:
            raise ValidationError(f"{where} must not contain NUL characters")
        if not value.isascii() and not _encodable(value):
            raise ValidationError(
                f"{where} is not valid Unicode text (it holds an unpaired surrogate, such as "
                "the JSON escape \\ud800 alone)"
            )
        if self.kind == CHOICE:
            for choice in self.choices:
                if value.strip().casefold() == choice.casefold():
                    return choice
            raise ValidationError(f"{where} must be one of: {', '.join(self.choices)}")
        return value

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any]
        if self.kind == OBJECTS:
            assert self.item is not None
            schema = {"type": "array", "maxItems": self.max_items, "items": self.item.json_schema()}
        elif self.kind == ID:
            # PMP sends ids as strings; some clients send a JSON number, which is taken too.
            schema = {
                "oneOf": [
                    {"type": "string", "pattern": "^[0-9]{1,18}$"},
                    {"type": "integer", "minimum": 1, "maximum": 10**18 - 1},
                ]
            }
        elif self.kind == CHOICE:
            schema = {"type": "string", "enum": list(self.choices)}
        else:
            schema = {"type": "string", "maxLength": self.max_len}
        if self.description:
            schema["description"] = self.description
        if self.secret:
            schema["format"] = "password"
        return schema


@dataclass(frozen=True)
class Spec:
    """The keys an operation accepts in ``INPUT_DATA``'s ``Details`` (and, for GET, as plain
    query parameters)."""

    fields: tuple[Field, ...] = ()
    by_name: dict[str, Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {f.name: f for f in self.fields})

    def parse(self, data: Any, where: str = "Details") -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ValidationError(f"{where} must be a JSON object")
        unknown = sorted(k for k in data if k not in self.by_name)
        if unknown:
            shown = ", ".join(repr(str(k)[:40]) for k in unknown[:5])
            allowed = ", ".join(self.by_name) or "none"
            raise ValidationError(f"unknown key {shown} in {where} (allowed: {allowed})")
        out: dict[str, Any] = {}
        for name, value in data.items():
            out[name] = self.by_name[name].parse(value, f"{where}.{name}")
        for f in self.fields:
            if f.required and (f.name not in out or out[f.name] in ("", [])):
                raise ValidationError(f"{where}.{f.name} is required")
        return out

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {f.name: f.json_schema() for f in self.fields},
        }
        required = [f.name for f in self.fields if f.required]
        if required:
            schema["required"] = required
        return schema


NO_INPUT = Spec()
