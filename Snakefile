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


# One global set of constraints for every rule: a task is a configured task name, an init
# one of the initialisations, a run and a sweep's percentage are numbers, and so on. (A
# rule may narrow one further, e.g. segmentation figures to segmentation tasks.)
wildcard_constraints:
    task=wildcard_choice(config["tasks"]["names"]),
    init=r"scratch|released|released_keras|genesis(-[a-z_]+)?",
    run=r"\d+",
    pct=r"\d+(\.\d+)?",
    variant="all|nonlinear|local_shuffle|inpainting|outpainting",
    split="train|val",
    subset=r"\d",
    msd_task="Task03_Liver|Task01_BrainTumour",
    released_file=r"Genesis_Chest_CT\.pt|Genesis_Chest_CT\.h5|genesis_nnunet_luna16_006\.model",


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
