# mlepi: machine-learning electron-phonon interactions from finite differences.
# Table of contents; the rules live in workflow/rules/, the science in src/mlepi/ (`mlepi STAGE --help`).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


wildcard_constraints:
    T=r"[0-9.]+",
    k=r"[0-9]{3}",
    fd=r"fd_[0-9]{3}",
    purpose=r"infer|special",
    prediction=r"T[0-9.]+|special_T[0-9.]+|pristine",
    n=r"[0-9]+",
    member=r"[0-9]+",
    round=r"[0-9]+",
    i=r"[0-9]{3}",


include: "workflow/rules/common.smk"
include: "workflow/rules/structure.smk"
include: "workflow/rules/dft.smk"
include: "workflow/rules/phonons.smk"
include: "workflow/rules/ml.smk"
include: "workflow/rules/active.smk"
include: "workflow/rules/bands.smk"
include: "workflow/rules/renormalization.smk"
include: "workflow/rules/performance.smk"
include: "workflow/rules/peers.smk"


rule all:
    input:
        final_targets(),
    default_target: True
