# Stage 3: one GPAW LCAO job per configuration (pristine, finite differences, thermal training samples).


def dft_input(wildcards):
    name = wildcards.config
    if name.startswith("mc_T"):
        T, k = name[len("mc_T"):].rsplit("_s", 1)
        return f"{OUT}/thermal/train_T{T}/s{k}.extxyz"
    return f"{displace_dir()}/{name}.extxyz"


rule dft:
    input:
        dft_input,
    output:
        f"{OUT}/dft/{{config}}.h5",
    log:
        main=f"{OUT}/logs/dft/{{config}}.log",
        gpaw=f"{OUT}/logs/dft/{{config}}.gpaw.txt",
    params:
        cfg=stage_params("dft"),
    threads: 1
    resources:
        runtime=config["resources"]["dft_runtime_min"],
        mem_mb=config["resources"]["dft_mem_mb"],
    shell:
        "mlepi dft {input} --params {params.cfg:q} --name {wildcards.config} --out {output} "
        "--log {log.gpaw} > {log.main} 2>&1"
