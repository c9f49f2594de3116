# Stage 2, cubes: the paper's pretraining inputs, cut from each LUNA16 subset (or from the
# user's own unlabelled scans) into compact float16 shards with a manifest.


rule extract_cubes:
    input:
        luna16_subset_dir("{subset}"),
    output:
        shard=results_path("cubes", "subset{subset}.npy"),
        manifest=results_path("cubes", "subset{subset}.csv"),
    log:
        log_path("cubes", "subset{subset}.log"),
    benchmark:
        log_path("benchmarks", "cubes", "subset{subset}.tsv")
    conda:
        "../envs/engine.yaml"
    threads: 1
    resources:
        mem_mb=CUBES_MEM_MB,
    params:
        # LUNA16 is cut with the paper's recipe (border and min_slices as given).
        settings=settings(
            config["cubes"], cube_size=config["cube_size"], recipe="paper"
        ),
        seed=config["seed"],
        split=lambda wc: (
            "val" if int(wc.subset) in config["luna16"]["subsets"]["val"] else "train"
        ),
    shell:
        "genesis cubes --inputs {input:q} --output {output.shard:q} --split {params.split:q}"
        " --modality ct --seed {params.seed:q} --settings {params.settings:q} > {log:q} 2>&1"


rule extract_own_cubes:
    input:
        lambda wc: config["own_data"][wc.split],
    output:
        shard=results_path("cubes", "own_{split}.npy"),
        manifest=results_path("cubes", "own_{split}.csv"),
    log:
        log_path("cubes", "own_{split}.log"),
    benchmark:
        log_path("benchmarks", "cubes", "own_{split}.tsv")
    conda:
        "../envs/engine.yaml"
    threads: 1
    resources:
        mem_mb=CUBES_MEM_MB,
    params:
        settings=settings(config["cubes"], cube_size=config["cube_size"]),
        seed=config["seed"],
        modality=config["own_data"]["modality"],
        skip_bad="--skip-bad" if config["own_data"]["skip_bad"] else "--no-skip-bad",
    shell:
        "genesis cubes --inputs {input:q} --output {output.shard:q} --split {wildcards.split:q}"
        " --modality {params.modality:q} --seed {params.seed:q} {params.skip_bad:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"
