# Parse-time validation: every stage's settings are built here with the engine's own
# settings classes, exactly as each job will build them from its --settings JSON, so a bad
# value (a non-finite learning rate, a NaN tolerance, a cube size that is not a multiple
# of 16/16/8, a fold out of range) stops `snakemake -n` naming the key, before the first
# job, instead of failing hours into a run. The ranges live in one place, the fields of
# the engine's dataclasses (genesis.settings.setting); the schema that common.smk checks
# first is generated from them, and this adds what a JSON schema cannot say (finite
# numbers, rules across keys) with the engine's own messages.
#
# The workflow's Python needs the engine importable for this (the README's `make install`
# puts both in one environment). Without it the check is skipped with a warning and each
# job still validates its own settings when it starts.
from types import SimpleNamespace


def _engine_checks():
    """(config key, callable) pairs; each callable builds one section's settings."""
    from genesis.data.fetch import FetchSettings
    from genesis.settings import from_mapping
    from genesis.settings_schema import STAGES, load_class

    def stage(name, section, key, **extra):
        cls = load_class(STAGES[name][0])
        return key, lambda: from_mapping(cls, {**(section or {}), **extra}, key)

    checks = []
    synthetic = config["data"]["synthetic"]
    subsets = luna16_subsets("train", "val", "test")
    checks.append(
        stage(
            "synthetic_luna16",
            synthetic.get("luna16"),
            "data.synthetic.luna16",
            subsets=subsets,
        )
    )
    checks.append(
        stage("synthetic_liver", synthetic.get("liver"), "data.synthetic.liver")
    )
    checks.append(
        stage("synthetic_brain", synthetic.get("brain"), "data.synthetic.brain")
    )
    for name, section in config["data"].get("real", {}).items():
        checks.append(stage("fetch", section, f"data.real.{name}"))
    checks.append(stage("fetch", config["data"].get("released"), "data.released"))
    checks.append(
        stage("cubes", config["cubes"], "cubes", cube_size=config["cube_size"])
    )
    checks.append(
        stage(
            "pretrain",
            config["pretrain"]["settings"],
            "pretrain.settings",
            **shared_model_settings(),
        )
    )
    for task in config["tasks"]["names"]:
        checks.extend(_task_checks(task, stage))
    return checks


def _task_checks(task, stage):
    from genesis.tasks.evaluate import EvaluateSettings
    from genesis.tasks.finetune import resolve_settings
    from genesis.settings import from_mapping

    section = task_section(task)
    prepare = json.loads(prepare_settings(SimpleNamespace(task=task)))
    kind = task_kind(task)
    name = f"prepare_{task}" if task in PRESET_KINDS else f"prepare_{task_kind(task)}"
    shared = shared_model_settings()
    return [
        stage(name, prepare, f"tasks.{task}.prepare"),
        (
            f"tasks.{task}.finetune",
            lambda: resolve_settings(
                task, {**(section.get("finetune") or {}), **shared}, kind
            ),
        ),
        (
            f"tasks.{task}.evaluate",
            lambda: from_mapping(
                EvaluateSettings,
                {**(section.get("evaluate") or {}), **shared},
                f"tasks.{task}.evaluate",
            ),
        ),
    ]


def _cross_field_checks():
    """Rules that span sections (the engine sees one section at a time)."""
    roles = config["luna16"]["subsets"]
    for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = sorted(set(roles[first]) & set(roles[second]))
        if shared:
            raise ValueError(
                f"luna16.subsets: subset(s) {shared} are in both {first} and {second}; "
                "pretraining would validate on its training cubes"
            )
    for role in ("train", "val"):
        if not roles[role]:
            raise ValueError(f"luna16.subsets.{role} must list at least one subset")
    for task in config["tasks"]["names"]:
        for fraction in task_section(task).get("label_fractions") or []:
            # The run folder labels<pct> must give the fraction back exactly.
            if float(fraction_label(float(fraction))) / 100 != float(fraction):
                raise ValueError(
                    f"tasks.{task}.label_fractions: {fraction} cannot be named exactly as a "
                    "percentage; use at most 4 significant digits (e.g. 0.333)"
                )
    x, y, z = config["cube_size"]
    if x % 16 or y % 16 or z % 8:
        raise ValueError(
            f"cube_size {config['cube_size']}: x and y must be multiples of 16 and z of 8 "
            "(the U-Net pools four times in x and y, three times in z)"
        )
    if SYNTHETIC:
        shape = config["data"]["synthetic"]["luna16"].get("shape")
        border = config["cubes"].get("border")
        if shape and border:
            for axis, (n, cube, edge) in enumerate(
                zip(shape, config["cube_size"], border)
            ):
                if n < cube + 2 * edge:
                    raise ValueError(
                        f"cube_size {config['cube_size']} with cubes.border {border} "
                        f"does not fit the phantoms of data.synthetic.luna16.shape {shape} "
                        f"(axis {'xyz'[axis]}: {cube} + 2 x {edge} > {n})"
                    )


def validate_settings():
    _cross_field_checks()
    try:
        checks = _engine_checks()
    except ImportError as error:
        logger.warning(
            f"genesis is not importable here ({error}): stage settings are checked when "
            "each job starts instead of now"
        )
        return
    from genesis.errors import ConfigError

    for key, build in checks:
        try:
            build()
        except ConfigError as error:
            raise ValueError(f"invalid config ({key}): {error}") from None


validate_settings()
