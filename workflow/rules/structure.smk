# Stage 1: relaxed primitive cell; stage 2: phonopy finite-difference displacements.


rule structure:
    output:
        f"{OUT}/structure/primitive.extxyz",
    log:
        main=f"{OUT}/logs/structure.log",
        gpaw=f"{OUT}/logs/structure.gpaw.txt",
    benchmark:
        f"{OUT}/benchmarks/structure.tsv",
    params:
        cfg=stage_params("structure", drop=("system.supercell", "system.name")),
    threads: 1
    resources:
        runtime=config["resources"]["dft_runtime_min"],
        mem_mb=config["resources"]["dft_mem_mb"],
    conda:
        "../../envs/dft.yaml"
    shell:
        "mlepi structure --params {params.cfg:q} --out {output} --log {log.gpaw} > {log.main} 2>&1"


checkpoint displace:
    input:
        rules.structure.output,
    output:
        directory(f"{OUT}/displace"),
    log:
        f"{OUT}/logs/displace.log",
    benchmark:
        f"{OUT}/benchmarks/displace.tsv",
    params:
        cfg=stage_params("displace"),
    resources:
        runtime=10,
        mem_mb=2000,
    conda:
        "../../envs/dft.yaml"
    shell:
        "mlepi displace --params {params.cfg:q} --structure {input} --out-dir {output} > {log} 2>&1"
