"""Benchmark: HedgeNet against MACE on the default run's frames (forces, energies, phonons, time per structure).

    bash scripts/run.sh                 # the default workflow: dataset, model, DFT phonons, cross-check frames
    python benchmarks/peers.py          # writes benchmarks/results/peers.{json,png}

Runs ``mlepi peers`` (:mod:`mlepi.evaluation.peers`, the stage of ``snakemake peers``) on the default run:
MACE trains on HedgeNet's training frames in ``results/<system>/peers/mace/`` (resumes if it is there), both
models are evaluated on HedgeNet's validation frames and on the band analysis' DFT cross-check samples
(``dft/check_*.h5``, thermal frames neither model trained on). The JSON and the phonon figure are copied here.
"""

from __future__ import annotations

import shutil
import sys

from default_run import arguments, require

from mlepi.cli import main as mlepi


def main(argv=None) -> int:
    args, cfg, run = arguments(__doc__, argv)
    inputs = {name: run / path for name, path in (
        ("model", "train/model.pt"), ("dataset", "dataset/dataset.h5"), ("disp", "displace/phonopy_disp.yaml"),
        ("pristine", "displace/pristine.extxyz"), ("dft_phonons", "phonons/phonopy_params.yaml"))}
    require(*inputs.values())
    checks = sorted(map(str, (run / "dft").glob("check_*.h5")))
    status = mlepi(["peers", str(inputs["model"]), str(inputs["dataset"]), "--config", str(args.configfile),
                    "--disp", str(inputs["disp"]), "--pristine", str(inputs["pristine"]),
                    "--dft-phonons", str(inputs["dft_phonons"]), *(["--test-frames", *checks] if checks else []),
                    "--out-dir", str(run / "peers")])
    if not status:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / "peers" / "peers.json", args.out_dir / "peers.json")
        shutil.copyfile(run / "peers" / "peers_phonons.png", args.out_dir / "peers.png")
    return status


if __name__ == "__main__":
    sys.exit(main())
