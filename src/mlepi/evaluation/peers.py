"""Stage ``peers`` (``snakemake peers``, not in the default target): HedgeNet against MACE on the same frames.

MACE (``mace-torch``, trained by its own ``mace_run_train`` with its small settings, config section ``peers``)
trains on exactly HedgeNet's training frames (the dataset less the model's ``validation_frames``) and
validates on HedgeNet's validation frames. Both models are then evaluated, in one process, on

- the validation frames and the **test frames** (thermal DFT frames never trained on or selected with, e.g.
  the band analysis' cross-check samples ``dft/check_*.h5``): energy per atom and force MAE;
- the same finite differences (the ``displace`` stage's ``phonopy_disp.yaml``): force constants and phonons
  along G-M-K-G against DFT's (:func:`mlepi.ml.phonons_ml.dispersion_errors`);
- the wall time of energy and forces of one structure through each one's ASE calculator.

Outputs in ``out_dir``: ``peers.json``, ``peers_phonons.png`` (both dispersions on DFT's) and ``mace/`` (the
extended-XYZ sets MACE read, its log, checkpoints and ``mace.model``; a killed training resumes from them).
MACE is imported only here, when the stage runs: it is an optional package (``requirements.txt`` installs it
in ``.venv``; ``envs/peers.yaml`` on a cluster).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import ase.io
import numpy as np
import torch

from mlepi import figures
from mlepi.config import stage_config
from mlepi.errors import MlepiError
from mlepi.evaluation.accuracy import read_test_frames
from mlepi.formats import provenance
from mlepi.formats.frames import FramesFile
from mlepi.formats.structures import read_structure
from mlepi.ml.calculator import HedgeNetCalculator
from mlepi.ml.model import HedgeNet
from mlepi.ml.phonons_ml import dispersion_errors, fd_phonons, hedgenet_forces
from mlepi.vibrations.phonons import read_phonopy

log = logging.getLogger(__name__)

SETS = ("train", "valid", "test")
TIMING_REPEATS = 5


class PeersError(MlepiError, RuntimeError):
    """MACE is missing or its training failed."""


def write_sets(dataset: FramesFile, validation: list[str], tests: list, out_dir: Path) -> dict[str, Path]:
    """MACE's training, validation and test sets as extended XYZ (``REF_energy`` in eV, ``REF_forces`` in eV/Å,
    MACE's default keys, kept apart from ASE's own ``energy``): the dataset's frames less ``validation``, the
    ``validation`` frames, and the frames ``tests``. Returns {set: path} of the sets that have frames."""
    unknown = sorted(set(validation) - set(dataset.names))
    if unknown:
        raise PeersError(f"{dataset.path}: the model's validation frames {unknown} are not in the dataset; the "
                         "model was trained on another dataset, rerun train")
    frames = {"train": [f for f in dataset if f.name not in validation],
              "valid": [dataset[name] for name in validation], "test": list(tests)}
    paths = {}
    for name in SETS:
        if not frames[name]:
            continue  # no validation or test frames: MACE then holds out a fraction of the training set
        images = []
        for frame in frames[name]:
            atoms = frame.to_atoms()
            atoms.info = {"config_name": frame.name, "REF_energy": float(frame.energy)}
            atoms.arrays["REF_forces"] = np.asarray(frame.forces, float)
            images.append(atoms)
        paths[name] = out_dir / f"{name}.xyz"
        with provenance.atomic_path(paths[name]) as tmp:
            ase.io.write(tmp, images, format="extxyz")
    return paths


def device_of(setting: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if setting == "auto" else setting


def mace_arguments(sets: dict[str, Path], out_dir: Path, cfg: dict, device: str) -> list[str]:
    """``mace_run_train`` arguments: MACE's README recipe (EMA, AMSGrad, a second, energy-weighted stage) at its
    small size, float64, E0 the least-squares average of the training set (no isolated-atom DFT here)."""
    # Absolute paths: the trainer runs in out_dir (its checkpoints/ and logs/ land there).
    return ["--name=mace", f"--work_dir={out_dir.resolve()}", f"--seed={cfg['seed']}",
            *(f"--{name}_file={path.resolve()}" for name, path in sets.items()),  # train, valid, test files
            "--E0s=average", "--energy_key=REF_energy", "--forces_key=REF_forces", "--model=MACE",
            f"--num_channels={cfg['mace_channels']}", f"--max_L={cfg['mace_max_L']}",
            f"--r_max={cfg['mace_r_max_A']}", f"--batch_size={cfg['mace_batch_size']}",
            f"--valid_batch_size={cfg['mace_batch_size']}", f"--max_num_epochs={cfg['mace_epochs']}",
            "--swa", "--ema", "--ema_decay=0.99", "--amsgrad", f"--device={device}", "--default_dtype=float64",
            "--restart_latest"]


def train_mace(sets: dict[str, Path], out_dir: Path, cfg: dict, device: str) -> tuple[Path, float, bool]:
    """Train MACE with its own trainer in a child process (its log in ``out_dir/train.log``); a second call
    resumes from its checkpoints (MACE keeps the best epoch's, so it retrains from there to the last epoch).
    Returns (the model file, wall seconds of this call, whether it resumed)."""
    resumed = any((out_dir / "checkpoints").glob("*.pt"))
    try:
        import mace  # noqa: F401  (optional package: say so before a child process fails on it)
    except ImportError:
        raise PeersError("mace-torch is not installed: `pip install -r requirements.txt` (or envs/peers.yaml on "
                         "a cluster) installs the pinned version") from None
    start = time.perf_counter()
    with open(out_dir / "train.log", "w") as log_file:
        status = subprocess.run([sys.executable, "-m", "mace.cli.run_train", *mace_arguments(sets, out_dir, cfg,
                                                                                              device)],
                                stdout=log_file, stderr=subprocess.STDOUT, cwd=out_dir,
                                env={**os.environ, "PYTHONWARNINGS": "ignore"}).returncode
    # With --swa MACE writes the stage-two model beside the first; the stage-two one is its final model.
    model = next((m for m in (out_dir / "mace_stagetwo.model", out_dir / "mace.model") if m.is_file()), None)
    if status or model is None:
        raise PeersError(f"mace_run_train failed (exit status {status}): see {out_dir / 'train.log'}")
    return model, time.perf_counter() - start, resumed


def mace_calculator(model: Path, device: str):
    from mace.calculators import MACECalculator

    return MACECalculator(model_paths=str(model), device=device, default_dtype="float64")


def frame_errors(calc, frames) -> dict:
    """Energy per atom (meV/atom) and force (meV/Å) MAE of an ASE calculator against DFT frames."""
    d_energy, d_forces = [], []
    for frame in frames:
        atoms = frame.to_atoms()
        atoms.calc = calc
        d_energy.append((atoms.get_potential_energy() - frame.energy) / len(atoms))
        d_forces.append(np.abs(atoms.get_forces() - frame.forces).ravel())
    return {"energy_mae_meV_per_atom": 1e3 * float(np.mean(np.abs(d_energy))),
            "force_mae_meV_per_A": 1e3 * float(np.mean(np.concatenate(d_forces))), "n_frames": len(frames)}


def time_per_structure(calcs: dict, atoms, repeats: int = TIMING_REPEATS) -> dict[str, float]:
    """Best wall time (s) of energy and forces of ``atoms`` for each ASE calculator of ``calcs``, timed in
    alternation so that a change of the machine's load falls on all of them alike."""
    best = dict.fromkeys(calcs, np.inf)
    for k in range(repeats + 1):  # the first round compiles and warms up
        probe = atoms.copy()
        probe.positions[0, 0] += 1e-4 * (k + 1)  # a new structure, so no calculator returns a cached result
        for name, calc in calcs.items():
            timed = probe.copy()
            timed.calc = calc
            start = time.perf_counter()
            timed.get_forces()
            if k:
                best[name] = min(best[name], time.perf_counter() - start)
    return {name: float(t) for name, t in best.items()}


def calculator_forces(calc):
    """``forces_of`` of :func:`mlepi.ml.phonons_ml.fd_phonons` through an ASE calculator."""
    def forces_of(structures, names):
        out = []
        for atoms in structures:
            atoms = atoms.copy()
            atoms.calc = calc
            out.append(atoms.get_forces().copy())
        return out
    return forces_of


def run(model_path, dataset_path, disp_yaml, pristine_structure, dft_params, out_dir, config: dict | None = None,
        *, test_paths=()) -> dict:
    """Train MACE on HedgeNet's training frames and compare both (module docstring); returns ``peers.json``.

    ``config``: config sections (:func:`mlepi.config.stage_config`); the stage reads ``peers`` and
    ``phonons.band_points``. ``test_paths``: frames files of the test frames (same DFT settings as the dataset).
    """
    config = stage_config("peers", config)
    cfg, band_points = config["peers"], config["phonons"]["band_points"]
    out_dir = Path(out_dir)
    (out_dir / "mace").mkdir(parents=True, exist_ok=True)
    device = device_of(cfg["device"])
    hedgenet = HedgeNet.load(model_path)
    dataset = FramesFile(dataset_path)
    tests = read_test_frames(test_paths, dataset)
    validation = list(hedgenet.metadata.get("validation_frames") or [])
    sets = write_sets(dataset, validation, tests, out_dir / "mace")
    log.info("peers: MACE trains on %d frames, validates on %s", len(dataset) - len(validation), validation)
    mace_model, train_s, resumed = train_mace(sets, out_dir / "mace", cfg, device)

    calculators = {"HedgeNet": HedgeNetCalculator(hedgenet, device=device),
                   "MACE": mace_calculator(mace_model, device)}
    layer = read_structure(pristine_structure).arrays["layer"]
    dft = read_phonopy(dft_params)
    probe = (tests or [dataset[0]])[0].to_atoms()
    models, dispersions = {}, []
    for (name, calc), style in zip(calculators.items(), ("C3--", "C0:")):
        forces_of = hedgenet_forces(hedgenet) if name == "HedgeNet" else calculator_forces(calc)
        phonon = fd_phonons(disp_yaml, layer, forces_of)
        models[name] = {"validation": frame_errors(calc, [dataset[n] for n in validation]) if validation else None,
                        "test": frame_errors(calc, tests) if tests else None,
                        "phonons": dispersion_errors(phonon, dft, band_points)}
        dispersions.append((phonon.band_structure, name, style))
        log.info("peers: %s: %s", name, models[name])
    for name, seconds in time_per_structure(calculators, probe).items():
        models[name]["time_per_structure_s"] = seconds
    figures.plot_phonon_bands([(dft.band_structure, "DFT", "k-"), *dispersions], dft.band_structure.labels,
                              "Phonons: HedgeNet and MACE vs DFT", out_dir / "peers_phonons.png")
    summary = {
        "models": models,
        "mace_over_hedgenet_time": models["MACE"]["time_per_structure_s"] / models["HedgeNet"]["time_per_structure_s"],
        "mace": {"settings": cfg, "arguments": mace_arguments(sets, out_dir / "mace", cfg, device),
                 "train_wall_s": train_s, "train_resumed": resumed, "version": version("mace-torch")},
        "frames": {"train": len(dataset) - len(validation), "validation": validation,
                   "test": [f.name for f in tests], "timed_structure_atoms": len(probe)},
        "device": device,
        "units": {"energy_mae_meV_per_atom": "meV/atom", "force_mae_meV_per_A": "meV/Angstrom",
                  "gamma_frequencies_cm_ml": "cm^-1", "freq_rel_err_mean": "over path frequencies > 1 THz",
                  "time_per_structure_s": "s, energy and forces, best of repeats"},
        "provenance": provenance.record(config, model=str(model_path), dataset=str(dataset_path),
                                        inputs=[str(p) for p in test_paths]),
    }
    provenance.write_json(out_dir / "peers.json", summary)
    return summary

