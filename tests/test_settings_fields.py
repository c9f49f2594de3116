"""Every settings field declares a description, and every declared range is enforced.

The ranges of ``genesis.settings.setting`` fields are the one source of the engine's
checks, the generated JSON schema and the README's range column. For every bounded field
of every stage, a value just outside its range must be refused by the engine (naming the
key) and by the generated schema, and the default must lie inside it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from genesis.errors import ConfigError
from genesis.settings import Bounds, check_bounds, from_mapping, is_integer_hint, setting
from genesis.settings_schema import STAGES, dataclass_schema, load_class

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("config_docs", ROOT / "tools" / "config_docs.py")
assert SPEC and SPEC.loader
config_docs = importlib.util.module_from_spec(SPEC)
sys.modules["config_docs"] = config_docs  # dataclasses look their module up by name
SPEC.loader.exec_module(config_docs)

FIELDS = [
    (stage, field)
    for stage, (spec, _) in STAGES.items()
    for field in dataclasses.fields(load_class(spec))
]
BOUNDED = [(stage, field) for stage, field in FIELDS if "bounds" in field.metadata]


def field_id(item: tuple[str, dataclasses.Field]) -> str:
    return f"{item[0]}.{item[1].name}"


def outside(bounds: Bounds, integer: bool) -> list[float]:
    """Values just outside ``bounds`` (an open end's own value is outside)."""
    step = 1 if integer else 1e-6 * max(1.0, abs(bounds.low), abs(bounds.high) % 1e6)
    values: list[float] = []
    if not math.isinf(bounds.low):
        values.append(bounds.low - step if bounds.low_closed else bounds.low)
    if not math.isinf(bounds.high):
        values.append(bounds.high + step if bounds.high_closed else bounds.high)
    return [int(v) if integer else float(v) for v in values]


def default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]


def with_value(field: dataclasses.Field, hint: Any, value: float) -> Any:
    """The field's value with ``value`` in it: the number itself, or as a list's first item."""
    default = default_of(field)
    if isinstance(default, tuple | list):
        return [value, *list(default)[1:]]
    if default is None and typing.get_origin(hint) is not None:
        sequence = next(
            (a for a in typing.get_args(hint) if typing.get_origin(a) in (tuple, list)), None
        )
        if sequence is not None:
            length = len(typing.get_args(sequence))
            good = [64, 64, 32][:length] if length else [1]
            return [value, *good[1:]]
    return value


@pytest.mark.parametrize("item", FIELDS, ids=field_id)
def test_every_field_is_described(item: tuple[str, dataclasses.Field]) -> None:
    stage, field = item
    doc = field.metadata.get("doc", "")
    assert len(doc) >= 15, f"{stage}.{field.name}: declare it with setting(default, doc)"


@pytest.mark.parametrize("item", BOUNDED, ids=field_id)
def test_values_outside_a_declared_range_are_refused(
    item: tuple[str, dataclasses.Field],
) -> None:
    stage, field = item
    cls = load_class(STAGES[stage][0])
    hint = typing.get_type_hints(cls)[field.name]
    bounds: Bounds = field.metadata["bounds"]
    default = default_of(field)
    values = default if isinstance(default, tuple | list) else [default]
    assert all(v is None or bounds.contains(v) for v in values), f"default {default!r}"
    schema = dataclass_schema(cls)
    for bad in outside(bounds, is_integer_hint(hint)):
        mapping = {field.name: with_value(field, hint, bad)}
        with pytest.raises(ConfigError, match=rf"\.{field.name}(\[0\])? must be") as caught:
            from_mapping(cls, mapping, f"section.{stage}")
        assert repr(bad) in str(caught.value) or str(bad) in str(caught.value)
        if field.name in STAGES[stage][1]:
            continue  # filled in by the workflow: not in the config's schema
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(mapping, schema)


@pytest.mark.parametrize(
    ("text", "inside", "outside_values", "rule"),
    [
        ("[1, inf)", [1, 2, 10**9], [0, -1, math.inf, math.nan], ">= 1"),
        ("(0, inf)", [1e-12, 5.0], [0.0, -1.0, math.inf, math.nan], "> 0"),
        ("[0, 1]", [0.0, 0.5, 1.0], [-1e-9, 1.0000001, math.nan], "in [0, 1]"),
        ("(0, 1)", [1e-9, 0.999], [0.0, 1.0], "in (0, 1)"),
        ("[0, 1)", [0.0], [1.0], "in [0, 1)"),
        ("(-inf, 5]", [-1e9, 5], [5.5], "<= 5"),
    ],
)
def test_bounds_contain_exactly_their_interval(
    text: str, inside: list[float], outside_values: list[float], rule: str
) -> None:
    bounds = Bounds.parse(text)
    assert all(bounds.contains(v) for v in inside)
    assert not any(bounds.contains(v) for v in outside_values)
    assert bounds.rule() == rule
    # The JSON-schema keywords say the same as contains() (finite values).
    schema = {"type": "number", **bounds.json_schema()}
    for value in [*inside, *(v for v in outside_values if math.isfinite(v))]:
        valid = jsonschema.Draft202012Validator(schema).is_valid(value)
        assert valid == bounds.contains(value), (text, value)


@pytest.mark.parametrize("text", ["0, 1", "[1, 0]", "[a, 1]", "(0 1)"])
def test_malformed_bounds_are_a_programming_error(text: str) -> None:
    with pytest.raises(ValueError):
        Bounds.parse(text)


def test_check_bounds_names_the_item_and_refuses_non_integers() -> None:
    @dataclasses.dataclass(frozen=True)
    class Example:
        border: tuple[int, int, int] = setting((1, 1, 1), "Voxels kept clear.", bounds="[0, inf)")
        rate: float = setting(0.5, "A probability of something.", bounds="[0, 1]")

    with pytest.raises(ConfigError, match=r"^ex\.border\[2\] must be an integer >= 0, got -3$"):
        check_bounds(Example(border=(1, 1, -3)), "ex")
    with pytest.raises(ConfigError, match=r"ex\.border\[0\] must be an integer >= 0, got 1\.5"):
        check_bounds(Example(border=(1.5, 1, 1)), "ex")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"ex\.rate must be a finite number in \[0, 1\]"):
        check_bounds(Example(rate=True), "ex")  # a bool is not a rate
    check_bounds(Example(), "ex")


def test_a_setting_without_description_is_refused() -> None:
    with pytest.raises(TypeError, match="description"):
        setting(1)


def test_readme_tables_are_generated_from_the_declarations() -> None:
    current = (ROOT / "config" / "README.md").read_text(encoding="utf-8")
    assert current == config_docs.render_readme(current, config_docs.load_configs()), (
        "config/README.md's key tables are stale: run `python tools/config_docs.py`"
    )


def test_readme_rows_carry_each_declared_range_and_description() -> None:
    """An oracle for the generator: the cubes table read back says what the fields say."""
    from genesis.cubes.extract import CubeSettings

    text = (ROOT / "config" / "README.md").read_text(encoding="utf-8")
    body = text.split("\n## `cubes`\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in body.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0].strip("`")] = cells
    for field in dataclasses.fields(CubeSettings):
        if field.name == "cube_size":
            assert field.name not in rows  # filled in by the workflow
            continue
        _key, _type, range_cell, default, *_rest, meaning = rows[field.name]
        bounds = field.metadata.get("bounds")
        assert range_cell == (bounds.rule() if bounds else "")
        assert meaning == field.metadata["doc"]
        assert yaml.safe_load(default.strip("`")) == (
            list(field.default) if isinstance(field.default, tuple) else field.default
        )
