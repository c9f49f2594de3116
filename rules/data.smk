# Stage 1, data: synthetic phantoms in the real on-disk layouts, or the real downloads.
# Both produce the same paths, so every later stage runs the same code on either.


if SYNTHETIC:

    rule synthesize_luna16:
        output:
            subsets=directory(
                [luna16_subset_dir(k) for k in luna16_subsets("train", "val", "test")]
            ),
            annotations=data_path("luna16", "annotations.csv"),
            candidates=data_path("luna16", "candidates_V2.csv"),
        log:
            log_path("data", "synthesize_luna16.log"),
        conda:
            "../envs/engine.yaml"
        threads: 1
        params:
            settings=settings(
                config["data"]["synthetic"]["luna16"],
                subsets=luna16_subsets("train", "val", "test"),
            ),
            seed=config["seed"],
            folder=lambda wc, output: Path(output.annotations).parent,
        shell:
            "genesis synth luna16 --output {params.folder:q} --seed {params.seed:q}"
            " --settings {params.settings:q} > {log:q} 2>&1"

    rule synthesize_liver:
        output:
            directory(str(LIVER)),
        log:
            log_path("data", "synthesize_liver.log"),
        conda:
            "../envs/engine.yaml"
        threads: 1
        params:
            settings=settings(config["data"]["synthetic"]["liver"]),
            seed=config["seed"],
        shell:
            "genesis synth liver --output {output:q} --seed {params.seed:q}"
            " --settings {params.settings:q} > {log:q} 2>&1"

    rule synthesize_brain:
        output:
            directory(str(BRAIN)),
        log:
            log_path("data", "synthesize_brain.log"),
        conda:
            "../envs/engine.yaml"
        threads: 1
        params:
            settings=settings(config["data"]["synthetic"]["brain"]),
            seed=config["seed"],
        shell:
            "genesis synth brain --output {output:q} --seed {params.seed:q}"
            " --settings {params.settings:q} > {log:q} 2>&1"

else:

    rule download_luna16_subset:
        output:
            directory(luna16_subset_dir("{subset}")),
        log:
            log_path("data", "download_luna16_subset{subset}.log"),
        retries: 2
        conda:
            "../envs/engine.yaml"
        threads: 1
        params:
            settings=settings(config["data"]["real"]["luna16"]),
            # data/luna16/subset{k} -> data
            root=lambda wc, output: str(Path(output[0]).parent.parent),
        shell:
            "genesis fetch luna16 --output {params.root:q} --files subset{wildcards.subset:q}.zip"
            " --settings {params.settings:q} > {log:q} 2>&1"

    rule download_luna16_tables:
        output:
            annotations=data_path("luna16", "annotations.csv"),
            candidates=data_path("luna16", "candidates_V2.csv"),
        log:
            log_path("data", "download_luna16_tables.log"),
        retries: 2
        conda:
            "../envs/engine.yaml"
        threads: 1
        params:
            settings=settings(config["data"]["real"]["luna16"]),
            root=lambda wc, output: str(Path(output.annotations).parent.parent),
        shell:
            "genesis fetch luna16 --output {params.root:q}"
            " --files annotations.csv candidates_V2.zip"
            " --settings {params.settings:q} > {log:q} 2>&1"

    rule download_msd_task:
        output:
            directory(data_path("{msd_task}")),
        log:
            log_path("data", "download_{msd_task}.log"),
        retries: 2
        conda:
            "../envs/engine.yaml"
        threads: 1
        params:
            dataset=lambda wc: {
                "Task03_Liver": "liver",
                "Task01_BrainTumour": "brain",
            }[wc.msd_task],
            settings=lambda wc: settings(
                config["data"]["real"][
                    {"Task03_Liver": "liver", "Task01_BrainTumour": "brain"}[
                        wc.msd_task
                    ]
                ]
            ),
            root=lambda wc, output: str(Path(output[0]).parent),
        shell:
            "genesis fetch {params.dataset:q} --output {params.root:q}"
            " --settings {params.settings:q} > {log:q} 2>&1"


# The authors' released models (Hugging Face), in both modes: `released` fine-tuning
# starts from Genesis_Chest_CT.pt. Settings: `data.released` (base_url, checksums,
# local_path, hub_api, ...). genesis_nnunet_luna16_006.model is an nnU-Net v1 model file
# that this workflow cannot load; it is fetched only when a rule asks for it.


rule fetch_released:
    output:
        data_path("released", "{released_file}"),
    log:
        log_path("data", "fetch_released_{released_file}.log"),
    retries: 2
    conda:
        "../envs/engine.yaml"
    threads: 1
    params:
        settings=settings(config["data"].get("released", {})),
        root=lambda wc, output: Path(output[0]).parent.parent,
    shell:
        "genesis fetch released --output {params.root:q} --files {wildcards.released_file:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"
