# Models Genesis, reproduced: from data to the paper's tables, figures and reports.
#
#   snakemake --cores 8 --resources gpu=2                 # embedded synthetic default
#   snakemake --cores 8 --resources gpu=2 --configfile config/paper.yaml   # real data
#   snakemake pretrained --cores 8 --configfile config/config.yaml my.yaml  # weights only
#
# Stages (one rules file each): data -> cubes -> pretrain -> tasks -> report.
# The science lives in the `genesis` engine (src/genesis); rules only pass files and
# settings to its CLI.


from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/validate.smk"
include: "rules/data.smk"
include: "rules/cubes.smk"
include: "rules/pretrain.smk"
include: "rules/tasks.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_targets(),


# `snakemake pretrained ...`: stop after pretraining (your own scans' weights).
rule pretrained:
    input:
        [results_path("pretrain", v, "weights.pt") for v in pretrain_variants()],
