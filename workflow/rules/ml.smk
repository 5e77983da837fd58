# Stage 6: dataset; stage 7: HedgeNet training (torchrun: N GPUs or CPU processes); stage 8: inference and
# its first-order (linearized) part.


rule dataset:
    input:
        dft_frames,
    priority: 1
    output:
        h5=f"{OUT}/dataset/dataset.h5",
        extxyz=f"{OUT}/dataset/dataset.extxyz",
    log:
        f"{OUT}/logs/dataset.log",
    benchmark:
        f"{OUT}/benchmarks/dataset.tsv",
    resources:
        runtime=config["resources"]["analysis_runtime_min"],
        mem_mb=config["resources"]["analysis_mem_mb"],
    conda:
        "../../envs/dft.yaml"
    shell:
        "mlepi dataset --frames {input} --out {output.h5} --extxyz {output.extxyz} > {log} 2>&1"


# One job per committee member (train.committee): independent, so Snakemake runs them side by side (one GPU
# each on a cluster).
rule train:
    input:
        dataset=rules.dataset.output.h5,
    output:
        model=f"{OUT}/train/member_{{member}}/model.pt",
        metrics=f"{OUT}/train/member_{{member}}/metrics.csv",
    log:
        f"{OUT}/logs/train_{{member}}.log",
    benchmark:
        f"{OUT}/benchmarks/train_{{member}}.tsv",
    params:
        cfg=stage_params("train"),
        init="",  # an active-learning round's: --init <the previous round's model> (workflow/rules/active.smk)
        out_dir=lambda w, output: os.path.dirname(output.model),
        nproc=train_processes(),
    threads: train_processes() * config["resources"]["train_threads"]
    # The training data's path first (dft_priority): training is the longest job on the critical path.
    priority: 1
    resources:
        runtime=config["resources"]["train_runtime_min"],
        mem_mb=config["resources"]["train_mem_mb"],
        gpu=config["resources"]["train_gpus"],
        process_threads=config["resources"]["train_threads"],  # a resource: threads never rerun training
    conda:
        "../../envs/ml.yaml"
    shell:
        # torchrun starts one process per GPU (or CPU process): DistributedDataParallel, NCCL or gloo. Snakemake
        # sets OMP_NUM_THREADS to the job's cores; each process gets its share.
        "OMP_NUM_THREADS={resources.process_threads} torchrun --standalone --nproc_per_node {params.nproc} "
        "-m mlepi.cli train --params {params.cfg:q} --dataset {input.dataset} --member {wildcards.member} "
        "{params.init} --out-dir {params.out_dir} > {log} 2>&1"


# infer/T<T>.h5: the Monte Carlo samples; infer/special_T<T>.h5: the special displacement; infer/pristine.h5.
rule infer:
    input:
        models=committee_models(),
        structures=prediction_input,
    output:
        f"{OUT}/infer/{{prediction}}.h5",
    log:
        f"{OUT}/logs/infer_{{prediction}}.log",
    benchmark:
        f"{OUT}/benchmarks/infer_{{prediction}}.tsv",
    threads: config["resources"]["infer_threads"]
    resources:
        runtime=config["resources"]["infer_runtime_min"],
        mem_mb=config["resources"]["infer_mem_mb"],
        gpu=config["resources"]["infer_gpus"],
    conda:
        "../../envs/ml.yaml"
    shell:
        "mlepi infer {input.models} {input.structures} --out {output} --workers {threads} > {log} 2>&1"


rule linearize:
    input:
        models=committee_models(),
        frames=f"{OUT}/infer/T{{T}}.h5",
        pristine=lambda w: f"{displace_dir()}/pristine.extxyz",
    output:
        f"{OUT}/linear/T{{T}}.h5",
    log:
        f"{OUT}/logs/linearize_T{{T}}.log",
    benchmark:
        f"{OUT}/benchmarks/linearize_T{{T}}.tsv",
    resources:
        runtime=config["resources"]["infer_runtime_min"],
        mem_mb=config["resources"]["infer_mem_mb"],
    conda:
        "../../envs/ml.yaml"
    shell:
        "mlepi linearize {input.models} {input.frames} --pristine {input.pristine} --out {output} > {log} 2>&1"


rule parity:
    input:
        model=MODEL,
        dataset=DATASET,
        primitive=rules.structure.output,
    output:
        summary=f"{OUT}/parity/parity.json",
        plot=report(f"{OUT}/parity/parity.png", caption="../report/parity.rst", category="HedgeNet"),
        bands=report(f"{OUT}/parity/bands_ml_vs_dft.png", caption="../report/bands_ml_vs_dft.rst",
                     category="HedgeNet"),
    log:
        f"{OUT}/logs/parity.log",
    benchmark:
        f"{OUT}/benchmarks/parity.tsv",
    params:
        out_dir=lambda w, output: os.path.dirname(output.summary),
    resources:
        runtime=config["resources"]["analysis_runtime_min"],
        mem_mb=config["resources"]["analysis_mem_mb"],
    conda:
        "../../envs/ml.yaml"
    shell:
        "mlepi parity {input.model} {input.dataset} --primitive {input.primitive} --out-dir {params.out_dir} "
        "> {log} 2>&1"


rule phonons_ml:
    input:
        model=MODEL,
        disp=lambda w: f"{displace_dir()}/phonopy_disp.yaml",
        pristine=lambda w: f"{displace_dir()}/pristine.extxyz",
        dft_phonons=rules.phonons.output.params,
    output:
        summary=f"{OUT}/phonons_ml/summary.json",
        band=f"{OUT}/phonons_ml/band.yaml",
        plot=report(f"{OUT}/phonons_ml/phonons_ml_vs_dft.png", caption="../report/phonons_ml.rst",
                    category="HedgeNet"),
    log:
        f"{OUT}/logs/phonons_ml.log",
    benchmark:
        f"{OUT}/benchmarks/phonons_ml.tsv",
    params:
        cfg=stage_params("phonons_ml"),
        out_dir=lambda w, output: os.path.dirname(output.summary),
    resources:
        runtime=config["resources"]["analysis_runtime_min"],
        mem_mb=config["resources"]["analysis_mem_mb"],
    conda:
        "../../envs/ml.yaml"
    shell:
        "mlepi phonons_ml {input.model} --params {params.cfg:q} --disp {input.disp} --pristine {input.pristine} "
        "--dft-phonons {input.dft_phonons} --out-dir {params.out_dir} > {log} 2>&1"
