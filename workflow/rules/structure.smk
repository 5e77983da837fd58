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
        cfg=stage_params("structure"),
    threads: config["resources"]["dft_threads"]
    resources:
        runtime=config["resources"]["dft_runtime_min"],
        mem_mb=config["resources"]["dft_mem_mb"],
    conda:
        "../../envs/dft.yaml"
    shell:
        "OMP_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads} "
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
        runtime=config["resources"]["analysis_runtime_min"],
        mem_mb=config["resources"]["analysis_mem_mb"],
    conda:
        "../../envs/dft.yaml"
    shell:
        "mlepi displace --params {params.cfg:q} --structure {input} --out-dir {output} > {log} 2>&1"
