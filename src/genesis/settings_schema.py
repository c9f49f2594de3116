"""JSON schema of every stage's settings, generated from the settings dataclasses.

The workflow validates its config against ``config/schema.yaml`` before any job runs.
The stage sections of that schema (``config/stages.schema.yaml``) are generated here
from the same dataclasses the engine validates with, each key with the description and
range its field declares (``genesis.settings.setting``), so the two can never drift:
``python -m genesis.settings_schema`` rewrites the file and a test checks it is current.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import types
import typing
from pathlib import Path
from typing import Any

from genesis.settings import Bounds

#: Config section -> (settings dataclass, keys the workflow fills in itself).
STAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "synthetic_luna16": ("genesis.synth.luna16:Luna16Settings", ("subsets",)),
    "synthetic_liver": ("genesis.synth.liver:LiverSettings", ()),
    "synthetic_brain": ("genesis.synth.brain:BrainSettings", ()),
    "fetch": ("genesis.data.fetch:FetchSettings", ()),
    "cubes": ("genesis.cubes.extract:CubeSettings", ("cube_size",)),
    "pretrain": ("genesis.train.settings:PretrainSettings", ("width", "cube_size", "gpus")),
    # The pretraining variant decides which transforms are on.
    "transforms": ("genesis.transforms.settings:TransformSettings", ("enabled",)),
    "prepare_ncc": (
        "genesis.tasks.prepare_ncc:NccSettings",
        ("cube_size", "train_subsets", "val_subsets", "test_subsets"),
    ),
    "prepare_lcs": ("genesis.tasks.prepare_lcs:LcsSettings", ("cube_size",)),
    "prepare_bms": ("genesis.tasks.prepare_bms:BmsSettings", ("cube_size",)),
    "prepare_segmentation": (
        "genesis.tasks.prepare_segmentation:SegmentationSettings",
        ("cube_size",),
    ),
    "prepare_classification": (
        "genesis.tasks.prepare_classification:ClassificationSettings",
        ("cube_size",),
    ),
    "finetune": ("genesis.tasks.finetune_settings:FinetuneSettings", ("width", "cube_size")),
    "evaluate": ("genesis.tasks.evaluate:EvaluateSettings", ("width", "cube_size")),
}

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "stages.schema.yaml"


def load_class(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def type_schema(hint: Any) -> dict[str, Any]:
    """JSON schema of one annotated type (the subset the settings dataclasses use)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return {}
    if origin in (typing.Union, types.UnionType):
        options = [type_schema(a) for a in args if a is not type(None)]
        schema = options[0] if len(options) == 1 else {"anyOf": options}
        return {"anyOf": [schema, {"type": "null"}]} if type(None) in args else schema
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return {
                "type": "array",
                "items": type_schema(args[0]),
                "minItems": len(args),
                "maxItems": len(args),
            }
        return {"type": "array", "items": type_schema(args[0]) if args else {}}
    if origin is dict or hint is dict:
        return {"type": "object"}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if hint in simple:
        return {"type": simple[hint]}
    raise TypeError(f"no JSON schema for settings type {hint!r}")


def with_bounds(schema: dict[str, Any], bounds: Bounds) -> dict[str, Any]:
    """``schema`` with the range on its numbers: on the value, each item, or the non-null
    alternative of an optional setting."""
    if "anyOf" in schema:
        return {**schema, "anyOf": [with_bounds(option, bounds) for option in schema["anyOf"]]}
    if schema.get("type") == "array":
        return {**schema, "items": with_bounds(schema["items"], bounds)}
    if schema.get("type") in ("integer", "number"):
        return {**schema, **bounds.json_schema()}
    return schema


def json_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return [json_default(v) for v in value]
    if isinstance(value, dict):
        return {k: json_default(v) for k, v in value.items()}
    return value


def dataclass_schema(cls: type, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties = {}
    for field in dataclasses.fields(cls):
        if field.name in exclude:
            continue
        schema = type_schema(hints[field.name])
        if "bounds" in field.metadata:
            schema = with_bounds(schema, field.metadata["bounds"])
        schema["description"] = field.metadata["doc"]
        # Not "default": Snakemake's validate() writes defaults into the config, and the
        # engine would then take them for the user's choice (e.g. NCC's learning rate
        # overriding the per-task fine-tuning defaults). The annotation documents it.
        if field.default is not dataclasses.MISSING:
            schema["engine_default"] = json_default(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            schema["engine_default"] = json_default(field.default_factory())
        properties[field.name] = schema
    return {
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "description": f"Settings of {cls.__module__}.{cls.__name__}; see config/README.md.",
        "properties": properties,
    }


def stage_schemas() -> dict[str, Any]:
    schemas = {
        name: dataclass_schema(load_class(spec), exclude)
        for name, (spec, exclude) in STAGES.items()
    }
    # The pretraining section nests the transform settings.
    schemas["pretrain"]["properties"]["transforms"] = {"$ref": "#/transforms"}
    return schemas


def render() -> str:
    import yaml

    header = (
        "# GENERATED by `python -m genesis.settings_schema` from the engine's settings\n"
        "# dataclasses. Do not edit by hand; tests/test_config_docs.py checks it is current.\n"
    )
    document = {"$schema": "https://json-schema.org/draft/2020-12/schema", **stage_schemas()}
    return header + yaml.safe_dump(
        document, sort_keys=True, default_flow_style=False, width=100, allow_unicode=True
    )


def main() -> int:
    SCHEMA_PATH.write_text(render())
    print(f"wrote {SCHEMA_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
