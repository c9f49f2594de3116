# Stage 5, paper outputs: tables with significance, figures, notebook reports.
# Everything here reads files under results/ only.


rule provenance:
    output:
        results_path("provenance.json"),
    log:
        log_path("report", "provenance.log"),
    conda:
        "../envs/engine.yaml"
    threads: 1
    params:
        config=json.dumps(config, sort_keys=True),
    shell:
        "genesis provenance --resolved-config {params.config:q} --output {output} > {log} 2>&1"


rule tables:
    input:
        summary=rules.aggregate.output[0],
        published=repo_path("config", "published.csv"),
        provenance=rules.provenance.output[0],
    output:
        csv=results_path("tables", "target_tasks.csv"),
        md=report(
            results_path("tables", "target_tasks.md"),
            caption="../report/target_tasks_table.rst",
            category="5. Target tasks",
            subcategory="Tables",
        ),
        tex=results_path("tables", "target_tasks.tex"),
        record=results_path("tables", "target_tasks.provenance.json"),
        ablation_csv=results_path("tables", "ablation.csv"),
        ablation_md=report(
            results_path("tables", "ablation.md"),
            caption="../report/ablation_table.rst",
            category="6. Ablation",
        ),
        ablation_tex=results_path("tables", "ablation.tex"),
        ablation_record=results_path("tables", "ablation.provenance.json"),
        # Every fraction of every task (fraction 1.0 only without a label sweep).
        label_csv=results_path("tables", "label_efficiency.csv"),
        label_md=report(
            results_path("tables", "label_efficiency.md"),
            caption="../report/label_efficiency_table.rst",
            category="5. Target tasks",
            subcategory="Label efficiency",
        ),
        label_tex=results_path("tables", "label_efficiency.tex"),
    log:
        log_path("report", "tables.log"),
    conda:
        "../envs/engine.yaml"
    threads: 1
    params:
        output_dir=lambda wc, output: Path(output.csv).parent,
        label_stem=lambda wc, output: str(Path(output.label_csv).with_suffix("")),
        data_label=data_label(),
        seeds=json.dumps(
            {
                "data": config["seed"],
                "runs": [run_seed(k) for k in range(config["tasks"]["runs"])],
            }
        ),
    shell:
        "genesis tables --summary {input.summary:q} --published {input.published:q}"
        " --provenance {input.provenance:q} --seeds {params.seeds:q}"
        " --data-label {params.data_label:q} --label-efficiency {params.label_stem:q}"
        " --output-dir {params.output_dir:q} > {log:q} 2>&1"


rule figure_label_efficiency:
    input:
        summary=rules.aggregate.output[0],
    output:
        png=report(
            results_path("figures", "label_efficiency_{task}.png"),
            caption="../report/label_efficiency.rst",
            category="5. Target tasks",
            subcategory="Label efficiency",
        ),
        pdf=results_path("figures", "label_efficiency_{task}.pdf"),
    log:
        log_path("report", "figure_label_efficiency_{task}.log"),
    conda:
        "../envs/engine.yaml"
    threads: 1
    params:
        stem=output_stem,
        data_label=data_label(),
    shell:
        "genesis figures label-efficiency --summary {input.summary:q} --task {wildcards.task}"
        " --data-label {params.data_label:q} --output {params.stem:q} > {log:q} 2>&1"


rule figure_gallery:
    input:
        gallery_shard(),
    output:
        png=report(
            results_path("figures", "transform_gallery.png"),
            caption="../report/transform_gallery.rst",
            category="2. Cubes and transformations",
        ),
        pdf=results_path("figures", "transform_gallery.pdf"),
    log:
        log_path("report", "figure_gallery.log"),
    conda:
        "../envs/engine.yaml"
    threads: 1
    params:
        stem=output_stem,
        seed=config["seed"],
        settings=settings(config["pretrain"]["settings"].get("transforms", {})),
    shell:
        "genesis figures gallery --cubes {input} --output {params.stem}"
        " --seed {params.seed} --settings {params.settings:q} > {log} 2>&1"


rule figure_pretraining:
    input:
        expand(
            results_path("pretrain", "{variant}", "metrics.csv"),
            variant=pretrain_variants(),
        ),
    output:
        png=report(
            results_path("figures", "pretraining_loss.png"),
            caption="../report/pretraining_loss.rst",
            category="3. Pretraining",
        ),
        pdf=results_path("figures", "pretraining_loss.pdf"),
    log:
        log_path("report", "figure_pretraining.log"),
    conda:
        "../envs/engine.yaml"
    threads: 1
    params:
        stem=output_stem,
    shell:
        "genesis figures pretraining --metrics {input} --output {params.stem} > {log} 2>&1"


rule figure_tasks:
    input:
        summary=rules.aggregate.output[0],
        published=repo_path("config", "published.csv"),
    output:
        png=report(
            results_path("figures", "target_tasks.png"),
            caption="../report/target_tasks.rst",
            category="5. Target tasks",
            subcategory="Figures",
        ),
        pdf=results_path("figures", "target_tasks.pdf"),
    log:
        log_path("report", "figure_tasks.log"),
    conda:
        "../envs/engine.yaml"
    threads: 1
    params:
        stem=output_stem,
    shell:
        "genesis figures tasks --summary {input.summary} --published {input.published}"
        " --output {params.stem} > {log} 2>&1"


rule figure_curves:
    input:
        lambda wc: [str(Path(run, "curves.csv")) for run in run_dirs(task=wc.task)],
    output:
        png=report(
            results_path("figures", "curves_{task}.png"),
            caption="../report/curves.rst",
            category="5. Target tasks",
            subcategory="Learning curves",
        ),
        pdf=results_path("figures", "curves_{task}.pdf"),
    log:
        log_path("report", "figure_curves_{task}.log"),
    conda:
        "../envs/engine.yaml"
    threads: 1
    params:
        stem=output_stem,
        runs_root=results_path("finetune"),
    shell:
        "genesis figures curves --task {wildcards.task} --runs-root {params.runs_root}"
        " --output {params.stem} > {log} 2>&1"


rule figure_segmentations:
    input:
        lambda wc: [str(Path(run, "metrics.json")) for run in run_dirs(task=wc.task)],
        tasks=results_path("tasks", "{task}"),
    output:
        png=report(
            results_path("figures", "segmentation_{task}.png"),
            caption="../report/segmentation.rst",
            category="5. Target tasks",
            subcategory="Segmentations",
        ),
        pdf=results_path("figures", "segmentation_{task}.pdf"),
    log:
        log_path("report", "figure_segmentations_{task}.log"),
    wildcard_constraints:
        task=wildcard_choice(tasks_of_kind("segmentation")),
    conda:
        "../envs/engine.yaml"
    threads: 1
    params:
        stem=output_stem,
        runs_root=results_path("finetune"),
        tasks_root=lambda wc, input: Path(input.tasks).parent,
    shell:
        "genesis figures segmentations --task {wildcards.task} --runs-root {params.runs_root}"
        " --tasks-root {params.tasks_root} --output {params.stem} > {log} 2>&1"


rule figure_ablation:
    input:
        rules.aggregate.output[0],
    output:
        png=report(
            results_path("figures", "ablation.png"),
            caption="../report/ablation.rst",
            category="6. Ablation",
        ),
        pdf=results_path("figures", "ablation.pdf"),
    log:
        log_path("report", "figure_ablation.log"),
    conda:
        "../envs/engine.yaml"
    threads: 1
    params:
        stem=output_stem,
    shell:
        "genesis figures ablation --summary {input} --output {params.stem} > {log} 2>&1"


rule notebook:
    input:
        notebook=notebook_source,
        results=notebook_inputs,
    output:
        results_path("reports", "{name}.ipynb"),
    log:
        log_path("report", "notebook_{name}.log"),
    conda:
        "../envs/reports.yaml"
    threads: 1
    resources:
        notebook_kernels=1,
    params:
        results=lambda wc, output: Path(output[0]).parents[1],
        parameters=notebook_parameters,
    shell:
        "papermill {input.notebook} {output} -k python3 --start-timeout 180"
        " -p results_dir {params.results} {params.parameters} > {log} 2>&1"


rule notebook_html:
    input:
        rules.notebook.output[0],
    output:
        report(
            results_path("reports", "{name}.html"),
            caption="../report/notebook.rst",
            category="7. Notebook reports",
        ),
    log:
        log_path("report", "notebook_html_{name}.log"),
    conda:
        "../envs/reports.yaml"
    threads: 1
    shell:
        "jupyter nbconvert --to html --no-input --output-dir $(dirname {output})"
        " {input} > {log} 2>&1"
