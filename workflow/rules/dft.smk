# Stage 3: one GPAW LCAO job per configuration (pristine, finite differences, thermal training samples).


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
        cfg=stage_params("dft", drop=("system.name", "system.supercell", "dft.relax_fmax", "dft.relax_steps")),
    threads: 1
    resources:
        runtime=config["resources"]["dft_runtime_min"],
        mem_mb=config["resources"]["dft_mem_mb"],
    conda:
        "../../envs/dft.yaml"
    shell:
        "mlepi dft {input} --params {params.cfg:q} --name {wildcards.config} --out {output} "
        "--log {log.gpaw} > {log.main} 2>&1"
