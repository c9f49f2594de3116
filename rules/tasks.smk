# Stage 4, target tasks: prepare each task in tasks.names (the paper's NCC/LCS/BMS or a
# user's own), fine-tune from each initialisation, several seeds and (label sweeps) every
# label fraction, evaluate on whole test volumes, and gather every run in one CSV.


rule prepare_task:
    input:
        unpack(task_data_inputs),
        split_file=task_split_file,
    output:
        directory(results_path("tasks", "{task}")),
    log:
        log_path("tasks", "prepare_{task}.log"),
    conda:
        "../envs/engine.yaml"
    threads: 1
    params:
        settings=prepare_settings,
        seed=config["seed"],
        data=task_data,
        kind=task_kind_option,
        split_file=lambda wc, input: (
            f"--split-file {shell_paths(input.split_file)}" if input.split_file else ""
        ),
    shell:
        "genesis prepare {wildcards.task} {params.kind} --data {params.data:q}"
        " --output-dir {output:q} --seed {params.seed} {params.split_file}"
        " --settings {params.settings:q} > {log:q} 2>&1"


rule finetune:
    input:
        data=results_path("tasks", "{task}"),
        weights=init_weights,
    output:
        weights=results_path("finetune", "{task}", "{init}", "run{run}", "weights.pt"),
        curves=results_path("finetune", "{task}", "{init}", "run{run}", "curves.csv"),
    log:
        log_path("finetune", "{task}_{init}_run{run}.log"),
    conda:
        "../envs/engine.yaml"
    threads: config["tasks"]["threads"]
    resources:
        gpu=TASK_GPU,
    params:
        settings=lambda wc: stage_settings(wc, "finetune"),
        seed=lambda wc: run_seed(wc.run),
        fraction=fraction_of,
        weights=lambda wc, input: (
            f"--weights {shell_paths(input.weights)}" if input.weights else ""
        ),
        output_dir=lambda wc, output: str(Path(output.weights).parent),
        progress=PROGRESS,
        jobs_per_gpu=config["tasks"]["jobs_per_gpu"],
    shell:
        "genesis finetune --task {wildcards.task} --data {input.data:q}"
        " --init {wildcards.init} {params.weights} --output-dir {params.output_dir:q}"
        " --seed {params.seed} --label-fraction {params.fraction}"
        " --jobs-per-gpu {params.jobs_per_gpu}"
        " --threads {threads} --settings {params.settings:q} 2>&1 | tee {log:q}"
        " | {params.progress}"


# A label sweep's run: the same job on a nested subset of the training cases.
use rule finetune as finetune_labels with:
    output:
        weights=results_path(
            "finetune", "{task}", "{init}", "labels{pct}", "run{run}", "weights.pt"
        ),
        curves=results_path(
            "finetune", "{task}", "{init}", "labels{pct}", "run{run}", "curves.csv"
        ),
    log:
        log_path("finetune", "{task}_{init}_labels{pct}_run{run}.log"),


rule evaluate:
    input:
        data=results_path("tasks", "{task}"),
        weights=rules.finetune.output.weights,
    output:
        metrics=results_path("finetune", "{task}", "{init}", "run{run}", "metrics.json"),
        per_case=results_path(
            "finetune", "{task}", "{init}", "run{run}", "per_case.csv"
        ),
        # Segmentation: predictions/<case>.nii.gz; empty for classification.
        predictions=directory(
            results_path("finetune", "{task}", "{init}", "run{run}", "predictions")
        ),
    log:
        log_path("evaluate", "{task}_{init}_run{run}.log"),
    conda:
        "../envs/engine.yaml"
    threads: config["tasks"]["threads"]
    resources:
        gpu=TASK_GPU,
    params:
        settings=lambda wc: stage_settings(wc, "evaluate"),
        run_dir=lambda wc, output: str(Path(output.metrics).parent),
        jobs_per_gpu=config["tasks"]["jobs_per_gpu"],
    shell:
        "genesis evaluate --task {wildcards.task} --data {input.data:q}"
        " --run-dir {params.run_dir:q} --threads {threads}"
        " --jobs-per-gpu {params.jobs_per_gpu}"
        " --settings {params.settings:q} > {log:q} 2>&1"


use rule evaluate as evaluate_labels with:
    input:
        data=results_path("tasks", "{task}"),
        weights=rules.finetune_labels.output.weights,
    output:
        metrics=results_path(
            "finetune", "{task}", "{init}", "labels{pct}", "run{run}", "metrics.json"
        ),
        per_case=results_path(
            "finetune", "{task}", "{init}", "labels{pct}", "run{run}", "per_case.csv"
        ),
        predictions=directory(
            results_path(
                "finetune",
                "{task}",
                "{init}",
                "labels{pct}",
                "run{run}",
                "predictions",
            )
        ),
    log:
        log_path("evaluate", "{task}_{init}_labels{pct}_run{run}.log"),


localrules:
    aggregate,


rule aggregate:
    input:
        all_metrics(),
    output:
        results_path("finetune", "summary.csv"),
    log:
        log_path("finetune", "aggregate.log"),
    conda:
        "../envs/engine.yaml"
    threads: 1
    shell:
        "genesis aggregate --metrics {input:q} --output {output:q} > {log:q} 2>&1"
