# Stage 10: second-order share of the renormalization (full vs linearized H), static lattice (HedgeNet, DFT),
# special displacements, and GPAW on inferred samples as a cross-check of the band energies at K.


rule renormalization:
    input:
        bands=rules.bands.output.summary,
        bands_linear=rules.bands_linear.output.summary,
        static_ml=f"{OUT}/infer/pristine.h5",
        static_dft=f"{OUT}/dft/pristine.h5",
        special=expand(f"{OUT}/infer/special_T{{T}}.h5", T=TEMPERATURES),
        check_dft=[f"{OUT}/dft/{name}.h5" for name in check_names()],
        infer=expand(f"{OUT}/infer/T{{T}}.h5", T=TEMPERATURES),
        primitive=rules.structure.output,
        supercell=lambda w: f"{displace_dir()}/pristine.extxyz",
        # the supercell's part of the error budget (thermal.ml_supercells; none: the total error is unknown)
        supercells=[f"{OUT}/supercells/convergence.csv"] if config["thermal"]["ml_supercells"] else [],
    output:
        csv=f"{OUT}/renormalization/renormalization.csv",
        summary=f"{OUT}/renormalization/renormalization.json",
        crosscheck=f"{OUT}/renormalization/crosscheck.csv",
        vf_png=report(f"{OUT}/renormalization/vf_orders.png", caption="../report/vf_orders.rst", category="Bands"),
        crosscheck_png=report(f"{OUT}/renormalization/crosscheck.png", caption="../report/crosscheck.rst",
                              category="Bands"),
    log:
        f"{OUT}/logs/renormalization.log",
    benchmark:
        f"{OUT}/benchmarks/renormalization.tsv",
    params:
        cfg=stage_params("renormalization"),
        out_dir=lambda w, output: os.path.dirname(output.csv),
        supercells=lambda w, input: f"--supercells {input.supercells}" if input.supercells else "",
    threads: config["resources"]["bands_threads"]
    resources:
        runtime=config["resources"]["analysis_runtime_min"],
        mem_mb=config["resources"]["analysis_mem_mb"],
    conda:
        "../../envs/dft.yaml"
    shell:
        "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "
        "mlepi renormalization --params {params.cfg:q} --primitive {input.primitive} --supercell {input.supercell} "
        "--bands {input.bands} --bands-linear {input.bands_linear} --static-ml {input.static_ml} "
        "--static-dft {input.static_dft} --special {input.special} --check-dft {input.check_dft} "
        "--infer {input.infer} {params.supercells} --workers {threads} --out-dir {params.out_dir} > {log} 2>&1"


# Convergence with supercell size: HedgeNet samples of larger n x n supercells (thermal.ml_supercells), no DFT.
rule supercell_bands:
    input:
        models=committee_models(),
        phonopy=rules.phonons.output.params,
        primitive=rules.structure.output,
        reference=f"{OUT}/dft/pristine.h5",
    output:
        f"{OUT}/supercells/{{n}}x{{n}}/bands.json",
    log:
        f"{OUT}/logs/supercell_bands_{{n}}x{{n}}.log",
    benchmark:
        f"{OUT}/benchmarks/supercell_bands_{{n}}x{{n}}.tsv",
    params:
        cfg=stage_params("supercell_bands"),
        out_dir=lambda w, output: os.path.dirname(output[0]),
    threads: config["resources"]["bands_threads"]
    resources:
        runtime=config["resources"]["infer_runtime_min"],
        mem_mb=config["resources"]["infer_mem_mb"],
    conda:
        "../../envs/ml.yaml"
    shell:
        "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "
        "mlepi supercell_bands {input.models} --params {params.cfg:q} --n {wildcards.n} --phonopy {input.phonopy} "
        "--primitive {input.primitive} --reference {input.reference} --workers {threads} "
        "--out-dir {params.out_dir} > {log} 2>&1"


rule supercell_convergence:
    input:
        bands=[rules.bands.output.summary]
        + [f"{OUT}/supercells/{n}x{n}/bands.json" for n in config["thermal"]["ml_supercells"]],
        phonopy=rules.phonons.output.params,
    output:
        csv=f"{OUT}/supercells/convergence.csv",
        png=report(f"{OUT}/supercells/convergence.png", caption="../report/supercell_convergence.rst",
                   category="Bands"),
    log:
        f"{OUT}/logs/supercell_convergence.log",
    params:
        sizes=[config["system"]["supercell"][0]] + config["thermal"]["ml_supercells"],
        tolerance=config["thermal"]["imaginary_tolerance_THz"],
        force_constants=config["thermal"]["force_constants"],
        out_dir=lambda w, output: os.path.dirname(output.csv),
    resources:
        runtime=config["resources"]["analysis_runtime_min"],
        mem_mb=config["resources"]["analysis_mem_mb"],
    conda:
        "../../envs/dft.yaml"
    shell:
        "mlepi supercell_convergence --sizes {params.sizes} --bands {input.bands} --phonopy {input.phonopy} "
        "--tolerance-THz {params.tolerance} --force-constants {params.force_constants} --out-dir {params.out_dir} "
        "> {log} 2>&1"
