# Stage 5, paper outputs: tables with significance, figures, notebook reports.
# Every engine command and notebook reads only the files its rule declares as inputs,
# passed to it as paths: nothing here searches results/, so a leftover run folder (run9
# after tasks.runs shrank) cannot leak into a figure or report.


# Report jobs read small files and draw: they run on the submitting machine, not as
# cluster jobs. provenance is not listed: it records the hardware it runs on.
localrules:
    tables,
    figure_label_efficiency,
    figure_gallery,
    figure_pretraining,
    figure_tasks,
    figure_curves,
    figure_segmentations,
    figure_ablation,
    notebook_pretraining,
    notebook_summary,
    notebook_target_task,
    notebook_html,


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
        "genesis provenance --resolved-config {params.config:q} --output {output:q}"
        " > {log:q} 2>&1"


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
        "genesis figures label-efficiency --summary {input.summary:q} --task {wildcards.task:q}"
        " --data-label {params.data_label:q} --output {params.stem:q} > {log:q} 2>&1"


rule figure_gallery:
    input:
        cubes=gallery_shard(),
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
        # LUNA16 is CT; own scans are of own_data.modality (auto: each scan's own).
        modality="ct" if luna16_pretraining() else config["own_data"]["modality"],
        data_label=data_label() if luna16_pretraining() else "own scans",
    shell:
        "genesis figures gallery --cubes {input.cubes:q} --output {params.stem:q}"
        " --seed {params.seed:q} --settings {params.settings:q}"
        " --modality {params.modality:q} --data-label {params.data_label:q} > {log:q} 2>&1"


rule figure_pretraining:
    input:
        metrics=expand(
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
        data_label=(
            data_label()
            + ("; pretraining also on own scans" if own_data_splits() else "")
            if luna16_pretraining()
            else "own scans"
        ),
    shell:
        "genesis figures pretraining --metrics {input.metrics:q}"
        " --data-label {params.data_label:q} --output {params.stem:q} > {log:q} 2>&1"


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
        data_label=data_label(),
    shell:
        "genesis figures tasks --summary {input.summary:q} --published {input.published:q}"
        " --data-label {params.data_label:q} --output {params.stem:q} > {log:q} 2>&1"


rule figure_curves:
    input:
        curves=lambda wc: [
            str(Path(run, "curves.csv")) for run in run_dirs(task=wc.task)
        ],
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
        data_label=data_label(),
    shell:
        "genesis figures curves --task {wildcards.task:q} --curves {input.curves:q}"
        " --data-label {params.data_label:q} --output {params.stem:q} > {log:q} 2>&1"


rule figure_segmentations:
    input:
        # Run 0 of every configured init (ablation variants are not shown). Until evaluate
        # declares predictions/ (rules/tasks.smk), per_case.csv, written with it, orders
        # the jobs.
        predictions=lambda wc: (
            [
                str(Path(run_dir(wc.task, init, 0), "predictions"))
                for init in config["tasks"]["inits"]
            ]
            if "predictions" in rules.evaluate.output.keys()
            else []
        ),
        per_case=lambda wc: [
            str(Path(run_dir(wc.task, init, 0), "per_case.csv"))
            for init in config["tasks"]["inits"]
        ],
        task_dir=results_path("tasks", "{task}"),
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
        predictions=lambda wc, input: [
            str(Path(path).with_name("predictions")) for path in input.per_case
        ],
        data_label=data_label(),
    shell:
        "genesis figures segmentations --task {wildcards.task:q}"
        " --predictions {params.predictions:q} --per-case {input.per_case:q}"
        " --task-dir {input.task_dir:q} --data-label {params.data_label:q}"
        " --output {params.stem:q} > {log:q} 2>&1"


rule figure_ablation:
    input:
        summary=rules.aggregate.output[0],
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
        data_label=data_label(),
    shell:
        "genesis figures ablation --summary {input.summary:q}"
        " --data-label {params.data_label:q} --output {params.stem:q} > {log:q} 2>&1"


# Notebook reports: each notebook's parameters are exactly its rule's inputs (besides the
# notebook and its helper module), by name, with the data label (and the task). papermill
# runs the kernel in the working directory; PYTHONPATH makes notebooks/report_helpers.py
# importable.
rule notebook_summary:
    input:
        notebook=repo_path("notebooks", "summary.ipynb"),
        helpers=repo_path("notebooks", "report_helpers.py"),
        target_table=rules.tables.output.csv,
        ablation_table=rules.tables.output.ablation_csv,
        tasks_figure=rules.figure_tasks.output.png,
        ablation_figure=rules.figure_ablation.output.png if ablation_ran() else [],
        label_table=rules.tables.output.label_csv,
        label_figures=[
            results_path("figures", f"label_efficiency_{t}.png") for t in sweep_tasks()
        ],
        records=[rules.tables.output.record, rules.provenance.output[0]],
    output:
        results_path("reports", "summary.ipynb"),
    log:
        log_path("report", "notebook_summary.log"),
    conda:
        "../envs/reports.yaml"
    threads: 1
    resources:
        notebook_kernels=1,
    params:
        helpers_dir=lambda wc, input: str(Path(input.helpers).parent),
        parameters=lambda wc, input: json.dumps(
            {
                "data_label": data_label(),
                **dict(wc.items()),
                **{
                    name: files if isinstance(files, str) else list(files)
                    for name, files in input.items()
                    if name not in ("notebook", "helpers") and files
                },
            },
            sort_keys=True,
        ),
    shell:
        "PYTHONPATH={params.helpers_dir:q}${{PYTHONPATH:+:$PYTHONPATH}}"
        " papermill {input.notebook:q} {output:q} -k python3 --start-timeout 180"
        " -y {params.parameters:q} > {log:q} 2>&1"


use rule notebook_summary as notebook_pretraining with:
    input:
        notebook=repo_path("notebooks", "pretraining.ipynb"),
        helpers=repo_path("notebooks", "report_helpers.py"),
        pretrain_metrics=expand(
            results_path("pretrain", "{variant}", "metrics.csv"),
            variant=pretrain_variants(),
        ),
        pretrain_weights=expand(
            results_path("pretrain", "{variant}", "weights.json"),
            variant=pretrain_variants(),
        ),
        gallery_figure=rules.figure_gallery.output.png,
        records=[rules.provenance.output[0]],
    output:
        results_path("reports", "pretraining.ipynb"),
    log:
        log_path("report", "notebook_pretraining.log"),


use rule notebook_summary as notebook_target_task with:
    input:
        notebook=repo_path("notebooks", "target_task.ipynb"),
        helpers=repo_path("notebooks", "report_helpers.py"),
        summary=rules.aggregate.output[0],
        target_table=rules.tables.output.csv,
        ablation_table=rules.tables.output.ablation_csv,
        curves=lambda wc: [
            str(Path(run, "curves.csv")) for run in run_dirs(task=wc.task)
        ],
        per_case=lambda wc: [
            str(Path(run, "per_case.csv")) for run in run_dirs(task=wc.task)
        ],
        segmentation_figure=lambda wc: (
            results_path("figures", f"segmentation_{wc.task}.png")
            if task_kind(wc.task) == "segmentation"
            else []
        ),
        records=[rules.tables.output.record, rules.provenance.output[0]],
    output:
        results_path("reports", "target_task_{task}.ipynb"),
    log:
        log_path("report", "notebook_target_task_{task}.log"),


rule notebook_html:
    input:
        results_path("reports", "{name}.ipynb"),
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
    params:
        output_dir=lambda wc, output: str(Path(output[0]).parent),
    shell:
        "jupyter nbconvert --to html --no-input --output-dir {params.output_dir:q}"
        " {input:q} > {log:q} 2>&1"
