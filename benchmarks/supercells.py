"""Benchmark: v_F against supercell size and the flexural part of <u_z^2>, with the time and memory of each size.

    bash scripts/run.sh                  # the default workflow (thermal.ml_supercells: its larger sizes)
    python benchmarks/supercells.py      # writes benchmarks/results/supercells.json

Reads the run's ``supercells/convergence.csv`` (``mlepi supercell_convergence``) and the Snakemake benchmark
of each ``supercell_bands`` job, and adds the mean-square displacements by branch
(:func:`mlepi.vibrations.msd.branch_msd`) of sizes beyond those the run analysed (``--msd-sizes``): they need
only the DFT phonons, and show where the interpolated flexural branch stops being physical (modes left out).
The same table from the force constants with the invariances of a free bilayer imposed
(:func:`mlepi.vibrations.sum_rules.enforce`), with what imposing them changes (``sum_rules``: the residuals, the
change of the force constants and of the frequencies at the DFT supercell's own q points) and
``sum_rules.png``: the low branches along Γ-M-K both ways.
"""

from __future__ import annotations

import copy
import csv
import datetime
import json
import platform
import sys
from pathlib import Path

import numpy as np
from default_run import arguments, require
from matplotlib.figure import Figure

from mlepi.vibrations import sum_rules
from mlepi.vibrations.msd import branch_msd, commensurate_qpoints
from mlepi.vibrations.phonons import read_phonopy


def _options(parser):
    parser.add_argument("--results", type=Path, help="results/<system> folder of the run (default: the repo's)")
    parser.add_argument("--msd-sizes", type=int, nargs="+", default=[3, 4, 6, 8, 12, 24],
                        help="n x n sizes of the mean-square displacement table")


def _benchmark(path: Path) -> dict:
    """Wall time (s) and peak RSS (MB) from a Snakemake benchmark file."""
    (row,) = csv.DictReader(path.open(), delimiter="\t")
    return {"wall_s": float(row["s"]), "max_rss_MB": float(row["max_rss"])}


def _frequencies_THz(phonon, qpoints) -> np.ndarray:
    phonon.run_qpoints(qpoints)
    return np.array(phonon.qpoints.frequencies)


def _sum_rules_effect(phonon, invariant, png) -> dict:
    """What imposing the invariances changes, and the figure of the low branches along Γ-M-K."""
    n_dft = int(round(abs(np.linalg.det(phonon.supercell_matrix)) ** 0.5))
    own = commensurate_qpoints(n_dft)
    before, after = _frequencies_THz(phonon, own), _frequencies_THz(invariant, own)
    stiff = np.abs(before) > 1.0  # relative changes of the modes above 1 THz
    path = np.concatenate([np.linspace([0, 0, 0], [0.5, 0, 0], 49)[1:],
                           np.linspace([0.5, 0, 0], [1 / 3, 1 / 3, 0], 17)[1:]])
    bands = {"interpolated": _frequencies_THz(phonon, path)[:, :6],
             "with the invariances": _frequencies_THz(invariant, path)[:, :6]}
    fc, fc_invariant = sum_rules.compact(phonon), sum_rules.compact(invariant)
    x = np.arange(len(path))
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for (name, freqs), style in zip(bands.items(), ("k:", "C0-")):
        ax.plot(x, freqs, style, lw=1, label=[name] + [None] * (freqs.shape[1] - 1))
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks([0, 47, len(path) - 1], ["Γ", "M", "K"])
    ax.set_ylabel("frequency (THz)")
    ax.set_ylim(-1.5, 1.05 * max(freqs.max() for freqs in bands.values()))
    ax.legend(frameon=False, fontsize="small")
    fig.savefig(png, dpi=150)
    return {
        "violation_before": sum_rules.violation(phonon), "violation_after": sum_rules.violation(phonon, fc_invariant),
        "fc_change_relative": float(np.linalg.norm(fc_invariant - fc) / np.linalg.norm(fc)),
        "commensurate_max_change_percent_above_1THz": float(
            100 * np.max(np.abs(after[stiff] / before[stiff] - 1))),
        "gamma_lowest_THz": {"interpolated": before[0, :6].tolist(), "with the invariances": after[0, :6].tolist()},
        "ZA_gamma_M_THz": {"q": path[:12, 0].tolist(),
                           **{name: freqs[:12, 0].tolist() for name, freqs in bands.items()}},
    }


def main(argv=None) -> int:
    args, cfg, run = arguments(__doc__, argv, _options)
    run = args.results or run
    table, phonons = run / "supercells" / "convergence.csv", run / "phonons" / "phonopy_params.yaml"
    require(table, phonons)
    tolerance = cfg["thermal"]["imaginary_tolerance_THz"]
    phonon = read_phonopy(phonons)
    temperatures = cfg["thermal"]["temperatures"]
    document = {
        "date": datetime.date.today().isoformat(), "machine": f"{platform.node()}, {platform.processor() or '?'}",
        "results": str(run), "units": {"u2": "A^2 per atom and direction", "vf": "1e6 m/s", "wall": "s"},
        "convergence": list(csv.DictReader(table.open())),
        "cost": {p.stem.removeprefix("supercell_bands_"): _benchmark(p)
                 for p in sorted((run / "benchmarks").glob("supercell_bands_*.tsv"))},
        "msd": {str(n): branch_msd(phonon, n, temperatures, tolerance) for n in args.msd_sizes},
    }
    invariant = copy.deepcopy(phonon)
    invariant.force_constants = sum_rules.enforce(phonon)
    document["msd_sum_rules"] = {str(n): branch_msd(invariant, n, temperatures, tolerance) for n in args.msd_sizes}
    document["sum_rules"] = _sum_rules_effect(phonon, invariant, args.out_dir / "sum_rules.png")
    out = args.out_dir / "supercells.json"
    out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
