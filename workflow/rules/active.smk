# Active learning (docs/active.md) and the test set. Round k (1..active.rounds) lives in active/round_<k>/:
# candidates drawn at every temperature -> predicted by round k-1's committee -> ranked by its spread (mlepi
# select) -> GPAW on the best -> dataset of round k-1 plus them -> every member trained on from its round k-1
# weights. No rule of a round reads active.rounds: adding a round runs only the new one and what uses the
# final committee. active/round_<k>/testset.json: round k's committee on the test set (round 0: train/).


rule thermal_candidates:
    input:
        phonopy=rules.phonons.output.params,
        pristine=lambda w: f"{displace_dir()}/pristine.extxyz",
    output:
        f"{OUT}/active/round_{{round}}/candidates_T{{T}}.extxyz",
    log:
        f"{OUT}/logs/active/round_{{round}}/thermal_candidates_T{{T}}.log",
    benchmark:
        f"{OUT}/benchmarks/active/round_{{round}}/thermal_candidates_T{{T}}.tsv",
    params:
        cfg=stage_params("thermal_candidates"),
    resources:
        runtime=config["resources"]["analysis_runtime_min"],
        mem_mb=config["resources"]["analysis_mem_mb"],
    conda:
        "../../envs/dft.yaml"
    shell:
        "mlepi thermal --params {params.cfg:q} --phonopy {input.phonopy} --pristine {input.pristine} "
        "--temperature {wildcards.T} --purpose candidates --round {wildcards.round} --out {output} > {log} 2>&1"


use rule infer as infer_candidates with:
    input:
        models=lambda w: round_models(int(w.round) - 1),
        structures=f"{OUT}/active/round_{{round}}/candidates_T{{T}}.extxyz",
    output:
        f"{OUT}/active/round_{{round}}/candidates_T{{T}}.h5",
    log:
        f"{OUT}/logs/active/round_{{round}}/infer_candidates_T{{T}}.log",
    benchmark:
        f"{OUT}/benchmarks/active/round_{{round}}/infer_candidates_T{{T}}.tsv",


rule select:
    input:
        frames=expand(f"{OUT}/active/round_{{{{round}}}}/candidates_T{{T}}.h5", T=WIDE_TEMPERATURES),
        primitive=rules.structure.output,
        supercell=lambda w: f"{displace_dir()}/pristine.extxyz",
        reference=f"{OUT}/dft/pristine.h5",
    output:
        selected=f"{OUT}/active/round_{{round}}/selected.extxyz",
        scores=f"{OUT}/active/round_{{round}}/scores.csv",
    log:
        f"{OUT}/logs/active/round_{{round}}/select.log",
    benchmark:
        f"{OUT}/benchmarks/active/round_{{round}}/select.tsv",
    params:
        cfg=stage_params("select"),
        per_round=config["active"]["per_round"],
    resources:
        runtime=config["resources"]["analysis_runtime_min"],
        mem_mb=config["resources"]["analysis_mem_mb"],
    conda:
        "../../envs/dft.yaml"
    shell:
        "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "
        "mlepi select --params {params.cfg:q} --frames {input.frames} --primitive {input.primitive} "
        "--supercell {input.supercell} --reference {input.reference} --per-round {params.per_round} "
        "--round {wildcards.round} --out {output.selected} --scores {output.scores} > {log} 2>&1"


# GPAW on selected candidate i of the round, named r<k>_sel_<i> in the dataset.
use rule dft as dft_selected with:
    input:
        structure=f"{OUT}/active/round_{{round}}/selected.extxyz",
        tile_to=[],
    output:
        f"{OUT}/active/round_{{round}}/dft/sel_{{i}}.h5",
    log:
        main=f"{OUT}/logs/active/round_{{round}}/dft/sel_{{i}}.log",
        gpaw=f"{OUT}/logs/active/round_{{round}}/dft/sel_{{i}}.gpaw.txt",
    benchmark:
        f"{OUT}/benchmarks/active/round_{{round}}/dft/sel_{{i}}.tsv",
    params:
        index=lambda w: f"--index {int(w.i)}",
        name=lambda w: f"r{w.round}_sel_{w.i}",
        tile="",
        cfg=stage_params("dft"),
    priority: 1


use rule dataset as dataset_round with:
    input:
        lambda w: dft_frames() + [f for k in range(1, int(w.round) + 1) for f in selected_frames(k)],
    output:
        h5=f"{OUT}/active/round_{{round}}/dataset/dataset.h5",
        extxyz=f"{OUT}/active/round_{{round}}/dataset/dataset.extxyz",
    log:
        f"{OUT}/logs/active/round_{{round}}/dataset.log",
    benchmark:
        f"{OUT}/benchmarks/active/round_{{round}}/dataset.tsv",


# Each member on from its own previous-round weights (mlepi train --init): its validation frames kept.
use rule train as train_round with:
    input:
        dataset=f"{OUT}/active/round_{{round}}/dataset/dataset.h5",
        init=lambda w: round_model(int(w.round) - 1, w.member),
    output:
        model=f"{OUT}/active/round_{{round}}/train/member_{{member}}/model.pt",
        metrics=f"{OUT}/active/round_{{round}}/train/member_{{member}}/metrics.csv",
    log:
        f"{OUT}/logs/active/round_{{round}}/train_{{member}}.log",
    benchmark:
        f"{OUT}/benchmarks/active/round_{{round}}/train_{{member}}.tsv",
    params:
        cfg=stage_params("train", "train_round"),
        init=lambda w, input: f"--init {input.init}",
        out_dir=lambda w, output: os.path.dirname(output.model),
        nproc=train_processes(),


rule testset:
    input:
        models=lambda w: round_models(w.round),
        test=[f"{OUT}/dft/{name}.h5" for name in test_names()],
        dataset=lambda w: round_dataset(w.round),
        primitive=rules.structure.output,
    output:
        f"{OUT}/active/round_{{round}}/testset.json",
    log:
        f"{OUT}/logs/active/round_{{round}}/testset.log",
    benchmark:
        f"{OUT}/benchmarks/active/round_{{round}}/testset.tsv",
    params:
        cfg=stage_params("testset"),
    resources:
        runtime=config["resources"]["analysis_runtime_min"],
        mem_mb=config["resources"]["analysis_mem_mb"],
    conda:
        "../../envs/ml.yaml"
    shell:
        "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "
        "mlepi testset {input.models} --params {params.cfg:q} --test-frames {input.test} --dataset {input.dataset} "
        "--primitive {input.primitive} --out {output} > {log} 2>&1"


rule learning:
    input:
        [f"{OUT}/active/round_{k}/testset.json" for k in range(N_ROUNDS + 1)],
    output:
        csv=f"{OUT}/active/learning.csv",
        png=report(f"{OUT}/active/learning.png", caption="../report/learning.rst", category="HedgeNet"),
    log:
        f"{OUT}/logs/active/learning.log",
    resources:
        runtime=config["resources"]["analysis_runtime_min"],
        mem_mb=config["resources"]["analysis_mem_mb"],
    conda:
        "../../envs/ml.yaml"
    shell:
        "mlepi learning {input} --out-csv {output.csv} --out-png {output.png} > {log} 2>&1"
