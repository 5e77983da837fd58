"""Benchmark: HedgeNet against MACE (forces, energies, phonons) and against a Hamiltonian baseline of DeepH-E3's
design (H, eigenvalues near E_F, static v_F) on the default run's frames, with the time per structure of each.

    bash scripts/run.sh                 # the default workflow: dataset, model, DFT phonons, cross-check frames
    python benchmarks/peers.py          # writes benchmarks/results/peers.{json,png}, hamiltonian.{json,png}

Runs ``mlepi peers`` and ``mlepi peers_h`` (:mod:`mlepi.evaluation.peers`, :mod:`mlepi.evaluation.peers_h`, the
stages of ``snakemake peers peers_h``) on the default run: MACE and the baseline train on HedgeNet's training
frames in ``results/<system>/peers/`` (each resumes if it is there), and every model is evaluated on HedgeNet's
validation frames and on the band analysis' DFT cross-check samples (``dft/check_*.h5``, thermal frames none of
them trained on). The JSONs and figures are copied here. ``--only`` runs one of the two.
"""

from __future__ import annotations

import shutil
import sys

from default_run import arguments, require

from mlepi.cli import main as mlepi


def main(argv=None) -> int:
    args, cfg, run = arguments(__doc__, argv, add=lambda p: p.add_argument(
        "--only", choices=("peers", "peers_h"), help="run one comparison (default: both)"))
    inputs = {name: run / path for name, path in (
        ("model", "train/member_0/model.pt"), ("dataset", "dataset/dataset.h5"), ("disp", "displace/phonopy_disp.yaml"),
        ("pristine", "displace/pristine.extxyz"), ("dft_phonons", "phonons/phonopy_params.yaml"),
        ("primitive", "structure/primitive.extxyz"))}
    require(*inputs.values())
    checks = sorted(map(str, (run / "dft").glob("check_*.h5")))
    common = [str(inputs["model"]), str(inputs["dataset"]), "--config", str(args.configfile),
              *(["--test-frames", *checks] if checks else []), "--out-dir", str(run / "peers")]
    commands = {
        "peers": (["peers", *common, "--disp", str(inputs["disp"]), "--pristine", str(inputs["pristine"]),
                   "--dft-phonons", str(inputs["dft_phonons"])],
                  {"peers.json": "peers.json", "peers_phonons.png": "peers.png"}),
        "peers_h": (["peers_h", *common, "--primitive", str(inputs["primitive"])],
                    {"hamiltonian.json": "hamiltonian.json", "hamiltonian_bands.png": "hamiltonian.png"}),
    }
    for name, (command, outputs) in commands.items():
        if args.only not in (None, name):
            continue
        status = mlepi(command)
        if status:
            return status
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for produced, kept in outputs.items():
            shutil.copyfile(run / "peers" / produced, args.out_dir / kept)
    return 0


if __name__ == "__main__":
    sys.exit(main())
