# Benchmarks (not in the default target): `snakemake peers peers_h`. MACE, and a Hamiltonian baseline of
# DeepH-E3's design, trained on HedgeNet's training frames; each against HedgeNet on the same validation and
# thermal test frames: forces and phonons (peers), H, eigenvalues and static v_F (peers_h), time per structure.


rule peers:
    input:
        model=MODEL,
        dataset=DATASET,
        disp=lambda w: f"{displace_dir()}/phonopy_disp.yaml",
        pristine=lambda w: f"{displace_dir()}/pristine.extxyz",
        dft_phonons=rules.phonons.output.params,
        # thermal DFT frames never trained on: the band analysis' cross-check samples
        tests=lambda w: [f"{OUT}/dft/{name}.h5" for name in check_names()],
    output:
        summary=f"{OUT}/peers/peers.json",
        plot=report(f"{OUT}/peers/peers_phonons.png", caption="../report/peers.rst", category="Peers"),
    log:
        f"{OUT}/logs/peers.log",
    benchmark:
        f"{OUT}/benchmarks/peers.tsv",
    params:
        cfg=stage_params("peers"),
        out_dir=lambda w, output: os.path.dirname(output.summary),
        tests=lambda w, input: f"--test-frames {' '.join(input.tests)}" if input.tests else "",
    threads: config["resources"]["performance_threads"]
    resources:
        runtime=config["resources"]["train_runtime_min"],
        mem_mb=config["resources"]["train_mem_mb"],
        gpu=config["resources"]["train_gpus"],
    conda:
        "../../envs/peers.yaml"
    shell:
        "mlepi peers {input.model} {input.dataset} --params {params.cfg:q} --disp {input.disp} "
        "--pristine {input.pristine} --dft-phonons {input.dft_phonons} {params.tests} "
        "--out-dir {params.out_dir} > {log} 2>&1"


rule peers_h:
    input:
        model=MODEL,
        dataset=DATASET,
        primitive=rules.structure.output,
        tests=lambda w: [f"{OUT}/dft/{name}.h5" for name in check_names()],
    output:
        summary=f"{OUT}/peers/hamiltonian.json",
        plot=report(f"{OUT}/peers/hamiltonian_bands.png", caption="../report/peers_h.rst", category="Peers"),
    log:
        f"{OUT}/logs/peers_h.log",
    benchmark:
        f"{OUT}/benchmarks/peers_h.tsv",
    params:
        cfg=stage_params("peers_h"),
        out_dir=lambda w, output: os.path.dirname(output.summary),
        tests=lambda w, input: f"--test-frames {' '.join(input.tests)}" if input.tests else "",
    threads: config["resources"]["performance_threads"]
    resources:
        runtime=config["resources"]["train_runtime_min"],
        mem_mb=config["resources"]["train_mem_mb"],
    conda:
        "../../envs/peers.yaml"
    shell:
        "mlepi peers_h {input.model} {input.dataset} --params {params.cfg:q} --primitive {input.primitive} "
        "{params.tests} --out-dir {params.out_dir} > {log} 2>&1"
