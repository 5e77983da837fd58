"""Benchmark: v_F against supercell size and the flexural part of <u_z^2>, with the time and memory of each size.

    bash scripts/run.sh                  # the default workflow (thermal.ml_supercells: its larger sizes)
    python benchmarks/supercells.py      # writes benchmarks/results/supercells.json

Reads the run's ``supercells/convergence.csv`` (``mlepi supercell_convergence``) and the Snakemake benchmark
of each ``supercell_bands`` job, and adds the mean-square displacements by branch
(:func:`mlepi.vibrations.msd.branch_msd`) of sizes beyond those the run analysed (``--msd-sizes``): they need
only the DFT phonons, and show where the interpolated flexural branch stops being physical (modes left out).
"""

from __future__ import annotations

import csv
import datetime
import json
import platform
import sys
from pathlib import Path

from default_run import arguments, require

from mlepi.vibrations.msd import branch_msd
from mlepi.vibrations.phonons import read_phonopy


def _options(parser):
    parser.add_argument("--results", type=Path, help="results/<system> folder of the run (default: the repo's)")
    parser.add_argument("--msd-sizes", type=int, nargs="+", default=[3, 4, 6, 8, 12, 24],
                        help="n x n sizes of the mean-square displacement table")


def _benchmark(path: Path) -> dict:
    """Wall time (s) and peak RSS (MB) from a Snakemake benchmark file."""
    (row,) = csv.DictReader(path.open(), delimiter="\t")
    return {"wall_s": float(row["s"]), "max_rss_MB": float(row["max_rss"])}


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
    out = args.out_dir / "supercells.json"
    out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
