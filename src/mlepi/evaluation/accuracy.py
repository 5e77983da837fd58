"""Command ``accuracy``: how close a trained HedgeNet comes to DFT on configurations it never saw, and what the
intra/inter-layer split of its edge modules is worth (the same network with one edge type, same data and
training budget). A benchmark: numbers to JSON with the learning curves beside them, nothing asserted.

On the validation frames of the model (held out by ``mlepi train``):

- H MAE overall, on intra- and on inter-layer blocks (meV), the largest error of an intra- and an inter-layer
  element, force MAE (meV/Å): :func:`parity.held_out_errors`;
- eigenvalue MAE (meV) at the supercell's Gamma, K and M within ±1 eV of the DFT Fermi level, against GPAW's
  eigenvalues of the same configuration (nearest-eigenvalue pairing, :func:`compare.nearest_eigenvalue_mae`); both
  sides use GPAW's S, as inference does. Also ``eig_mae_aligned_meV``: the same after removing the mean offset
  within the window. A constant offset is a different energy zero; inference computes the Fermi level from its
  own H, so band energies relative to E_F (all the band analysis uses) see only the aligned error;
- phonon frequencies from HedgeNet force constants against DFT force constants: the ``phonons_ml`` stage's
  relative errors along the path (frequencies above 1 THz);
- with the primitive cell, the static-lattice v_F of the pristine frame from HedgeNet's H and from DFT's
  (:func:`static_vf`), the quantity the band analysis is built on.

With ``test_paths`` the same errors go under ``test`` for the frames of other DFT files, such as the thermal
samples the band analysis recomputes with GPAW (``dft/check_*.h5``): drawn from the inference stream of the
sampler, so in no training set whatever the split, and thermal where the validation frames may be finite
differences. ``benchmarks/learning_curve.py`` measures these errors against the amount of training data.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from mlepi.config import stage_config
from mlepi.config.bands import BandsConfig
from mlepi.electrons.renormalization import Analysis
from mlepi.evaluation.metrics import (
    EIG_WINDOW_EV,
    nearest_eigenvalue_mae,
    point_eigenvalues,
)
from mlepi.evaluation.parity import held_out_errors
from mlepi.figures import plot_learning_curves
from mlepi.formats import provenance
from mlepi.formats.frames import FramesFile, FramesFileError
from mlepi.ml.completion import blocks_on_edges
from mlepi.ml.infer import predict_frames
from mlepi.ml.model import HedgeNet


def evaluate(model_path, dataset, frames=None) -> dict:
    """Held-out errors of one model (see the module docstring) on its validation frames, or on ``frames``."""
    model = HedgeNet.load(model_path)
    summary, dft_frames, predicted, _ = held_out_errors(model, dataset, model_path, frames)
    summary.update(eigenvalue_errors(dft_frames, predicted, dataset.basis))
    summary["train_config"] = model.metadata.get("train_config")
    summary["model_config"] = model.config
    summary["best_epoch"] = model.metadata.get("epoch")
    return summary


def eigenvalue_errors(dft_frames, predicted, basis) -> dict:
    """Eigenvalue MAE (meV) at G, K and M within the window around each DFT frame's Fermi level, plain and
    aligned (module docstring), of model frames against their DFT frames; each model frame takes its DFT
    frame's S (set in place), as inference does."""
    by_point = {(p, aligned): [] for p in "GKM" for aligned in (False, True)}
    for dft, ml in zip(dft_frames, predicted):
        ml.S = blocks_on_edges(dft.edge_index, dft.cell_shift, dft.S, ml, "DFT")
        for point, (e_dft, e_ml) in point_eigenvalues(dft, ml, basis).items():  # one diagonalization
            for aligned in (False, True):
                by_point[(point, aligned)].append(nearest_eigenvalue_mae(e_dft, e_ml, dft.fermi_level,
                                                                         aligned=aligned))
    # A point without DFT states within the window (at K and M of a 3n x 3n supercell the pi bands lie
    # further out: the primitive K folds onto Gamma) has no error to report: null.
    summary = {}
    for aligned, suffix in ((False, ""), (True, "_aligned")):
        maes = {p: v for (p, a), v in by_point.items() if a == aligned}
        summary[f"eig_mae{suffix}_meV_by_point"] = {p: _mean_meV(v) for p, v in maes.items()}
        summary[f"eig_mae{suffix}_meV"] = _mean_meV([m for v in maes.values() for m in v])
    return summary


ERROR_KEYS = ("h_mae_meV", "h_mae_intra_meV", "h_mae_inter_meV", "h_max_err_intra_meV", "h_max_err_inter_meV",
              "force_mae_meV_per_A", "eig_mae_meV", "eig_mae_meV_by_point", "eig_mae_aligned_meV",
              "eig_mae_aligned_meV_by_point")


def read_test_frames(paths, dataset: FramesFile) -> list:
    """Every frame of the frames files ``paths`` (e.g. the DFT cross-check samples of the band analysis), checked
    to be in the dataset's basis and DFT parameters, so that errors on them compare like with like."""
    frames = []
    for path in paths:
        test = FramesFile(path)
        for what, mine, theirs in (("basis", test.basis, dataset.basis),
                                   ("DFT parameters", test.parameters, dataset.parameters)):
            if mine != theirs:
                raise FramesFileError(f"{path}: its {what} differ from the dataset's; test frames must come from "
                                      "the same DFT settings as the training data")
        frames += [test[name] for name in test.names]
    return frames


def static_vf(model_path, dataset: FramesFile, primitive, cfg: BandsConfig) -> dict:
    """v_F (1e6 m/s) of the dataset's pristine supercell from HedgeNet's H and from DFT's, both with DFT's S, by
    the band analysis of the ``renormalization`` stage (its static lattice): the physical quantity the blocks
    are for. It sums every hopping of the supercell with its Bloch phase, so it sees systematic errors that
    an element-wise MAE averages away (benchmarks/NOTES.md §17)."""
    dft = pristine_frame(dataset)
    ml = predict_frames(HedgeNet.load(model_path), [dft.to_atoms()], ["pristine"], fermi_level=False,
                        overlap="model")[0]
    return static_vf_of(ml, dataset, primitive, cfg)


def pristine_frame(dataset: FramesFile):
    if "pristine" not in dataset.names:
        raise FramesFileError(f"{dataset.path}: no frame named 'pristine' (the undisplaced supercell) for the "
                              "static-lattice v_F; run without --primitive")
    return dataset["pristine"]


def static_vf_of(ml, dataset: FramesFile, primitive, cfg: BandsConfig) -> dict:
    """:func:`static_vf` of any model's frame ``ml`` of the pristine supercell (H on the DFT frame's edges)."""
    dft = pristine_frame(dataset)
    ml.S = blocks_on_edges(dft.edge_index, dft.cell_shift, dft.S, ml, "DFT pristine overlap")
    analysis = Analysis(primitive, dft.to_atoms(), cfg)
    vf = {source: analysis.single(frame, dataset.basis, dft.fermi_level, source)["vf_1e6_m_s"]
          for source, frame in (("dft", dft), ("ml", ml))}
    return {"vf_static_dft_1e6_m_s": vf["dft"], "vf_static_ml_1e6_m_s": vf["ml"],
            "vf_static_rel_err": vf["ml"] / vf["dft"] - 1}


def run(model_path, dataset_path, out_path, config: dict | None = None, *, ablation_path=None,
        phonons_ml_path=None, ablation_phonons_ml_path=None, test_paths=(), primitive=None) -> dict:
    """Evaluate the model (and its ablation) and write ``out_path`` (JSON) with the learning curves beside it
    (``out_path`` with suffix ``.png``, from the ``metrics.csv`` next to each model). With ``test_paths``
    (frames files), the same errors on their frames go under ``test``; with ``primitive`` (path or Atoms), the
    static-lattice v_F of both models (:func:`static_vf`). ``config``: config sections
    (:func:`mlepi.config.stage_config`); the stage reads the ``bands`` section, for the static-lattice v_F."""
    bands_cfg = BandsConfig.from_section(stage_config("accuracy", config)["bands"])
    dataset = FramesFile(dataset_path)
    tests = read_test_frames(test_paths, dataset)  # refused before any work
    main = evaluate(model_path, dataset)
    result = {key: main[key] for key in (*ERROR_KEYS, "h_rotation_mae_meV", "force_rotation_mae_meV_per_A")}
    if primitive is not None:
        result.update(static_vf(model_path, dataset, primitive, bands_cfg))
    result["eig_window_eV"] = EIG_WINDOW_EV
    for prefix, path in (("", phonons_ml_path), ("ablation_", ablation_phonons_ml_path)):
        if path is not None:
            phonons = json.loads(Path(path).read_text())
            result[f"{prefix}phonon_freq_max_rel_err"] = phonons["freq_rel_err_max"]
            result[f"{prefix}phonon_freq_mean_rel_err"] = phonons["freq_rel_err_mean"]
            result[f"{prefix}gamma_frequencies_cm"] = {"dft": phonons["gamma_frequencies_cm_dft"],
                                                       "ml": phonons["gamma_frequencies_cm_ml"]}
    curves = {"HedgeNet (intra/inter split)": _metrics(model_path)}
    if ablation_path is not None:
        ablation = evaluate(ablation_path, dataset)
        for key in ("h_mae_meV", "h_mae_intra_meV", "h_mae_inter_meV", "eig_mae_meV", "eig_mae_aligned_meV"):
            result[f"ablation_{key}"] = ablation[key]
        result["ablation_force_mae_meV_per_A"] = ablation["force_mae_meV_per_A"]
        result["ablation_model_config"] = ablation["model_config"]
        if primitive is not None:
            vf = static_vf(ablation_path, dataset, primitive, bands_cfg)
            result.update({f"ablation_{k}": v for k, v in vf.items()})
        curves["one edge type (ablation)"] = _metrics(ablation_path)
    if tests:
        result["test"] = {"files": [str(p) for p in test_paths], "frames": [f.name for f in tests],
                          **{k: v for k, v in evaluate(model_path, dataset, tests).items() if k in ERROR_KEYS}}
        if ablation_path is not None:
            ablation = evaluate(ablation_path, dataset, tests)
            result["test"].update({f"ablation_{k}": ablation[k] for k in ERROR_KEYS})
    result.update(
        goals={"h_mae_meV": 1.0, "force_mae_meV_per_A": 10.0, "eig_mae_meV": 5.0},
        model=str(model_path), model_config=main["model_config"], train_config=main["train_config"],
        best_epoch=main["best_epoch"],
        data={"dataset": str(dataset_path), "n_frames": len(dataset), "validation_frames": main["validation_frames"],
              "dft_parameters": dataset.parameters, "basis": dataset.basis["name"]},
        provenance=provenance.record(None, model=str(model_path), dataset=str(dataset_path)))
    provenance.write_json(out_path, result)
    plot_learning_curves(curves, Path(out_path).with_suffix(".png"))
    return result


def _mean_meV(values_eV) -> float | None:
    finite = [v for v in values_eV if np.isfinite(v)]
    return 1e3 * float(np.mean(finite)) if finite else None


def _metrics(model_path) -> list[dict]:
    path = Path(model_path).with_name("metrics.csv")
    with open(path) as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def data_scaling(n_train, errors, goal: float) -> dict:
    """Power law err = a · n^(−b) fitted (least squares in log-log) to held-out errors against the number of
    training frames, and the n at which it reaches ``goal`` (None if the errors do not fall with n). An
    extrapolation at a fixed training budget per frame, not a promise: the fit says how the error falls over
    the measured range and what that trend would ask for."""
    n, err = np.asarray(n_train, dtype=float), np.asarray(errors, dtype=float)
    if len(n) < 2:
        raise ValueError("a power law needs errors at two or more training-set sizes")
    slope, intercept = np.polyfit(np.log(n), np.log(err), 1)
    exponent, prefactor = -float(slope), float(np.exp(intercept))
    frames = (prefactor / goal) ** (1 / exponent) if exponent > 0 else None
    return {"exponent": exponent, "prefactor": prefactor, "goal": goal, "frames_for_goal": frames}
