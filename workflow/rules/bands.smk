# Stage 9: unfolding near K, thermal averages, SWMcC fit, v_F(T) and figures.


rule bands:
    input:
        frames=expand(f"{OUT}/infer/T{{T}}.h5", T=TEMPERATURES),
        primitive=rules.structure.output,
        supercell=lambda w: f"{displace_dir()}/pristine.extxyz",
        reference=f"{OUT}/dft/pristine.h5",
    output:
        vf=f"{OUT}/bands/vf.csv",
        summary=f"{OUT}/bands/bands.json",
        spectral=f"{OUT}/bands/spectral.h5",
        spectral_png=report(f"{OUT}/bands/spectral_function.png", caption="../report/spectral.rst",
                            category="Bands"),
        vf_png=report(f"{OUT}/bands/vf.png", caption="../report/vf.rst", category="Bands"),
        convergence_png=report(f"{OUT}/bands/convergence.png", caption="../report/convergence.rst",
                               category="Bands"),
    log:
        f"{OUT}/logs/bands.log",
    benchmark:
        f"{OUT}/benchmarks/bands.tsv",
    params:
        cfg=stage_params("bands"),
        out_dir=lambda w, output: os.path.dirname(output.vf),
    threads: config["resources"]["bands_threads"]
    resources:
        runtime=config["resources"]["analysis_runtime_min"],
        mem_mb=config["resources"]["analysis_mem_mb"],
    conda:
        "../../envs/dft.yaml"
    shell:
        "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "
        "mlepi bands --params {params.cfg:q} --primitive {input.primitive} --supercell {input.supercell} "
        "--frames {input.frames} --reference {input.reference} "
        "--workers {threads} --out-dir {params.out_dir} > {log} 2>&1"


# The same analysis of the linearized H of the same samples (first-order EPI only): mlepi renormalization
# compares the two.
use rule bands as bands_linear with:
    input:
        frames=expand(f"{OUT}/linear/T{{T}}.h5", T=TEMPERATURES),
        primitive=rules.structure.output,
        supercell=lambda w: f"{displace_dir()}/pristine.extxyz",
        reference=f"{OUT}/dft/pristine.h5",
    output:
        vf=f"{OUT}/bands_linear/vf.csv",
        summary=f"{OUT}/bands_linear/bands.json",
        spectral=f"{OUT}/bands_linear/spectral.h5",
        spectral_png=f"{OUT}/bands_linear/spectral_function.png",
        vf_png=f"{OUT}/bands_linear/vf.png",
        convergence_png=f"{OUT}/bands_linear/convergence.png",
    log:
        f"{OUT}/logs/bands_linear.log",
    benchmark:
        f"{OUT}/benchmarks/bands_linear.tsv",
