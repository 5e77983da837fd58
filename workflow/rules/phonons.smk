# Stage 4: force constants and phonon bands; stage 5: Monte Carlo thermal displacements.


rule phonons:
    input:
        disp=lambda w: f"{displace_dir()}/phonopy_disp.yaml",
        pristine=f"{OUT}/dft/pristine.h5",
        fd=lambda w: [f"{OUT}/dft/{name}.h5" for name in fd_names()],
    output:
        params=f"{OUT}/phonons/phonopy_params.yaml",
        band=f"{OUT}/phonons/band.yaml",
        summary=f"{OUT}/phonons/summary.json",
        plot=report(f"{OUT}/phonons/phonon_bands.png", caption="../report/phonons.rst", category="Phonons"),
    log:
        f"{OUT}/logs/phonons.log",
    benchmark:
        f"{OUT}/benchmarks/phonons.tsv",
    params:
        cfg=stage_params("phonons"),
        out_dir=lambda w, output: os.path.dirname(output.params),
    resources:
        runtime=config["resources"]["analysis_runtime_min"],
        mem_mb=config["resources"]["analysis_mem_mb"],
    conda:
        "../../envs/dft.yaml"
    shell:
        "mlepi phonons --params {params.cfg:q} --disp {input.disp} --pristine {input.pristine} "
        "--fd {input.fd} --out-dir {params.out_dir} > {log} 2>&1"


rule thermal_train:
    input:
        phonopy=rules.phonons.output.params,
        pristine=lambda w: f"{displace_dir()}/pristine.extxyz",
    output:
        [f"{OUT}/thermal/train_T{{T}}/s{k:03d}.extxyz" for k in range(N_TRAIN)],
    log:
        f"{OUT}/logs/thermal_train_T{{T}}.log",
    benchmark:
        f"{OUT}/benchmarks/thermal_train_T{{T}}.tsv",
    params:
        # The temperature comes from the wildcard: adding a temperature must not redo existing DFT.
        cfg=stage_params("thermal_train"),
        purpose="train",
        out_dir=lambda w, output: os.path.dirname(output[0]),
    priority: 1  # before thermal_infer: its samples start the DFT jobs that training waits for (dft_priority)
    resources:
        runtime=config["resources"]["analysis_runtime_min"],
        mem_mb=config["resources"]["analysis_mem_mb"],
    conda:
        "../../envs/dft.yaml"
    shell:
        "mlepi thermal --params {params.cfg:q} --phonopy {input.phonopy} --pristine {input.pristine} "
        "--temperature {wildcards.T} --purpose {params.purpose} --out {params.out_dir} > {log} 2>&1"


# The test set of one temperature (docs/active.md): its own seed, independent samples, never trained on.
use rule thermal_train as thermal_test with:
    output:
        [f"{OUT}/thermal/test_T{{T}}/s{k:03d}.extxyz" for k in range(N_TEST)],
    log:
        f"{OUT}/logs/thermal_test_T{{T}}.log",
    benchmark:
        f"{OUT}/benchmarks/thermal_test_T{{T}}.tsv",
    params:
        cfg=stage_params("thermal_test"),
        purpose="test",
        out_dir=lambda w, output: os.path.dirname(output[0]),


# The inference samples of one temperature (purpose infer) or its one special displacement (purpose special).
rule thermal_infer:
    input:
        phonopy=rules.phonons.output.params,
        pristine=lambda w: f"{displace_dir()}/pristine.extxyz",
    output:
        f"{OUT}/thermal/{{purpose}}_T{{T}}.extxyz",
    log:
        f"{OUT}/logs/thermal_{{purpose}}_T{{T}}.log",
    benchmark:
        f"{OUT}/benchmarks/thermal_{{purpose}}_T{{T}}.tsv",
    params:
        cfg=lambda w: stage_params(f"thermal_{w.purpose}"),
    resources:
        runtime=config["resources"]["analysis_runtime_min"],
        mem_mb=config["resources"]["analysis_mem_mb"],
    conda:
        "../../envs/dft.yaml"
    shell:
        "mlepi thermal --params {params.cfg:q} --phonopy {input.phonopy} --pristine {input.pristine} "
        "--temperature {wildcards.T} --purpose {wildcards.purpose} --out {output} > {log} 2>&1"
