"""Benchmark: HedgeNet inference against GPAW and system size, on the default workflow's model.

    bash scripts/run.sh                          # the default workflow: model, structure, pristine DFT
    python benchmarks/workflow.py                # optional: the workflow's own wall time and memory
    python benchmarks/performance.py             # writes benchmarks/results/performance.{json,png}

The measurement is ``mlepi performance`` (:mod:`mlepi.evaluation.performance`, method in docs/performance.md) with the
``performance`` section of the config; ``snakemake performance`` runs the same into results/<system>/. This
script only points it at the default run's files and merges in ``benchmarks/results/workflow.json``.
"""

from __future__ import annotations

import sys

from default_run import arguments, require

from mlepi.cli import main as mlepi


def main(argv=None) -> int:
    args, _, run = arguments(__doc__, argv)
    model, primitive, pristine = (run / "train" / "member_0" / "model.pt", run / "structure" / "primitive.extxyz",
                                  run / "dft" / "pristine.h5")
    require(model, primitive, pristine)
    workflow = args.out_dir / "workflow.json"
    return mlepi(["performance", str(model), "--config", str(args.configfile), "--primitive", str(primitive),
                  "--pristine", str(pristine), "--out", str(args.out_dir / "performance.json"),
                  "--figure", str(args.out_dir / "performance.png"),
                  *(["--workflow", str(workflow)] if workflow.exists() else [])])


if __name__ == "__main__":
    sys.exit(main())
