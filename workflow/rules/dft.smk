# Stage 3: one GPAW LCAO job per configuration (pristine, finite differences, thermal training samples, and
# the inferred samples of the band analysis' DFT cross-check).


rule dft:
    input:
        dft_input,
    output:
        f"{OUT}/dft/{{config}}.h5",
    log:
        main=f"{OUT}/logs/dft/{{config}}.log",
        gpaw=f"{OUT}/logs/dft/{{config}}.gpaw.txt",
    benchmark:
        f"{OUT}/benchmarks/dft/{{config}}.tsv",
    params:
        index=dft_index,
        cfg=stage_params("dft", drop=("system.name", "system.supercell", "dft.relax_fmax", "dft.relax_steps")),
    threads: config["resources"]["dft_threads"]
    resources:
        runtime=config["resources"]["dft_runtime_min"],
        mem_mb=config["resources"]["dft_mem_mb"],
    conda:
        "../../envs/dft.yaml"
    shell:
        # GPAW's dense LCAO linear algebra threads through BLAS: one thread per core the job holds.
        "OMP_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads} "
        "mlepi dft {input} {params.index} --params {params.cfg:q} --name {wildcards.config} --out {output} "
        "--log {log.gpaw} > {log.main} 2>&1"
