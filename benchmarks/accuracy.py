"""Benchmark: HedgeNet's held-out accuracy against DFT, and the gain of the intra/inter-layer split.

    bash scripts/run.sh                 # the default workflow: dataset, model, phonons_ml
    python benchmarks/accuracy.py       # writes benchmarks/results/accuracy.{json,png}

Trains the ablation (the same network with one edge type, ``model.heterogeneous: false``, same data, epochs,
seed and split) into ``benchmarks/results/ablation/`` (resumes if it is there), then runs ``mlepi accuracy``
(:mod:`mlepi.accuracy`) on the default run's model and the ablation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mlepi import config  # noqa: E402
from mlepi.cli import main as mlepi  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    cfg = config.load(args.configfile)
    run = ROOT / "results" / cfg["system"]["name"]
    model, dataset, phonons = (run / "train" / "model.pt", run / "dataset" / "dataset.h5",
                               run / "phonons_ml" / "summary.json")
    missing = [p for p in (model, dataset, phonons) if not p.exists()]
    if missing:
        raise SystemExit(f"missing {', '.join(map(str, missing))}: run the default workflow first (scripts/run.sh)")
    ablation = {"model": {**cfg["model"], "heterogeneous": False}, "train": cfg["train"]}
    status = mlepi(["train", "--dataset", str(dataset), "--params", json.dumps(ablation),
                    "--out-dir", str(args.out_dir / "ablation")])
    return status or mlepi(["accuracy", str(model), str(dataset), "--ablation",
                            str(args.out_dir / "ablation" / "model.pt"), "--phonons-ml", str(phonons),
                            "--out", str(args.out_dir / "accuracy.json")])


if __name__ == "__main__":
    sys.exit(main())
