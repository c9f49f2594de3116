# Stage 3, pretraining: learn to restore transformed cubes (one model per variant).


rule pretrain:
    input:
        train=pretrain_shards("train"),
        val=pretrain_shards("val"),
    output:
        weights=results_path("pretrain", "{variant}", "weights.pt"),
        safetensors=results_path("pretrain", "{variant}", "weights.safetensors"),
        provenance=results_path("pretrain", "{variant}", "weights.json"),
        metrics=results_path("pretrain", "{variant}", "metrics.csv"),
    log:
        log_path("pretrain", "{variant}.log"),
    benchmark:
        log_path("benchmarks", "pretrain", "{variant}.tsv")
    conda:
        "../envs/engine.yaml"
    threads: config["pretrain"]["threads"]
    resources:
        gpu=config["pretrain"]["gpus"],
        mem_mb=training_mem_mb(config["pretrain"]["settings"].get("batch_size", 6)),
        runtime=pretrain_runtime,
    params:
        settings=settings(config["pretrain"]["settings"], **shared_model_settings()),
        seed=config["seed"],
        gpus=config["pretrain"]["gpus"],
        output_dir=lambda wc: results_path("pretrain", wc.variant),
    shell:
        "genesis pretrain --train {input.train:q} --val {input.val:q}"
        " --output-dir {params.output_dir:q} --variant {wildcards.variant:q}"
        " --seed {params.seed:q} --threads {threads:q} --gpus {params.gpus:q}"
        " --settings {params.settings:q} 2>&1 | tee {log:q} | (grep --line-buffered -E 'INFO .* epoch [0-9]+: ' || true)"
