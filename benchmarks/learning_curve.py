"""Benchmark: HedgeNet's errors on never-seen thermal samples against the amount of DFT training data.

    bash scripts/run.sh                      # the default workflow
    python benchmarks/learning_curve.py      # writes benchmarks/results/learning_curve.{json,png}

What would the accuracy goals (H ≤ 1 meV, eigenvalues ≤ 5 meV) take? The training sets are the default
workflow's with ``thermal.train_samples`` = k per temperature (``--samples``, default 0 2 4 6): pristine, the
finite differences and k Monte Carlo samples per temperature. The sampler's streams make a larger k a superset
of a smaller one (checked here), so this is the workflow's own data axis. The extra GPAW frames run here, two
at a time with one thread each, into ``benchmarks/results/learning_curve/`` (ignored); a finished frame,
training or evaluation is not redone (delete its folder to redo it, e.g. ``k2`` after a new default run).
The k of the default run reuses its dataset and model.

Every set trains with the default config (same model, epochs, seed, validation fraction). Every model is
evaluated by ``mlepi accuracy --test-frames`` on the band analysis' DFT cross-check samples
(``dft/check_*.h5``: thermal samples from the sampler's inference stream, in no training set). A power law
fitted to the test errors against the number of training frames (:func:`mlepi.evaluation.accuracy.data_scaling`, over
the sets with thermal samples, k > 0) says how many frames the goals would take at this training budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml
from ase.io import read
from default_run import arguments, require

from mlepi.electrons.renormalization import (
    STATIC_TOLERANCE,  # |v_F(HedgeNet) / v_F(DFT) - 1| of the static lattice
)
from mlepi.evaluation.accuracy import data_scaling
from mlepi.figures import plot_data_scaling
from mlepi.formats import provenance

MLEPI = str(Path(sys.executable).parent / "mlepi")
GOALS = {"h_mae_meV": 1.0, "h_mae_intra_meV": 1.0, "h_mae_inter_meV": 1.0, "eig_mae_aligned_meV": 5.0,
         "eig_mae_meV": 5.0, "force_mae_meV_per_A": 10.0}


def mlepi(*args, log: Path) -> None:
    """One mlepi stage, its output to ``log``; stops the benchmark if it fails."""
    with open(log, "w") as out:
        status = subprocess.run([MLEPI, *map(str, args)], stdout=out, stderr=subprocess.STDOUT,
                                check=False).returncode
    if status:
        raise SystemExit(f"mlepi {args[0]} failed (exit {status}); see {log}")


def thermal_frames(cfg: dict, run: Path, work: Path, k_max: int) -> dict:
    """Structures of ``k_max`` training samples per temperature ({name: extxyz path}); the run's own samples
    must be the first of them (same seed and sampler), else the data axis would not be the workflow's."""
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({**cfg, "thermal": {**cfg["thermal"], "train_samples": k_max}}))
    structures = {}
    for t in cfg["thermal"]["temperatures"]:
        T, folder = f"{t:g}", work / "thermal" / f"train_T{t:g}"
        if not (folder / f"s{k_max - 1:03d}.extxyz").exists():
            mlepi("thermal", "--config", config, "--phonopy", run / "phonons" / "phonopy_params.yaml",
                  "--pristine", run / "displace" / "pristine.extxyz", "--temperature", T, "--purpose", "train",
                  "--out", folder, log=work / f"thermal_T{T}.log")
        for k in range(k_max):
            structures[f"mc_T{T}_s{k:03d}"] = folder / f"s{k:03d}.extxyz"
        for k in range(cfg["thermal"]["train_samples"]):
            mine, theirs = read(folder / f"s{k:03d}.extxyz"), read(run / "thermal" / f"train_T{T}" / f"s{k:03d}.extxyz")
            if not np.allclose(mine.positions, theirs.positions, atol=1e-10):
                raise SystemExit(f"{folder}/s{k:03d}.extxyz differs from the default run's sample: is {run} from "
                                 "this config?")
    return structures


def dft_frames(run: Path, work: Path, structures: dict) -> dict:
    """DFT frames files of the thermal samples ({name: .h5}): the run's where it has them, else GPAW here."""
    frames, todo = {}, []
    for name, structure in structures.items():
        if (run / "dft" / f"{name}.h5").exists():
            frames[name] = run / "dft" / f"{name}.h5"
        else:
            frames[name] = work / "dft" / f"{name}.h5"
            if not frames[name].exists():
                todo.append((name, structure))

    def job(item):
        name, structure = item
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        status = subprocess.run([MLEPI, "dft", str(structure), "--config", str(work / "config.yaml"), "--name", name,
                                 "--out", str(frames[name]), "--log", str(work / "dft" / f"{name}.gpaw.txt")],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, check=False).returncode
        print(f"  DFT {name}: {'done' if status == 0 else f'failed (exit {status})'}", flush=True)
        return status

    if todo:
        (work / "dft").mkdir(parents=True, exist_ok=True)
        print(f"{len(todo)} GPAW frame(s), two at a time", flush=True)
        with ThreadPoolExecutor(2) as pool:
            if any(list(pool.map(job, todo))):
                raise SystemExit(f"a DFT frame failed; see {work / 'dft'}")
    return frames


def main(argv=None) -> int:
    args, cfg, run = arguments(__doc__, argv, lambda p: p.add_argument(
        "--samples", type=int, nargs="+", default=[0, 2, 4, 6],
        help="thermal training samples per temperature of each training set (even: antithetic pairs)"))
    checks = sorted((run / "dft").glob("check_*.h5"))
    require(run / "train" / "member_0" / "model.pt", run / "dataset" / "dataset.h5",
            run / "phonons" / "phonopy_params.yaml")
    if not checks:
        raise SystemExit(f"no DFT cross-check samples in {run / 'dft'} (bands.dft_check_samples: 0?)")
    work = args.out_dir / "learning_curve"
    work.mkdir(parents=True, exist_ok=True)
    default_k = cfg["thermal"]["train_samples"]
    structures = thermal_frames(cfg, run, work, max(args.samples))
    mc = dft_frames(run, work, structures)
    base = [run / "dft" / "pristine.h5", *sorted((run / "dft").glob("fd_*.h5"))]
    rows = []
    for k in sorted(args.samples):
        folder = work / f"k{k}"
        folder.mkdir(exist_ok=True)
        if k == default_k:
            model, dataset = run / "train" / "member_0" / "model.pt", run / "dataset" / "dataset.h5"
        else:
            model, dataset = folder / "model.pt", folder / "dataset.h5"
            frames = base + [path for name, path in mc.items() if int(name.rsplit("_s", 1)[1]) < k]
            if not dataset.exists():
                mlepi("dataset", "--frames", *frames, "--out", dataset, log=folder / "dataset.log")
            if not model.exists():
                print(f"training k = {k} ({len(frames)} frames)", flush=True)
                mlepi("train", "--config", args.configfile, "--dataset", dataset, "--out-dir", folder,
                      log=folder / "train.log")
        result_path = folder / "accuracy.json"
        if not result_path.exists():
            mlepi("accuracy", model, dataset, "--test-frames", *checks, "--primitive",
                  run / "structure" / "primitive.extxyz", "--config", args.configfile, "--out", result_path,
                  log=folder / "accuracy.log")
        result = json.loads(result_path.read_text())
        n_frames = result["data"]["n_frames"]
        rows.append({"train_samples_per_T": k, "n_frames": n_frames,
                     "n_train": n_frames - len(result["data"]["validation_frames"]), "model": str(model),
                     "best_epoch": result["best_epoch"], "test": result["test"],
                     "vf_static_rel_err": result["vf_static_rel_err"],
                     "validation": {key: result[key] for key in GOALS}})
        print(f"k = {k}: {rows[-1]['n_train']} training frames, test H {result['test']['h_mae_meV']:.2f} meV, "
              f"eigenvalues {result['test']['eig_mae_aligned_meV']:.1f} meV aligned, static v_F "
              f"{100 * result['vf_static_rel_err']:+.1f} %", flush=True)
    # The power laws are fitted where the training sets hold thermal samples: without them (k = 0) the thermal
    # test frames lie outside everything trained on, another regime than more of the same data.
    fitted = [r for r in rows if r["train_samples_per_T"] > 0]
    n_train = [r["n_train"] for r in fitted]
    fits = {key: data_scaling(n_train, [r["test"][key] for r in fitted], goal) for key, goal in GOALS.items()}
    fits["vf_static_abs_rel_err"] = data_scaling(n_train, [abs(r["vf_static_rel_err"]) for r in fitted],
                                                   STATIC_TOLERANCE)
    document = {"rows": rows, "fits": fits, "fitted_n_train": n_train, "test_frames": [p.stem for p in checks],
                "config": str(args.configfile), "provenance": provenance.record(None)}
    provenance.write_json(args.out_dir / "learning_curve.json", document)
    plot_data_scaling(document, args.out_dir / "learning_curve.png")
    for key, fit in fits.items():
        reach = f"{fit['frames_for_goal']:.0f} frames" if fit["frames_for_goal"] else "not with more frames"
        print(f"{key}: exponent {fit['exponent']:.2f} (err ∝ n^-exponent), goal {fit['goal']:g}: {reach}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
