"""Benchmark: HedgeNet's held-out accuracy against DFT, and the gain of the intra/inter-layer split.

    bash scripts/run.sh                 # the default workflow: dataset, model, phonons_ml
    python benchmarks/accuracy.py       # writes benchmarks/results/accuracy.{json,png}

Trains the ablation (the same network with one edge type, ``model.heterogeneous: false``, same data, epochs,
seed and split) into ``benchmarks/results/ablation/`` (resumes if it is there), its phonons on the same finite
differences (``mlepi phonons_ml``, into ``ablation/phonons_ml/``), then runs ``mlepi accuracy``
(:mod:`mlepi.evaluation.accuracy`) on the default run's model and the ablation: on the model's validation frames
and, under ``test``, on the test set (``dft/test_*.h5``: thermal DFT frames of their own seed at every temperature
and at 1.5x the highest, never trained on, ``docs/active.md``).
"""

from __future__ import annotations

import json
import sys

from default_run import arguments, require

from mlepi.cli import main as mlepi


def main(argv=None) -> int:
    args, cfg, run = arguments(__doc__, argv)
    model, dataset, phonons, primitive = (run / "train" / "member_0" / "model.pt", run / "dataset" / "dataset.h5",
                                          run / "phonons_ml" / "summary.json", run / "structure" / "primitive.extxyz")
    require(model, dataset, phonons, primitive)
    ablation = {"model": {**cfg["model"], "heterogeneous": False}, "train": cfg["train"]}
    status = mlepi(["train", "--dataset", str(dataset), "--params", json.dumps(ablation),
                    "--out-dir", str(args.out_dir / "ablation")])
    # The ablation's phonons: the same finite differences as the phonons_ml stage, with its forces.
    ablation_phonons = args.out_dir / "ablation" / "phonons_ml"
    status = status or mlepi(["phonons_ml", str(args.out_dir / "ablation" / "model.pt"), "--disp",
                              str(run / "displace" / "phonopy_disp.yaml"), "--pristine",
                              str(run / "displace" / "pristine.extxyz"), "--dft-phonons",
                              str(run / "phonons" / "phonopy_params.yaml"), "--config", str(args.configfile),
                              "--out-dir", str(ablation_phonons)])
    tests = sorted(map(str, (run / "dft").glob("test_*.h5")))  # the test set (thermal.test_samples)
    return status or mlepi(["accuracy", str(model), str(dataset), "--ablation",
                            str(args.out_dir / "ablation" / "model.pt"), "--phonons-ml", str(phonons),
                            "--ablation-phonons-ml", str(ablation_phonons / "summary.json"),
                            *(["--test-frames", *tests] if tests else []), "--primitive", str(primitive),
                            "--config", str(args.configfile),
                            "--out", str(args.out_dir / "accuracy.json")])


if __name__ == "__main__":
    sys.exit(main())
