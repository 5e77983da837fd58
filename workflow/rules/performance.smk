# Benchmark (not in the default target): `snakemake performance`. HedgeNet inference against GPAW on the same
# displaced supercell, inference time and memory up to 10^4 atoms, sparse vs dense eigensolvers.


rule performance:
    input:
        model=MODEL,
        primitive=rules.structure.output,
        pristine=f"{OUT}/dft/pristine.h5",
    output:
        summary=f"{OUT}/performance/performance.json",
        figure=report(f"{OUT}/performance/performance.png", caption="../report/performance.rst",
                      category="Performance"),
    log:
        f"{OUT}/logs/performance.log",
    benchmark:
        f"{OUT}/benchmarks/performance.tsv",
    params:
        cfg=stage_params("performance"),
    threads: config["resources"]["performance_threads"]
    resources:
        runtime=config["resources"]["infer_runtime_min"],
        mem_mb=config["resources"]["infer_mem_mb"],
        gpu=config["resources"]["infer_gpus"],
    conda:
        "../../envs/ml.yaml"
    shell:
        "mlepi performance {input.model} --params {params.cfg:q} --primitive {input.primitive} "
        "--pristine {input.pristine} --out {output.summary} --figure {output.figure} > {log} 2>&1"
