# Stage 4, target tasks: prepare NCC/LCS/BMS, fine-tune from each initialisation and
# several seeds, evaluate on whole test volumes, and gather every run in one CSV.


rule prepare_task:
    input:
        unpack(task_data_inputs),
        split_file=task_split_file,
    output:
        directory(results_path("tasks", "{task}")),
    log:
        log_path("tasks", "prepare_{task}.log"),
    wildcard_constraints:
        task="ncc|lcs|bms",
    conda:
        "../envs/engine.yaml"
    threads: 1
    params:
        settings=prepare_settings,
        seed=config["seed"],
        data=lambda wc: {"ncc": LUNA16, "lcs": LIVER, "bms": BRAIN}[wc.task],
        split_file=lambda wc, input: (
            f"--split-file {input.split_file}" if input.split_file else ""
        ),
    shell:
        "genesis prepare {wildcards.task} --data {params.data} --output-dir {output}"
        " --seed {params.seed} {params.split_file} --settings {params.settings:q} > {log} 2>&1"


rule finetune:
    input:
        data=results_path("tasks", "{task}"),
        weights=init_weights,
    output:
        weights=results_path("finetune", "{task}", "{init}", "run{run}", "weights.pt"),
        curves=results_path("finetune", "{task}", "{init}", "run{run}", "curves.csv"),
    log:
        log_path("finetune", "{task}_{init}_run{run}.log"),
    wildcard_constraints:
        task="ncc|lcs|bms",
        init="scratch|released|genesis(-[a-z_]+)?",
        run=r"\d+",
    conda:
        "../envs/engine.yaml"
    threads: config["tasks"]["threads"]
    resources:
        gpu=1,
    params:
        settings=lambda wc: settings(
            config["tasks"][wc.task]["finetune"], **shared_model_settings()
        ),
        seed=lambda wc: run_seed(wc.run),
        weights=lambda wc, input: f"--weights {input.weights}" if input.weights else "",
        output_dir=lambda wc: results_path("finetune", wc.task, wc.init, f"run{wc.run}"),
    shell:
        "genesis finetune --task {wildcards.task} --data {input.data} --init {wildcards.init}"
        " {params.weights} --output-dir {params.output_dir} --seed {params.seed}"
        " --threads {threads} --settings {params.settings:q} > {log} 2>&1"


rule evaluate:
    input:
        data=results_path("tasks", "{task}"),
        weights=rules.finetune.output.weights,
    output:
        metrics=results_path("finetune", "{task}", "{init}", "run{run}", "metrics.json"),
        per_case=results_path(
            "finetune", "{task}", "{init}", "run{run}", "per_case.csv"
        ),
    log:
        log_path("evaluate", "{task}_{init}_run{run}.log"),
    wildcard_constraints:
        task="ncc|lcs|bms",
        init="scratch|released|genesis(-[a-z_]+)?",
        run=r"\d+",
    conda:
        "../envs/engine.yaml"
    threads: config["tasks"]["threads"]
    resources:
        gpu=1,
    params:
        settings=lambda wc: settings(
            config["tasks"][wc.task]["evaluate"], **shared_model_settings()
        ),
        run_dir=lambda wc: results_path("finetune", wc.task, wc.init, f"run{wc.run}"),
    shell:
        "genesis evaluate --task {wildcards.task} --data {input.data}"
        " --run-dir {params.run_dir} --threads {threads}"
        " --settings {params.settings:q} > {log} 2>&1"


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
        "genesis aggregate --metrics {input} --output {output} > {log} 2>&1"
