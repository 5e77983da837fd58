"""Benchmark: HedgeNet inference on a GPU, the GPU half of ``benchmarks/performance.py``.

    python benchmarks/performance.py             # first, on the CPU machine: GPAW and CPU numbers
    python benchmarks/performance_gpu.py         # then on a GPU machine: benchmarks/results/performance_gpu.*

Needs no GPAW: the default run's model and primitive cell and the CPU results travel, and the speedups divide
the GPAW time that ``benchmarks/performance.py`` measured (the JSON names both machines). The sizes are the
config's ``performance.sizes`` and two more, to 4·10^4 atoms. ``mlepi performance`` on a machine with both GPAW
and a GPU measures the same into its own JSON (key ``gpu``). Method: docs/performance.md.
"""

from __future__ import annotations

import sys

from default_run import ROOT, arguments, require

GPU_EXTRA_SIZES = [70, 100]  # 19,600 and 40,000 atoms: a GPU has the memory


def main(argv=None) -> int:
    args, cfg, run = arguments(__doc__, argv)
    model, primitive = run / "train" / "member_0" / "model.pt", run / "structure" / "primitive.extxyz"
    require(model, primitive)

    import torch

    from mlepi.evaluation.performance import run_gpu

    if not torch.cuda.is_available():
        raise SystemExit("error: torch sees no GPU here; benchmarks/performance.py measures the CPU")
    cpu = ROOT / "benchmarks" / "results" / "performance.json"  # from benchmarks/performance.py
    perf = cfg["performance"]
    result = run_gpu(model, primitive, args.out_dir / "performance_gpu.json", args.out_dir / "performance_gpu.png",
                     sizes=sorted({*perf["sizes"], *GPU_EXTRA_SIZES}), sigma=perf["displacement_A"],
                     seed=perf["seed"], cpu_results_path=cpu if cpu.is_file() else None,
                     progress=lambda r: print(f"{r['n_atoms']} atoms: {r['total_s']:.4f} s", flush=True))
    print(f"{result['device']}: exponent {result['scaling_exponent']:.3f}, time per atom 1e4/1e2 "
          f"{result['time_per_atom_ratio_1e4_vs_1e2']:.3f}, speedup vs GPAW "
          f"{result.get('speedup_vs_dft', float('nan')):.0f}x (one structure), "
          f"{result.get('speedup_vs_dft_batched', float('nan')):.0f}x (batched)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
