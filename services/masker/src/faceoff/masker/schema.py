"""The protection options as the contract declares them.

Each ``faceoff.v1.ProtectOptions`` field carries what it accepts (``[(faceoff.v1.accepts)]``,
``protos/faceoff/v1/schema.proto``): its range or names, whether it is part of the attack
itself, its help text. This module reads that declaration once, so the request converter, the
validator, the attack batch key and the attacks' own bounds all come from the one place; the
SDK and the ``faceoff`` command read the same declaration for their keywords and flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from faceoff.v1 import masker_pb2, schema_pb2

#: Fields of ``ProtectOptions`` that are not protection options of their own.
_NOT_OPTIONS = ("profile", "detect")

_KINDS = {
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_DOUBLE: "float",
    FieldDescriptor.TYPE_UINT32: "int",
    FieldDescriptor.TYPE_UINT64: "int",
    FieldDescriptor.TYPE_INT32: "int",
    FieldDescriptor.TYPE_INT64: "int",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_STRING: "str",
    FieldDescriptor.TYPE_ENUM: "enum",
}


@dataclass(frozen=True)
class OptionSpec:
    """One protection option: its field, its kind and what it accepts."""

    name: str
    #: The SDK's and the command line's keyword (the field name unless the declaration says).
    keyword: str
    #: "float", "int", "bool", "str" or "enum".
    kind: str
    repeated: bool
    #: The field has presence (``optional``): unset means "the profile's value".
    optional: bool
    accepts: Any  # schema_pb2.Accepts
    #: An enum's values by lower-case name, without the enum's prefix and UNSPECIFIED.
    enum_values: dict[str, int]

    @property
    def attack(self) -> bool:
        """Part of the attack: requests share an attack batch only when it is equal."""
        return bool(self.accepts.attack)

    @property
    def help(self) -> str:
        return str(self.accepts.help)

    @property
    def names(self) -> tuple[str, ...]:
        """The accepted names of a string option (an enum's, for an enum); empty: any."""
        if self.kind == "enum":
            return tuple(self.enum_values)
        return tuple(self.accepts.names)

    @property
    def max(self) -> float | None:
        return self.accepts.max if self.accepts.HasField("max") else None

    @property
    def min(self) -> float | None:
        return self.accepts.min if self.accepts.HasField("min") else None

    def accepted(self) -> str:
        """What the option accepts, in words (the tail of a refusal message)."""
        a = self.accepts
        if self.kind == "bool":
            return "true or false"
        if self.kind in ("str", "enum") and not self.names:
            return "a name"
        if self.names:
            joined = ", ".join(self.names)
            return f"distinct names from {joined}" if a.distinct else f"one of {joined}"
        lo, hi = self.min, self.max
        number = "an integer" if self.kind == "int" else "a number"
        if self.kind == "int" and a.odd:
            also = " or ".join(f"{v:g}" for v in a.also)
            return f"{also} (off) or an odd integer in {lo:g}..{hi:g}"
        if self.kind == "int" and lo is not None and hi is not None:
            if a.max_exclusive and hi == 2**63:
                return f"an integer in {lo:g}..2^63-1"
            return f"an integer in {lo:g}..{hi:g}"
        if lo is not None and hi is not None:
            left, right = "(" if a.min_exclusive else "[", ")" if a.max_exclusive else "]"
            return f"in {left}{lo:g}, {hi:g}{right}"
        if lo is not None:
            return f"{'>' if a.min_exclusive else '>='} {lo:g}"
        if hi is not None:
            return f"{'<' if a.max_exclusive else '<='} {hi:g}"
        return number

    def problem(self, value: Any) -> str | None:
        """Why ``value`` (an element, for a repeated option) is refused, or None if accepted."""
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"{self.name} must be {self.accepted()}"
        if self.kind in ("str", "enum"):
            if not isinstance(value, str):
                return f"{self.name} must be {self.accepted()}"
            if self.names and value not in self.names:
                return f"{self.name} must be {self.accepted()}"
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{self.name} must be {self.accepted()}"
        if self.kind == "int" and not isinstance(value, int):
            return f"{self.name} must be {self.accepted()}"
        if not math.isfinite(value):
            return f"{self.name} must be a finite number"
        a = self.accepts
        if value in a.also:
            return None
        lo, hi = self.min, self.max
        inside = (
            (lo is None or (value > lo if a.min_exclusive else value >= lo))
            and (hi is None or (value < hi if a.max_exclusive else value <= hi))
            and not (a.odd and value % 2 != 1)
        )
        return None if inside else f"{self.name} must be {self.accepted()}"


def _spec(field: FieldDescriptor) -> OptionSpec:
    accepts = field.GetOptions().Extensions[schema_pb2.accepts]
    enum_values: dict[str, int] = {}
    enum = field.enum_type
    if enum is not None:
        prefix = f"{enum.name.upper()}_"
        enum_values = {
            v.name.removeprefix(prefix).lower(): v.number for v in enum.values if v.number != 0
        }
    repeated = bool(field.is_repeated)
    return OptionSpec(
        name=field.name,
        keyword=accepts.alias or field.name,
        kind=_KINDS[field.type],
        repeated=repeated,
        optional=field.has_presence and not repeated,
        accepts=accepts,
        enum_values=enum_values,
    )


#: Every protection option, by field name, in the contract's order.
OPTIONS: dict[str, OptionSpec] = {
    f.name: _spec(f)
    for f in masker_pb2.ProtectOptions.DESCRIPTOR.fields
    if f.name not in _NOT_OPTIONS
}


_PROFILES = masker_pb2.ProtectOptions.DESCRIPTOR.GetOptions().Extensions[schema_pb2.profiles]
#: The protection profiles, weakest first, as the contract declares them (what each sets is
#: :data:`faceoff.masker.options.PROFILES`).
PROFILE_NAMES: tuple[str, ...] = tuple(_PROFILES.names)
#: The profile a request that names none takes (the contract's default).
DEFAULT_PROFILE: str = _PROFILES.default
#: The surrogates the default profile attacks, as the contract declares them (the evaluator
#: assumes them when a caller does not say which models a protection attacked).
DEFAULT_SURROGATES: tuple[str, ...] = tuple(_PROFILES.default_surrogates)


def bound(name: str) -> float:
    """The declared upper bound of option ``name`` (for the attacks' own checks)."""
    value = OPTIONS[name].max
    if value is None:
        raise KeyError(f"option {name} declares no upper bound")
    return value
