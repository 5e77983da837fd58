"""Benchmark: HedgeNet inference against GPAW and system size, on the default workflow's model.

    bash scripts/run.sh                          # the default workflow: model, structure, pristine DFT
    python benchmarks/workflow.py                # optional: the workflow's own wall time and memory
    python benchmarks/performance.py             # writes benchmarks/results/performance.{json,png}

The measurement is ``mlepi performance`` (:mod:`mlepi.performance`, method in docs/performance.md) with the
``performance`` section of the config; ``snakemake performance`` runs the same into results/<system>/. This
script only points it at the default run's files and merges in ``benchmarks/results/workflow.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mlepi.cli import main as mlepi  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    run = ROOT / "results" / yaml.safe_load(args.configfile.read_text())["system"]["name"]
    workflow = args.out_dir / "workflow.json"
    missing = [p for p in (run / "train" / "model.pt", run / "structure" / "primitive.extxyz",
                           run / "dft" / "pristine.h5") if not p.exists()]
    if missing:
        raise SystemExit(f"missing {', '.join(map(str, missing))}: run the default workflow first (scripts/run.sh)")
    return mlepi(["performance", str(run / "train" / "model.pt"), "--config", str(args.configfile),
                  "--primitive", str(run / "structure" / "primitive.extxyz"), "--pristine", str(run / "dft" / "pristine.h5"),
                  "--out", str(args.out_dir / "performance.json"), "--figure", str(args.out_dir / "performance.png"),
                  *(["--workflow", str(workflow)] if workflow.exists() else [])])


if __name__ == "__main__":
    sys.exit(main())
