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
        params:
            settings=settings(
                config["data"]["synthetic"]["luna16"],
                subsets=luna16_subsets("train", "val", "test"),
            ),
            seed=config["seed"],
            folder=str(LUNA16),
        log:
            log_path("data", "synthesize_luna16.log"),
        threads: 1
        conda:
            "../envs/engine.yaml"
        shell:
            "genesis synth luna16 --output {params.folder} --seed {params.seed}"
            " --settings {params.settings:q} > {log} 2>&1"

    rule synthesize_liver:
        output:
            directory(str(LIVER)),
        params:
            settings=settings(config["data"]["synthetic"]["liver"]),
            seed=config["seed"],
        log:
            log_path("data", "synthesize_liver.log"),
        threads: 1
        conda:
            "../envs/engine.yaml"
        shell:
            "genesis synth liver --output {output} --seed {params.seed}"
            " --settings {params.settings:q} > {log} 2>&1"

    rule synthesize_brain:
        output:
            directory(str(BRAIN)),
        params:
            settings=settings(config["data"]["synthetic"]["brain"]),
            seed=config["seed"],
        log:
            log_path("data", "synthesize_brain.log"),
        threads: 1
        conda:
            "../envs/engine.yaml"
        shell:
            "genesis synth brain --output {output} --seed {params.seed}"
            " --settings {params.settings:q} > {log} 2>&1"

else:

    rule download_luna16_subset:
        output:
            directory(luna16_subset_dir("{subset}")),
        params:
            settings=settings(config["data"]["real"]["luna16"]),
            root=str(DATA),
        log:
            log_path("data", "download_luna16_subset{subset}.log"),
        threads: 1
        retries: 2
        conda:
            "../envs/engine.yaml"
        shell:
            "genesis fetch luna16 --output {params.root} --files subset{wildcards.subset}.zip"
            " --settings {params.settings:q} > {log} 2>&1"

    rule download_luna16_tables:
        output:
            annotations=data_path("luna16", "annotations.csv"),
            candidates=data_path("luna16", "candidates_V2.csv"),
        params:
            settings=settings(config["data"]["real"]["luna16"]),
            root=str(DATA),
        log:
            log_path("data", "download_luna16_tables.log"),
        threads: 1
        retries: 2
        conda:
            "../envs/engine.yaml"
        shell:
            "genesis fetch luna16 --output {params.root}"
            " --files annotations.csv candidates_V2.zip"
            " --settings {params.settings:q} > {log} 2>&1"

    rule download_msd_task:
        output:
            directory(data_path("{msd_task}")),
        wildcard_constraints:
            msd_task="Task03_Liver|Task01_BrainTumour",
        params:
            dataset=lambda wc: {"Task03_Liver": "liver", "Task01_BrainTumour": "brain"}[
                wc.msd_task
            ],
            settings=lambda wc: settings(
                config["data"]["real"][
                    {"Task03_Liver": "liver", "Task01_BrainTumour": "brain"}[wc.msd_task]
                ]
            ),
            root=str(DATA),
        log:
            log_path("data", "download_{msd_task}.log"),
        threads: 1
        retries: 2
        conda:
            "../envs/engine.yaml"
        shell:
            "genesis fetch {params.dataset} --output {params.root}"
            " --settings {params.settings:q} > {log} 2>&1"
