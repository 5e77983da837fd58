"""Benchmark: HedgeNet's held-out accuracy against DFT, and the gain of the intra/inter-layer split.

    bash scripts/run.sh                 # the default workflow: dataset, model, phonons_ml
    python benchmarks/accuracy.py       # writes benchmarks/results/accuracy.{json,png}

Trains the ablation (the same network with one edge type, ``model.heterogeneous: false``, same data, epochs,
seed and split) into ``benchmarks/results/ablation/`` (resumes if it is there), then runs ``mlepi accuracy``
(:mod:`mlepi.evaluation.accuracy`) on the default run's model and the ablation: on the model's validation frames
and, under ``test``, on the band analysis' DFT cross-check samples (``dft/check_*.h5``).
"""

from __future__ import annotations

import json
import sys

from default_run import arguments, require

from mlepi.cli import main as mlepi


def main(argv=None) -> int:
    args, cfg, run = arguments(__doc__, argv)
    model, dataset, phonons, primitive = (run / "train" / "model.pt", run / "dataset" / "dataset.h5",
                                          run / "phonons_ml" / "summary.json", run / "structure" / "primitive.extxyz")
    require(model, dataset, phonons, primitive)
    ablation = {"model": {**cfg["model"], "heterogeneous": False}, "train": cfg["train"]}
    status = mlepi(["train", "--dataset", str(dataset), "--params", json.dumps(ablation),
                    "--out-dir", str(args.out_dir / "ablation")])
    checks = sorted(map(str, (run / "dft").glob("check_*.h5")))  # thermal samples never trained on
    return status or mlepi(["accuracy", str(model), str(dataset), "--ablation",
                            str(args.out_dir / "ablation" / "model.pt"), "--phonons-ml", str(phonons),
                            *(["--test-frames", *checks] if checks else []), "--primitive", str(primitive),
                            "--config", str(args.configfile),
                            "--out", str(args.out_dir / "accuracy.json")])


if __name__ == "__main__":
    sys.exit(main())
