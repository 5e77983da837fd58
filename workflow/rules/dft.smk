# Stage 3: one GPAW LCAO job per configuration (pristine, finite differences, thermal training samples, and
# the inferred samples of the band analysis' DFT cross-check, the test set; active learning's selected
# candidates: workflow/rules/active.smk). The pristine supercell is computed as its
# primitive cell and tiled (mlepi.dft.tiling).


rule dft:
    input:
        structure=dft_input,
        tile_to=dft_tile_input,
    output:
        f"{OUT}/dft/{{config}}.h5",
    log:
        main=f"{OUT}/logs/dft/{{config}}.log",
        gpaw=f"{OUT}/logs/dft/{{config}}.gpaw.txt",
    benchmark:
        f"{OUT}/benchmarks/dft/{{config}}.tsv",
    params:
        index=dft_index,
        name=lambda w: w.config,
        tile=lambda w, input: f"--tile-to {input.tile_to}" if input.tile_to else "",
        cfg=stage_params("dft"),
    threads: DFT_RANKS * DFT_THREADS  # the cores the job holds (the local scheduler counts these)
    priority: dft_priority
    resources:
        runtime=config["resources"]["dft_runtime_min"],
        mem_mb=config["resources"]["dft_mem_mb"],
        tasks=DFT_RANKS,
        cpus_per_task=DFT_THREADS,
        # The launcher prefix ('' for one rank). A resource, not a param: resources never rerun a job, and
        # 1 rank or 16 give the same result (tests/test_mpi.py).
        dft_launch=DFT_LAUNCH,
        **DFT_MPI,
    conda:
        "../../envs/dft.yaml"
    shell:
        # GPAW's dense LCAO linear algebra threads through BLAS: dft_threads per rank. `mlepi` starts GPAW's
        # MPI itself when the launcher started it (mlepi.dft.mpi); rank 0 writes the log and the result.
        "OMP_NUM_THREADS={resources.cpus_per_task} OPENBLAS_NUM_THREADS={resources.cpus_per_task} "
        "{resources.dft_launch}mlepi dft {input.structure} {params.index} {params.tile} --params {params.cfg:q} "
        "--name {params.name} --out {output} --log {log.gpaw} > {log.main} 2>&1"
