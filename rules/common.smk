# Helpers shared by every rules file: config validation, paths, settings for the engine.
import json
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def validate_config():
    """The schema's verdict (types, unknown keys, ranges) as one line naming the key.

    Snakemake reports a schema failure as a multi-line dump of the schema node; the user
    needs the key, the value's problem, and where the key is documented.
    """
    try:
        validate(config, schema="../config/schema.yaml")
    except WorkflowError as error:
        text = str(error)
        problem = re.search(r"ValidationError: (.+)", text)
        where = re.search(r"On instance((?:\[[^\]]*\])*)", text)
        if not (problem and where):
            raise
        key = ".".join(re.findall(r"\['?([^\]']*)'?\]", where.group(1)))
        raise WorkflowError(
            f"config {key or '(top level)'}: {problem.group(1)} "
            "(config/README.md lists every key with its type and range)"
        ) from None


validate_config()

#: The released initialisations: config key, released file (fetched for `auto`), suffix.
RELEASED = {
    "released": ("released_weights", "Genesis_Chest_CT.pt", (".pt", ".safetensors")),
    "released_keras": ("released_keras_weights", "Genesis_Chest_CT.h5", (".h5",)),
}

for _init, (_key, _file, _suffixes) in RELEASED.items():
    _value = config["tasks"].get(_key)
    if _init in config["tasks"]["inits"] and not _value:
        raise ValueError(
            f"tasks.inits lists '{_init}' but tasks.{_key} is not set: give 'auto' "
            f"(download {_file}) or the path to your copy"
        )
    if _value and _value != "auto":
        if not _value.endswith(_suffixes):
            raise ValueError(
                f"tasks.{_key}: {_value} must be a {' or '.join(_suffixes)} file"
            )
        if not Path(_value).is_file():
            raise ValueError(f"tasks.{_key}: {_value} does not exist")

REPO = Path(workflow.basedir)
DATA = Path(config["data"]["root"])
RESULTS = Path(config["results"])
SYNTHETIC = config["data"]["source"] == "synthetic"
LUNA16 = DATA / "luna16"
LIVER = DATA / "Task03_Liver"
BRAIN = DATA / "Task01_BrainTumour"


def repo_path(*parts):
    """A file shipped with the workflow (config/, notebooks/), wherever it runs from."""
    return str(REPO.joinpath(*map(str, parts)))


def data_path(*parts):
    """A path under the data folder, as a string for Snakemake."""
    return str(DATA.joinpath(*map(str, parts)))


def results_path(*parts):
    """A path under the results folder, as a string for Snakemake."""
    return str(RESULTS.joinpath(*map(str, parts)))


def log_path(*parts):
    """Logs live beside the results they explain, under results/logs/."""
    return str(RESULTS.joinpath("logs", *map(str, parts)))


# Training jobs (pretrain, finetune) write everything to their log and show its epoch
# lines in the console: `... 2>&1 | tee LOG | (grep ... || true)`. The shell runs with
# pipefail, so the job still fails with the engine; grep finding no line is no failure.


#: GPU units a fine-tuning or evaluation job counts against `--resources gpu=N`. Snakemake
#: resources are integers, so jobs that share a GPU (tasks.jobs_per_gpu > 1) count 0
#: there; the engine's slot leases then run N x jobs_per_gpu of them at once and make
#: the rest wait for a free slot (and keep them off a GPU that a pretraining holds).
TASK_GPU = 1 if config["tasks"]["jobs_per_gpu"] == 1 else 0


def run_folder(*parts, sweep=False):
    """A run folder's pattern in outputs: finetune/{task}/{init}/run{run}/..., or
    finetune/{task}/{init}/labels{pct}/run{run}/... for a sweep (see run_dir)."""
    level = ["labels{pct}"] if sweep else []
    return results_path("finetune", "{task}", "{init}", *level, "run{run}", *parts)


# --- job resources, estimated from the settings ---------------------------------------


def _voxels():
    x, y, z = config["cube_size"]
    return x * y * z


def training_mem_mb(batch_size, width=None):
    """Memory of a training job: libraries (~1.5 GB), plus the U-Net's activations,
    about 60 floats per voxel and base channel per sample (measured order of magnitude
    for the 3D U-Net with batch norm), with a factor 2 of headroom."""
    width = width or config["model"]["width"]
    activations = 60 * 4 * _voxels() * width * batch_size / 2**20
    return int(1536 + 2 * activations)


#: Cube extraction streams one scan at a time: a 512 x 512 x 600 CT as float32 and its
#: windowed copy, plus the libraries.
CUBES_MEM_MB = 4096


def pretrain_runtime(wildcards=None):
    """Minutes a pretraining job may take: a CPU step of the width-32 paper model is about
    8 s, scaled by width and cube size; the epoch cap times the steps per epoch."""
    s = config["pretrain"]["settings"]
    steps = (s.get("steps_per_epoch") or 200) * s.get("max_epochs", 10000)
    per_step = 8 * (config["model"]["width"] / 32) ** 2 * _voxels() / (64 * 64 * 32)
    return int(min(60 * 24 * 7, max(10, 2 * steps * per_step / 60)))


def finetune_runtime(wildcards):
    """Minutes a fine-tuning job may take, from its epoch cap and steps per epoch."""
    s = task_section(wildcards.task).get("finetune") or {}
    steps = (s.get("steps_per_epoch") or 100) * min(s.get("max_epochs", 200), 200)
    per_step = 8 * (config["model"]["width"] / 32) ** 2 * _voxels() / (64 * 64 * 32)
    return int(min(60 * 24, max(10, 2 * steps * per_step / 60)))


def finetune_mem_mb(wildcards):
    s = task_section(wildcards.task).get("finetune") or {}
    return training_mem_mb(s.get("batch_size", 16))


def settings(section, **extra):
    """JSON of one config section plus shared keys, passed to `genesis ... --settings`.

    The engine validates the keys again (typed dataclasses), so a rule cannot smuggle a
    misspelt setting past it.
    """
    value = dict(section)
    value.update(extra)
    return json.dumps(value, sort_keys=True)


def shared_model_settings():
    """Keys every training stage shares: model width and cube size."""
    return {"width": config["model"]["width"], "cube_size": config["cube_size"]}


# --- LUNA16 subsets --------------------------------------------------------------------


def luna16_subsets(*roles):
    """Subset numbers for the given roles (train/val/test), sorted and unique."""
    return sorted({k for role in roles for k in config["luna16"]["subsets"][role]})


def luna16_subset_dir(subset):
    return data_path("luna16", f"subset{subset}")


def own_data_splits():
    """Splits of the user's own unlabelled scans that are configured (train/val)."""
    own = config["own_data"]
    return [split for split in ("train", "val") if own.get(split)]


def luna16_pretraining():
    """Pretrain on LUNA16 cubes unless own scans replace them (own_data.use_luna16)."""
    return config["own_data"]["use_luna16"] or not own_data_splits()


if not luna16_pretraining() and "val" not in own_data_splits():
    raise ValueError(
        "own_data.val is required when own_data.use_luna16 is false: pretraining needs "
        "validation cubes"
    )


def gallery_shard():
    """Cubes the transformation gallery shows: validation cubes of the pretraining data."""
    if luna16_pretraining():
        return results_path("cubes", f"subset{luna16_subsets('val')[0]}.npy")
    return results_path("cubes", "own_val.npy")


def pretrain_shards(role):
    """Cube shards the pretraining of one role (train/val) reads."""
    shards = []
    if luna16_pretraining():
        shards += [
            results_path("cubes", f"subset{k}.npy") for k in luna16_subsets(role)
        ]
    if role in own_data_splits():
        shards.append(results_path("cubes", f"own_{role}.npy"))
    return shards


# --- target tasks ----------------------------------------------------------------------

#: The paper's tasks and their kinds; every other name in tasks.names is a user task
#: whose section gives its kind and data (genesis.tasks.kinds holds the same presets).
PRESET_KINDS = {"ncc": "classification", "lcs": "segmentation", "bms": "segmentation"}


def task_section(task):
    return config["tasks"].get(task) or {}


def task_kind(task):
    return PRESET_KINDS.get(task) or task_section(task).get("kind")


def check_tasks():
    """Every listed task is a preset or has a section with its kind and data."""
    for task in config["tasks"]["names"]:
        if task in PRESET_KINDS:
            if task_section(task).get("kind") not in (None, PRESET_KINDS[task]):
                raise ValueError(
                    f"tasks.{task}.kind: {task} is a built-in "
                    f"{PRESET_KINDS[task]} task"
                )
            continue
        section = config["tasks"].get(task)
        if section is None:
            raise ValueError(
                f"tasks.names lists {task!r}, but there is no tasks.{task} section: give "
                "its kind (classification or segmentation) and data (a folder or CSV)"
            )
        for key in ("kind", "data"):
            if not section.get(key):
                raise ValueError(f"tasks.{task}.{key} is required for a user task")
        if not Path(section["data"]).exists():
            raise ValueError(
                f"tasks.{task}.data: {section['data']} does not exist "
                "(an MSD-layout folder or a CSV)"
            )


check_tasks()


def tasks_of_kind(kind):
    return [t for t in config["tasks"]["names"] if task_kind(t) == kind]


def wildcard_choice(names):
    """A wildcard regex matching exactly these names (never matching when empty)."""
    return "|".join(names) if names else "(?!x)x"


def label_fractions(task):
    """Fractions of the training cases each init learns from; 1.0 is always run."""
    fractions = {float(f) for f in task_section(task).get("label_fractions") or []}
    return sorted(fractions | {1.0})


def fraction_label(fraction):
    """0.25 -> '25': the percentage in a sweep run's folder name (labels25)."""
    return f"{fraction * 100:g}"


def fraction_of(wildcards):
    """The label fraction of a run from its path: labels<pct>/ in a sweep, else 1."""
    pct = wildcards.get("pct")
    return 1.0 if pct is None else float(pct) / 100


def run_dir(task, init, run, fraction=1.0):
    """The one spelling of a fine-tuning run's folder.

    All labels: finetune/<task>/<init>/run<k>; a label sweep's fraction f < 1:
    finetune/<task>/<init>/labels<100 f>/run<k>.
    """
    if fraction == 1.0:
        return results_path("finetune", task, init, f"run{run}")
    return results_path(
        "finetune", task, init, f"labels{fraction_label(fraction)}", f"run{run}"
    )


def variant_of(init):
    """`genesis` -> `all`; `genesis-nonlinear` -> `nonlinear`."""
    return "all" if init == "genesis" else init.removeprefix("genesis-")


def task_inits():
    """Initialisations fine-tuned on every task: configured ones plus ablation variants."""
    inits = list(config["tasks"]["inits"])
    if "genesis" in inits:
        inits += [f"genesis-{v}" for v in config["pretrain"]["variants"] if v != "all"]
    for init, (key, _, _) in RELEASED.items():
        if config["tasks"].get(key) and init not in inits:
            inits.append(init)
    return inits


def pretrain_variants():
    """Variants to pretrain: those listed, plus `all` when `genesis` is fine-tuned."""
    variants = list(config["pretrain"]["variants"])
    if "genesis" in config["tasks"]["inits"] and "all" not in variants:
        variants.insert(0, "all")
    return variants


def init_weights(wildcards):
    """Weights a fine-tuning run starts from: none, our pretraining, or released ones."""
    init = wildcards.init
    if init == "scratch":
        return []
    if init in RELEASED:
        key, released_file, _ = RELEASED[init]
        value = config["tasks"][key]
        return [data_path("released", released_file) if value == "auto" else value]
    return [results_path("pretrain", variant_of(init), "weights.pt")]


def task_data(wildcards):
    """The --data of a task's preparation: the dataset folder, or a user task's path."""
    builtin = {"ncc": LUNA16, "lcs": LIVER, "bms": BRAIN}
    if wildcards.task in builtin:
        return str(builtin[wildcards.task])
    return task_section(wildcards.task)["data"]


def task_data_inputs(wildcards):
    """Raw data each task's preparation reads."""
    if wildcards.task not in PRESET_KINDS:
        return {"dataset": task_section(wildcards.task)["data"]}
    if wildcards.task == "ncc":
        subsets = luna16_subsets("train", "val", "test")
        return {
            "scans": [luna16_subset_dir(k) for k in subsets],
            "candidates": data_path("luna16", "candidates_V2.csv"),
        }
    folder = {"lcs": LIVER, "bms": BRAIN}[wildcards.task]
    return {"dataset": str(folder)}


def prepare_settings(wildcards):
    """NCC splits by the LUNA16 subsets configured once, under `luna16.subsets`."""
    extra = {"cube_size": config["cube_size"]}
    if wildcards.task == "ncc":
        subsets = config["luna16"]["subsets"]
        extra.update(
            {f"{role}_subsets": subsets[role] for role in ("train", "val", "test")}
        )
    section = task_section(wildcards.task)
    if wildcards.task not in PRESET_KINDS and section.get("modality"):
        extra["modality"] = section["modality"]
    return settings(section.get("prepare") or {}, **extra)


def task_split_file(wildcards):
    """A versioned split in config/splits/ pins the cases; none means derive and write one."""
    split = task_section(wildcards.task).get("split_file")
    return [repo_path(split)] if split else []


def task_kind_option(wildcards):
    """--kind for a user task (the presets know theirs)."""
    if wildcards.task in PRESET_KINDS:
        return []
    return ["--kind", task_kind(wildcards.task)]


def stage_settings(wildcards, stage):
    """A task's finetune/evaluate section plus the shared model keys, as JSON."""
    section = task_section(wildcards.task).get(stage) or {}
    return settings(section, **shared_model_settings())


def run_seed(run):
    return config["tasks"]["seed"] + int(run)


def run_dirs(task=None, init=None, sweeps=False):
    """Run folders at all labels; with ``sweeps``, every label fraction's as well."""
    tasks = [task] if task else config["tasks"]["names"]
    inits = [init] if init else task_inits()
    return [
        run_dir(t, i, k, f)
        for t in tasks
        for f in (label_fractions(t) if sweeps else [1.0])
        for i in inits
        for k in range(config["tasks"]["runs"])
    ]


def all_metrics():
    return [str(Path(run, "metrics.json")) for run in run_dirs(sweeps=True)]


def sweep_tasks():
    """Tasks with a label-efficiency sweep (label_fractions below 1)."""
    return [t for t in config["tasks"]["names"] if len(label_fractions(t)) > 1]


# --- final targets ---------------------------------------------------------------------


def final_targets():
    targets = [
        results_path("tables", "target_tasks.md"),
        results_path("figures", "transform_gallery.png"),
        results_path("figures", "pretraining_loss.png"),
        results_path("figures", "target_tasks.png"),
    ]
    targets += [
        results_path("figures", f"curves_{t}.png") for t in config["tasks"]["names"]
    ]
    targets += [
        results_path("figures", f"segmentation_{t}.png")
        for t in tasks_of_kind("segmentation")
    ]
    if sweep_tasks():
        targets += [results_path("tables", "label_efficiency.md")]
        targets += [
            results_path("figures", f"label_efficiency_{t}.png") for t in sweep_tasks()
        ]
    if ablation_ran():
        targets += [
            results_path("tables", "ablation.md"),
            results_path("figures", "ablation.png"),
        ]
    if config["reports"]["notebooks"]:
        targets += [
            results_path("reports", f"{name}.html") for name in report_notebooks()
        ]
    return targets


def ablation_ran():
    return any(v != "all" for v in config["pretrain"]["variants"])


def report_notebooks():
    names = ["pretraining", "summary"]
    names += [f"target_task_{t}" for t in config["tasks"]["names"]]
    return names


# --- report helpers --------------------------------------------------------------------


def data_label():
    """What the tables and figures were computed on, said in their titles."""
    if SYNTHETIC:
        label = "synthetic phantoms"
    else:
        label = "LUNA16 and MSD data"
    if own_data_splits():
        modality = config["own_data"]["modality"]
        scans = "own scans" if modality == "auto" else f"own {modality.upper()} scans"
        label += f"; pretrained on {scans}" + (
            " and LUNA16" if luna16_pretraining() else " only"
        )
    own = [t for t in config["tasks"]["names"] if t not in PRESET_KINDS]
    if own:
        label += "; own tasks: " + ", ".join(
            f"{t} ({task_section(t)['data']})" for t in own
        )
    return label


def output_stem(wildcards, output):
    """Figures are written as STEM.png and STEM.pdf; the engine takes the stem."""
    return str(Path(output.png).with_suffix(""))
