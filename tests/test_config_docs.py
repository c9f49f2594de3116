"""config/README.md documents every config key, and the config schema is current and valid.

Walks ``config/schema.yaml`` (following its ``$ref``s into the generated
``config/stages.schema.yaml``) to find every config section and its keys, and checks that
the README section named in ``HEADINGS`` documents each key: a backticked mention, and for
every non-mapping key a table row whose default, demo and paper cells match the schema,
the engine's per-task fine-tuning defaults, ``config/config.yaml`` and ``config/paper.yaml``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import snakemake.utils
import yaml
from snakemake.utils import update_config, validate

from genesis.settings import from_mapping
from genesis.settings_schema import STAGES, load_class, render

CONFIG = Path(__file__).resolve().parents[1] / "config"
SCHEMA = CONFIG / "schema.yaml"
STAGES_SCHEMA = CONFIG / "stages.schema.yaml"
README = CONFIG / "README.md"
TASKS = ("ncc", "lcs", "bms")

#: Config section (dotted path; "" is the top level) -> README heading (backticks dropped)
#: that documents its keys. Several sections can share one heading.
HEADINGS: dict[str, str] = {
    "": "Top level",
    "model": "model",
    "data": "data",
    "data.synthetic": "data",
    "data.real": "data",
    "data.synthetic.luna16": "data.synthetic.luna16",
    "data.synthetic.liver": "data.synthetic.liver",
    "data.synthetic.brain": "data.synthetic.brain",
    **{f"data.real.{name}": "data.real.<dataset>" for name in ("luna16", "liver", "brain")},
    "data.released": "data.released",
    "luna16": "luna16",
    "luna16.subsets": "luna16",
    "cubes": "cubes",
    "own_data": "own_data",
    "pretrain": "pretrain",
    "pretrain.settings": "pretrain.settings",
    "pretrain.settings.transforms": "pretrain.settings.transforms",
    "tasks": "tasks",
    **{f"tasks.{task}": "tasks.<task>" for task in TASKS},
    **{f"tasks.{task}.prepare": f"tasks.{task}.prepare" for task in TASKS},
    **{f"tasks.{task}.finetune": "tasks.<task>.finetune" for task in TASKS},
    **{f"tasks.{task}.evaluate": "tasks.<task>.evaluate" for task in TASKS},
    # A user task (tasks.<name>, schema patternProperties); its prepare section by kind.
    "tasks.<name>": "tasks.<name>",
    "tasks.<name>.finetune": "tasks.<task>.finetune",
    "tasks.<name>.evaluate": "tasks.<task>.evaluate",
    "tasks.<name>.prepare[segmentation]": "tasks.<name>.prepare, segmentation",
    "tasks.<name>.prepare[classification]": "tasks.<name>.prepare, classification",
    "reports": "reports",
}

MISSING: Any = object()


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --- the schema's sections ------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """One config mapping: its keys (schemas with ``$ref`` resolved) and its stage, if any."""

    path: str
    properties: dict[str, dict[str, Any]]
    stage: str | None


def resolve(
    node: dict[str, Any], doc: str, docs: Mapping[str, Any]
) -> tuple[dict[str, Any], str, str | None]:
    """Follow ``$ref``s; return the merged node, its document and its stage section name."""
    stage = None
    while "$ref" in node:
        target, _, pointer = node["$ref"].partition("#/")
        doc = target or doc
        referenced = docs[doc]
        for part in pointer.split("/"):
            referenced = referenced[part]
        if doc == STAGES_SCHEMA.name:
            stage = pointer
        node = {**referenced, **{k: v for k, v in node.items() if k != "$ref"}}
    return node, doc, stage


def schema_sections() -> dict[str, Section]:
    docs = {SCHEMA.name: load_yaml(SCHEMA), STAGES_SCHEMA.name: load_yaml(STAGES_SCHEMA)}
    found: dict[str, Section] = {}

    def walk(node: dict[str, Any], doc: str, path: str) -> None:
        node, doc, stage = resolve(node, doc, docs)
        if "properties" not in node:
            return
        properties = {}
        for key, sub in node["properties"].items():
            properties[key] = resolve(sub, doc, docs)[0]
            walk(sub, doc, f"{path}.{key}" if path else key)
        found[path] = Section(path, properties, stage)
        for sub in node.get("patternProperties", {}).values():  # user tasks: tasks.<name>
            walk(sub, doc, f"{path}.<name>")
        for case in node.get("allOf", []):  # kind-dependent sections: prepare[<kind>]
            kind = case["if"]["properties"]["kind"]["const"]
            for key, sub in case["then"]["properties"].items():
                walk(sub, doc, f"{path}.{key}[{kind}]")

    walk(docs[SCHEMA.name], SCHEMA.name, "")
    return found


SECTIONS = schema_sections()


def paths_of(heading: str) -> list[str]:
    return [path for path, title in HEADINGS.items() if title == heading]


# --- the README -------------------------------------------------------------------------


def readme_sections() -> dict[str, str]:
    """Heading (``## `` or ``### ``, backticks dropped) -> text up to the next heading."""
    sections: dict[str, str] = {}
    title, lines, fenced = None, [], False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith(("## ", "### ")):
            if title is not None:
                sections[title] = "\n".join(lines)
            title, lines = line.split(" ", 1)[1].replace("`", "").strip(), []
            assert title not in sections, f"README heading {title!r} appears twice"
        else:
            lines.append(line)
    if title is not None:
        sections[title] = "\n".join(lines)
    return sections


def table_rows(body: str) -> list[dict[str, str]]:
    """Rows of every Markdown table in ``body``, as {column header: cell text}."""
    rows, header = [], None
    for line in [*body.splitlines(), ""]:
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set("".join(cells)) <= set("-: "):
            assert len(cells) == len(header), f"table row has {len(cells)} cells: {line}"
            rows.append(dict(zip(header, cells, strict=True)))
    return rows


def cell_value(cell: str) -> Any:
    """A value cell: empty (the default) or one backticked YAML value."""
    if not cell:
        return MISSING
    match = re.fullmatch(r"`([^`]*)`", cell)
    assert match, f"value cell {cell!r} must be empty or one `backticked` YAML value"
    return yaml.safe_load(match.group(1))


def json_value(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [json_value(v) for v in value]
    return value


def config_value(config: Mapping[str, Any], path: str, key: str | None = None) -> Any:
    value: Any = config
    for part in [*filter(None, path.split(".")), *([key] if key else [])]:
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def task_default(path: str, key: str) -> Any:
    """The engine's default: per task for fine-tuning (TASK_DEFAULTS), else the schema's."""
    if SECTIONS[path].stage == "finetune":
        from genesis.tasks.finetune import TASK_DEFAULTS

        return json_value(getattr(TASK_DEFAULTS[path.split(".")[1]], key))
    return documented_default(SECTIONS[path].properties[key])


def is_mapping(schema: Mapping[str, Any]) -> bool:
    return "properties" in schema


# --- tests ------------------------------------------------------------------------------


def test_stage_schema_is_current() -> None:
    assert STAGES_SCHEMA.read_text() == render(), (
        "config/stages.schema.yaml is stale: run `python -m genesis.settings_schema`"
    )


def test_every_schema_section_has_a_readme_heading() -> None:
    assert set(SECTIONS) == set(HEADINGS), (
        "map each schema section to its README heading in HEADINGS: "
        f"unmapped {sorted(set(SECTIONS) - set(HEADINGS))}, "
        f"stale {sorted(set(HEADINGS) - set(SECTIONS))}"
    )
    reached = {section.stage for section in SECTIONS.values()} - {None}
    assert reached == set(STAGES), (
        f"stage sections not used by config/schema.yaml: {sorted(set(STAGES) - reached)}"
    )
    missing = sorted(set(HEADINGS.values()) - set(readme_sections()))
    assert not missing, f"config/README.md lacks heading(s) {missing}"


@pytest.mark.parametrize("path", sorted(HEADINGS))
def test_every_key_is_documented_in_its_section(path: str) -> None:
    heading = HEADINGS[path]
    where = f"config/README.md, section {heading!r}"
    body = readme_sections()[heading]
    section = SECTIONS[path]
    rows = {row["key"].replace("`", "") for row in table_rows(body) if "key" in row}
    for key, schema in section.properties.items():
        assert f"`{key}`" in body, f"{where}: `{key}` ({path or 'top level'}) is undocumented"
        if not is_mapping(schema):
            assert key in rows, (
                f"{where}: `{key}` needs a table row (key, type, default, demo, paper, meaning)"
            )
    if section.stage:
        for key in STAGES[section.stage][1]:
            assert f"`{key}`" in body, f"{where}: say that `{key}` is filled in by the workflow"


def check_row(
    heading: str, row: dict[str, str], paths: list[str], configs: Mapping[str, Mapping[str, Any]]
) -> None:
    """One documented key: it exists, and its default / demo / paper cells are true."""
    assert {"type", "demo", "paper", "meaning"} <= set(row), f"{heading}: columns {list(row)}"
    match = re.fullmatch(r"`(\w+)`", row["key"])
    assert match, f"{heading}: key cell {row['key']!r} must be one `backticked` key"
    key = match.group(1)
    where = [path for path in paths if key in SECTIONS[path].properties]
    assert where, f"config/README.md, section {heading!r}: `{key}` is not in the schema"
    assert row["meaning"], f"{heading}: `{key}` has no meaning"
    defaults = [column for column in row if column.startswith("default")]
    assert defaults, f"{heading}: `{key}` has no default column"
    for column in defaults:
        task = column.removeprefix("default").strip()  # "default lcs": the engine's
        for path in where:
            if task and not path.endswith(f".{task}.finetune"):
                continue
            expected = (
                task_default(path, key)
                if task
                else documented_default(SECTIONS[path].properties[key])
            )
            assert cell_value(row[column]) == expected, (
                f"{heading}: `{key}` {column} is documented as {row[column]!r}, "
                f"but {path} has {expected!r}"
            )
    for column, config in configs.items():
        documented = cell_value(row[column])
        differing = {
            path: value
            for path in where
            if (value := config_value(config, path, key)) is not MISSING
            and value != task_default(path, key)
        }
        values = list(differing.values())
        if not differing:
            assert documented is MISSING, (
                f"{heading}: `{key}` {column} cell should be empty (the file keeps the default)"
            )
        elif len(differing) == len(where) and all(v == values[0] for v in values):
            assert documented == values[0], (
                f"{heading}: `{key}` {column} cell is {row[column]!r}, the file has {values[0]!r}"
            )
        else:
            assert documented is not MISSING, f"{heading}: `{key}` differs in {column}"


@pytest.mark.parametrize("heading", sorted(set(HEADINGS.values())))
def test_documented_values_match_schema_engine_and_configs(heading: str) -> None:
    configs = {"demo": load_yaml(CONFIG / "config.yaml"), "paper": load_yaml(CONFIG / "paper.yaml")}
    for row in table_rows(readme_sections()[heading]):
        if "key" in row:
            check_row(heading, row, paths_of(heading), configs)


def merged(*names: str) -> dict[str, Any]:
    """The config Snakemake builds from config.yaml plus ``--configfile`` files."""
    config: dict[str, Any] = {}
    for name in names:
        update_config(config, load_yaml(CONFIG / name))
    return config


#: Each shipped file on its own. `--configfile config/paper.yaml` merges paper.yaml into
#: config.yaml; every value of that merge comes from one of two valid files, so it is valid
#: too (what it inherits from the demo is checked below).
CONFIGS = {"demo": ("config.yaml",), "paper": ("paper.yaml",)}


@contextlib.contextmanager
def schema_files_parsed_once() -> Iterator[None]:
    """Memoise Snakemake's parse of the schema files during ``validate``.

    Snakemake parses config/stages.schema.yaml again for each of its $refs (pure-Python
    YAML, most of a second per validation); the validation itself is unchanged. Without
    that internal (another Snakemake version) the files are simply parsed each time.
    """
    original = getattr(snakemake.utils, "_load_configfile", None)
    if original is None:
        yield
        return
    parsed: dict[tuple[str, str], Any] = {}

    def load(source: Any, filetype: str = "Config") -> Any:
        if not isinstance(source, str | Path):
            return original(source, filetype=filetype)
        key = (str(source), filetype)
        if key not in parsed:
            parsed[key] = original(source, filetype=filetype)
        return copy.deepcopy(parsed[key])  # validate() adds "$id" to the top schema

    with mock.patch.object(snakemake.utils, "_load_configfile", load):
        yield


def documented_default(prop: dict[str, Any]) -> Any:
    """Stage keys carry the engine's default as an annotation; top-level keys a default."""
    return prop.get("engine_default", prop.get("default", MISSING))


@functools.cache
def _validated(name: str) -> dict[str, Any]:
    config = merged(*CONFIGS[name])
    with schema_files_parsed_once():
        validate(config, str(SCHEMA))
    return config


def validated(name: str) -> dict[str, Any]:
    """The config as the workflow sees it after validation (schema defaults filled in)."""
    return copy.deepcopy(_validated(name))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shipped_configs_validate(name: str) -> None:
    config = validated(name)  # raises WorkflowError naming the offending key
    # Stage sections get no defaults filled in: the engine applies its own.
    assert "extra_slices" not in config["cubes"]
    assert config["own_data"]["modality"] == "auto"  # top-level defaults are filled


def test_stage_sections_refuse_unknown_and_workflow_filled_keys() -> None:
    """What the README promises: setting e.g. cubes.cube_size fails validation."""
    stages = load_yaml(STAGES_SCHEMA)
    for stage, (_, filled) in STAGES.items():
        assert stages[stage]["additionalProperties"] is False, stage
        assert not set(filled) & set(stages[stage]["properties"]), stage


def leaves(config: Mapping[str, Any], path: str = "") -> list[tuple[str, str, Any]]:
    """(section path, key, value) of every value that is not itself a config section."""
    found = []
    for key, value in config.items():
        child = f"{path}.{key}" if path else key
        if isinstance(value, Mapping) and child in SECTIONS:
            found += leaves(value, child)
        else:
            found.append((path, key, value))
    return found


def test_paper_config_leaves_no_demo_value_in_place() -> None:
    """Every demo value paper.yaml does not restate must be the default anyway."""
    demo, paper = load_yaml(CONFIG / "config.yaml"), load_yaml(CONFIG / "paper.yaml")
    inherited = [
        f"{path}.{key}: {value!r}"
        for path, key, value in leaves(demo)
        if not path.startswith("data.synthetic")  # unused with data.source: real
        and config_value(paper, path, key) is MISSING
        and value != task_default(path, key)
    ]
    assert not inherited, f"--configfile config/paper.yaml keeps demo values {inherited}"


@pytest.mark.parametrize(
    "name,path",
    [
        (name, path)
        for name in ("demo", "paper")
        for path in sorted(SECTIONS)
        if SECTIONS[path].stage
    ],
)
def test_schema_defaults_do_not_change_engine_settings(name: str, path: str) -> None:
    """Validation writes schema defaults into the config; the engine must see no change."""
    raw, filled = merged(*CONFIGS[name]), validated(name)
    stage = SECTIONS[path].stage
    assert stage is not None

    def engine(mapping: Any) -> Any:
        mapping = {} if mapping is MISSING else mapping
        if stage == "finetune":
            from genesis.tasks.finetune import resolve_settings

            task = path.split(".")[1]
            if task == "<name>":  # a user task: its kind's defaults
                return resolve_settings("user_task", mapping, "segmentation")
            return resolve_settings(task, mapping)
        return from_mapping(load_class(STAGES[stage][0]), mapping, path)

    before, after = engine(config_value(raw, path)), engine(config_value(filled, path))
    assert dataclasses.asdict(before) == dataclasses.asdict(after)


@pytest.mark.parametrize("phase", ["p1", "p2", "p3", "p4"])
def test_validation_phases_only_restrict_the_experiment(phase: str) -> None:
    """A phase of config/validation-phases/ runs a subset of config/validation.yaml: fewer
    tasks or label fractions, no reports; every budget, seed and setting stays as fixed."""
    full = merged("config.yaml", "validation.yaml")
    config = merged("config.yaml", "validation.yaml", f"validation-phases/{phase}.yaml")
    with schema_files_parsed_once():
        validate(copy.deepcopy(config), str(SCHEMA))
    assert set(config["tasks"]["names"]) <= set(full["tasks"]["names"])
    for task in config["tasks"]["names"]:
        fractions = config["tasks"][task].get("label_fractions", [])
        assert set(fractions) <= set(full["tasks"][task].get("label_fractions", []))
        config["tasks"][task]["label_fractions"] = full["tasks"][task].get("label_fractions")
    config["tasks"]["names"] = full["tasks"]["names"]
    config["reports"] = full["reports"]
    assert config == full
