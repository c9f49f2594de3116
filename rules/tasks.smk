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
            ["--split-file", *input.split_file] if input.split_file else []
        ),
    shell:
        "genesis prepare {wildcards.task:q} {params.kind:q} --data {params.data:q}"
        " --output-dir {output:q} --seed {params.seed:q} {params.split_file:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"


rule finetune:
    input:
        data=results_path("tasks", "{task}"),
        weights=init_weights,
    output:
        # The whole weight set: evaluation reads the model and run record from the .json.
        weights=multiext(run_folder("weights"), ".pt", ".safetensors", ".json"),
        curves=run_folder("curves.csv"),
    log:
        log_path("finetune", "{task}_{init}_run{run}.log"),
    benchmark:
        log_path("benchmarks", "finetune", "{task}_{init}_run{run}.tsv")
    conda:
        "../envs/engine.yaml"
    threads: config["tasks"]["threads"]
    resources:
        gpu=TASK_GPU,
        mem_mb=finetune_mem_mb,
        runtime=finetune_runtime,
    params:
        settings=lambda wc: stage_settings(wc, "finetune"),
        seed=lambda wc: run_seed(wc.run),
        fraction=fraction_of,
        weights=lambda wc, input: (
            ["--weights", *input.weights] if input.weights else []
        ),
        output_dir=lambda wc, output: str(Path(output.curves).parent),
        jobs_per_gpu=config["tasks"]["jobs_per_gpu"],
    shell:
        "genesis finetune --task {wildcards.task:q} --data {input.data:q}"
        " --init {wildcards.init:q} {params.weights:q} --output-dir {params.output_dir:q}"
        " --seed {params.seed:q} --label-fraction {params.fraction:q}"
        " --jobs-per-gpu {params.jobs_per_gpu:q}"
        " --threads {threads:q} --settings {params.settings:q} 2>&1 | tee {log:q}"
        " | (grep --line-buffered -E 'INFO .* epoch [0-9]+: ' || true)"


# A label sweep's run: the same job on a nested subset of the training cases.
use rule finetune as finetune_labels with:
    output:
        weights=multiext(
            run_folder("weights", sweep=True), ".pt", ".safetensors", ".json"
        ),
        curves=run_folder("curves.csv", sweep=True),
    log:
        log_path("finetune", "{task}_{init}_labels{pct}_run{run}.log"),
    benchmark:
        log_path("benchmarks", "finetune", "{task}_{init}_labels{pct}_run{run}.tsv")


rule evaluate:
    input:
        data=results_path("tasks", "{task}"),
        weights=rules.finetune.output.weights,
    output:
        metrics=run_folder("metrics.json"),
        per_case=run_folder("per_case.csv"),
        # Segmentation: predictions/<case>.nii.gz; empty for classification.
        predictions=directory(run_folder("predictions")),
    log:
        log_path("evaluate", "{task}_{init}_run{run}.log"),
    benchmark:
        log_path("benchmarks", "evaluate", "{task}_{init}_run{run}.tsv")
    conda:
        "../envs/engine.yaml"
    threads: config["tasks"]["threads"]
    resources:
        gpu=TASK_GPU,
        mem_mb=lambda wc: training_mem_mb(1),
    params:
        settings=lambda wc: stage_settings(wc, "evaluate"),
        run_dir=lambda wc, output: str(Path(output.metrics).parent),
        jobs_per_gpu=config["tasks"]["jobs_per_gpu"],
    shell:
        "genesis evaluate --task {wildcards.task:q} --data {input.data:q}"
        " --run-dir {params.run_dir:q} --threads {threads:q}"
        " --jobs-per-gpu {params.jobs_per_gpu:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"


use rule evaluate as evaluate_labels with:
    input:
        data=results_path("tasks", "{task}"),
        weights=rules.finetune_labels.output.weights,
    output:
        metrics=run_folder("metrics.json", sweep=True),
        per_case=run_folder("per_case.csv", sweep=True),
        predictions=directory(run_folder("predictions", sweep=True)),
    log:
        log_path("evaluate", "{task}_{init}_labels{pct}_run{run}.log"),
    benchmark:
        log_path("benchmarks", "evaluate", "{task}_{init}_labels{pct}_run{run}.tsv")


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
