"""Typed stage settings built from plain mappings (a config section passed as JSON).

Every stage declares its settings as a frozen dataclass with the paper's or the demo's
defaults. Each field is declared with ``setting(default, doc, bounds=...)``: its
description and range live beside it, and everything else is generated from them, the
JSON schema the workflow validates with before any job runs
(``genesis.settings_schema``) and the tables of ``config/README.md``
(``tools/config_docs.py``). ``from_mapping`` checks keys and types (every float finite),
``check_bounds`` the declared ranges; both raise ``ConfigError`` naming the offending
key. Rules that tie several fields together (``low < high``, a fold within ``folds``)
stay in each dataclass's ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from genesis.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Bounds:
    """A closed or open interval written as in mathematics: ``"[1, inf)"``, ``"(0, 1)"``.

    Kept as the bounds' own spelling so that errors, the schema and the README say
    exactly what the field declares.
    """

    low: float
    high: float
    low_closed: bool
    high_closed: bool

    @classmethod
    def parse(cls, text: str) -> Bounds:
        text = text.strip()
        if len(text) < 5 or text[0] not in "[(" or text[-1] not in "])" or "," not in text:
            raise ValueError(f"bounds {text!r}: expected e.g. '[0, 1]' or '(0, inf)'")
        low, high = (float(part) for part in text[1:-1].split(","))
        if not low < high:
            raise ValueError(f"bounds {text!r}: low must be below high")
        return cls(low, high, text[0] == "[", text[-1] == "]")

    def contains(self, value: float) -> bool:
        """False for NaN and for any value outside (inf is outside every interval)."""
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return bool(above and below and math.isfinite(value))

    def rule(self) -> str:
        """The bounds as words for an error: ``>= 1``, ``in (0, 1)``."""
        low, high = _number(self.low), _number(self.high)
        if math.isinf(self.high):
            return f"{'>=' if self.low_closed else '>'} {low}"
        if math.isinf(self.low):
            return f"{'<=' if self.high_closed else '<'} {high}"
        opening, closing = "[" if self.low_closed else "(", "]" if self.high_closed else ")"
        return f"in {opening}{low}, {high}{closing}"

    def json_schema(self) -> dict[str, float]:
        """JSON-schema keywords (minimum, exclusiveMaximum, ...) for one number."""
        schema: dict[str, float] = {}
        if not math.isinf(self.low):
            schema["minimum" if self.low_closed else "exclusiveMinimum"] = _json_number(self.low)
        if not math.isinf(self.high):
            schema["maximum" if self.high_closed else "exclusiveMaximum"] = _json_number(self.high)
        return schema


def _number(value: float) -> str:
    return f"{value:g}"


def _json_number(value: float) -> float:
    return int(value) if value.is_integer() else value


def setting(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    bounds: str | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A settings field with its description and, for numbers, its range.

    ``bounds`` applies to the value, or to every item of a list or tuple; ``None``
    values (optional settings) are not checked. ``factory`` replaces ``default`` for
    mutable defaults.
    """
    if not doc:
        raise TypeError("every setting needs a description")
    metadata: dict[str, Any] = {"doc": " ".join(doc.split())}
    if bounds is not None:
        metadata["bounds"] = Bounds.parse(bounds)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_bounds(settings: Any, section: str) -> None:
    """Every field's declared bounds hold, else a ``ConfigError`` naming the key.

    Items of a list are named by index (``cubes.border[2]``). Integer settings refuse
    non-integers (a dataclass built in code bypasses ``from_mapping``'s type checks).
    """
    hints = typing.get_type_hints(type(settings))
    for field in dataclasses.fields(settings):
        bounds = field.metadata.get("bounds")
        value = getattr(settings, field.name)
        if bounds is None or value is None:
            continue
        items = list(enumerate(value)) if isinstance(value, list | tuple) else [(None, value)]
        integer = is_integer_hint(hints[field.name])
        allowed = int if integer else int | float
        for index, item in items:
            number = not isinstance(item, bool) and isinstance(item, allowed)
            if not (number and bounds.contains(item)):
                key = f"{section}.{field.name}" + ("" if index is None else f"[{index}]")
                kind = "an integer" if integer else "a finite number"
                raise ConfigError(f"{key} must be {kind} {bounds.rule()}, got {item!r}")


def check_increasing(settings: Any, section: str, *keys: str, strict: bool = True) -> None:
    """Each ``[low, high]`` setting among ``keys`` has low < high (a window), or with
    ``strict=False`` low <= high (a range to draw from, which may be one value)."""
    relation = "<" if strict else "<="
    for key in keys:
        low, high = getattr(settings, key)
        if not (low < high if strict else low <= high):
            raise ConfigError(
                f"{section}.{key} must be [low, high] with low {relation} high, got {[low, high]}"
            )


def is_integer_hint(hint: Any) -> bool:
    """Whether the numbers an annotation allows are integers (``int``, ``tuple[int, ...]``,
    ``int | None``), not floats."""
    found: set[Any] = set()
    stack = [hint]
    while stack:
        current = stack.pop()
        args = typing.get_args(current)
        if args:
            stack.extend(args)
        else:
            found.add(current)
    return int in found and float not in found


def from_mapping(cls: type[T], mapping: Mapping[str, Any] | None, section: str) -> T:
    """Build dataclass ``cls`` from ``mapping``; unknown keys and wrong types are errors."""
    mapping = dict(mapping or {})
    fields = {field.name: field for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ConfigError(
            f"{section}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    values = {
        name: _coerce(value, hints[name], f"{section}.{name}") for name, value in mapping.items()
    }
    return cls(**values)


def to_mapping(settings: Any) -> dict[str, Any]:
    """The inverse of ``from_mapping``: a JSON-serialisable dict (tuples become lists)."""
    return dataclasses.asdict(settings)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__} {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} must have {len(args)} items, got {len(value)}")
            pairs = enumerate(zip(value, args, strict=True))
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in pairs)
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {type(value).__name__}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {type(value).__name__} {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            # No setting means anything by inf or NaN; a NaN tolerance would silently
            # switch its check off (every comparison with NaN is false).
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {type(value).__name__} {value!r}")
        return value
    return value
