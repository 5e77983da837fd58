"""Stage ``parity``: HedgeNet against DFT on the held-out frames of the dataset (forces, H blocks).

The model stores the names of its validation frames (``metadata['validation_frames']``), which it never
trained on. For each, the model predicts forces and H on the DFT frame's own block edges; the errors are
written to ``parity.json`` (force MAE in meV/A, H MAE in meV overall and for intra- and inter-layer blocks)
and drawn in ``parity.png``.

It also measures how far the model is from exact rotation covariance (issue 3's requirement): each held-out
structure is predicted again after a seeded random rotation of the whole structure, cell included, and the
result is compared with the first prediction rotated by :mod:`mlepi.ml.wigner` (H blocks) and by R (forces):
``h_rotation_mae_meV``, ``force_rotation_mae_meV_per_A``. An exactly covariant model gives rounding error;
GPAW itself is covariant to ~2e-5 eV (``tests/test_wigner.py``).

Given the primitive cell, it also draws the band structure of HedgeNet against DFT
(``bands_ml_vs_dft.png``), unfolded onto the primitive path G-M-K-G, for the pristine supercell (a
training frame) and one held-out frame. Both take the DFT frame's S (GPAW's exact overlap, as at
inference), so the figure shows the error of the predicted H alone.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from mlepi.electrons.unfold import unfold
from mlepi.evaluation.metrics import (
    EIG_WINDOW_EV,
    _edge_keys,
    block_mae,
    nearest_eigenvalue_mae,
)
from mlepi.figures import plot_band_structure, plot_parity
from mlepi.formats import provenance
from mlepi.formats.frames import Frame, FramesFile, FramesFileError, orbital_counts
from mlepi.formats.structures import read_structure
from mlepi.geometry.bz import hexagonal_path
from mlepi.geometry.supercell import map_supercell
from mlepi.ml import wigner
from mlepi.ml.completion import blocks_on_edges
from mlepi.ml.graph import INTER, edge_type
from mlepi.ml.infer import predict_frames
from mlepi.ml.model import HedgeNet

BAND_PATH = ("G", "M", "K", "G")
BAND_PATH_POINTS = 60
BAND_WINDOW_EV = 3.0  # half width of the plotted energy window around the DFT Fermi level
ROTATION_SEED = 0  # the random rotation of the covariance check (mlepi.ml.wigner.random_rotation)


def _h_pairs(dft, model, basis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DFT and model H elements (eV) of the blocks both hold (padding excluded), and an inter-layer flag."""
    keys_model = _edge_keys(model)
    counts = orbital_counts(dft.numbers, basis)
    inter = edge_type(dft.layer, dft.edge_index) == INTER
    ref, pred, flag = [], [], []
    for key, e in _edge_keys(dft).items():
        if key not in keys_model:
            continue
        ni, nj = counts[key[0]], counts[key[1]]
        ref.append(dft.H[e, :ni, :nj].ravel())
        pred.append(model.H[keys_model[key], :ni, :nj].ravel())
        flag.append(np.full(ni * nj, inter[e]))
    return np.concatenate(ref), np.concatenate(pred), np.concatenate(flag)


def band_structures(pairs: list[tuple[Frame, Frame]], basis: dict, primitive, reference: Frame) -> dict:
    """Unfolded bands of (DFT, HedgeNet) frame pairs on the primitive path; eigenvalue MAE near E_F.

    ``reference`` is the pristine DFT frame: its atoms map the supercell onto the primitive cell and its
    Fermi level is the energy zero. Each HedgeNet frame takes the S of its DFT frame (GPAW's exact overlap
    for the same positions, which inference would compute again), so only the error of H shows.
    """
    mapping = map_supercell(primitive, reference)
    kpts, dist, ticks = hexagonal_path(np.array(primitive.cell), BAND_PATH, BAND_PATH_POINTS)
    result = {"k_distance_1_A": dist, "ticks_1_A": ticks, "labels": list(BAND_PATH),
              "energy_zero_eV": reference.fermi_level, "frames": []}
    for dft, ml in pairs:
        ml.S = blocks_on_edges(dft.edge_index, dft.cell_shift, dft.S, ml, f"DFT frame {dft.name!r} overlap")
        e_dft, w_dft = unfold(dft, basis, kpts, mapping)
        e_ml, w_ml = unfold(ml, basis, kpts, mapping)
        mae = np.nanmean([nearest_eigenvalue_mae(a, b, reference.fermi_level) for a, b in zip(e_dft, e_ml)])
        result["frames"].append({"name": dft.name, "dft": (e_dft - reference.fermi_level, w_dft),
                                 "ml": (e_ml - reference.fermi_level, w_ml), "eig_mae_meV": 1e3 * float(mae)})
    return result


def rotation_covariance(model, atoms_list, predicted: list[Frame], basis: dict, seed: int = ROTATION_SEED) -> dict:
    """Mean |prediction(R x) - R[prediction(x)]| over structures: H blocks (meV; rotated by U_i H U_j^T) and
    forces (meV/Å), for the seeded random rotation R; ``predicted`` are the model's frames of ``atoms_list``."""
    rotation = wigner.random_rotation(seed)
    names = [f.name for f in predicted]
    turned = predict_frames(model, [wigner.rotated_atoms(a, rotation) for a in atoms_list], names,
                            fermi_level=False, overlap="model")
    h_err, f_err = [], []
    for plain, rotated in zip(predicted, turned):
        expected = replace(plain, H=wigner.rotate_blocks(plain.H, plain.numbers, plain.edge_index, basis, rotation))
        h_err.append(block_mae(rotated, expected, basis, "H")[0])
        f_err.append(np.abs(rotated.forces - plain.forces @ rotation.T).mean())
    return {"h_rotation_mae_meV": 1e3 * float(np.mean(h_err)),
            "force_rotation_mae_meV_per_A": 1e3 * float(np.mean(f_err)), "rotation_seed": seed}


def held_out_errors(model, dataset: FramesFile, model_path="model", frames=None) -> tuple[dict, list, list, tuple]:
    """HedgeNet on the validation frames the model was never trained on (or on ``frames``, DFT frames of a test
    set in ``dataset``'s basis): the error summary (forces, H overall, intra- and inter-layer), the DFT and
    predicted frames, and the parity arrays (forces DFT/model, H DFT/model, inter-layer flag). The predicted
    frames carry the model's own S (S is not compared)."""
    if frames is None:
        names = model.metadata.get("validation_frames") or []
        if not names:
            raise FramesFileError(f"{model_path}: the model has no validation frames (train.val_fraction = 0?)")
        dft_frames = [dataset[name] for name in names]
    else:
        dft_frames, names = list(frames), [f.name for f in frames]
    atoms_list = [f.to_atoms() for f in dft_frames]
    predicted = predict_frames(model, atoms_list, names, fermi_level=False, overlap="model")
    forces_ref = np.concatenate([f.forces.ravel() for f in dft_frames])
    forces_ml = np.concatenate([f.forces.ravel() for f in predicted])
    h_summary, (h_ref, h_ml, inter) = h_errors(dft_frames, predicted, dataset.basis)
    summary = {"validation_frames": names, "force_mae_meV_per_A": 1e3 * float(np.abs(forces_ml - forces_ref).mean()),
               **h_summary, **rotation_covariance(model, atoms_list, predicted, dataset.basis)}
    return summary, dft_frames, predicted, (forces_ref, forces_ml, h_ref, h_ml, inter)


def h_errors(dft_frames, predicted, basis) -> tuple[dict, tuple]:
    """H MAE (meV) of model frames against their DFT frames, overall, intra- and inter-layer, the largest error
    of each kind, and the arrays (H DFT, H model, inter-layer flag); any model's frames with H on (some of) the
    DFT frames' edges."""
    pairs = [_h_pairs(d, m, basis) for d, m in zip(dft_frames, predicted)]
    h_ref, h_ml, inter = (np.concatenate(parts) for parts in zip(*pairs))
    err = np.abs(h_ml - h_ref)
    summary = {
        "h_mae_meV": 1e3 * float(err.mean()),
        "h_mae_intra_meV": 1e3 * float(err[~inter].mean()),
        "h_mae_inter_meV": 1e3 * float(err[inter].mean()) if inter.any() else float("nan"),
        # The MAE averages over many near-zero elements; the largest errors show the few that set the physics
        # (the bilayer's dimer hopping gamma1 is one element of a few inter-layer blocks).
        "h_max_err_intra_meV": 1e3 * float(err[~inter].max()),
        "h_max_err_inter_meV": 1e3 * float(err[inter].max()) if inter.any() else float("nan"),
    }
    return summary, (h_ref, h_ml, inter)


def run(model_path, dataset_path, out_dir, primitive=None) -> dict:
    """Predict the validation frames, write ``parity.json`` and ``parity.png``; return the summary.

    With ``primitive`` (path or ase.Atoms of the primitive cell), also ``bands_ml_vs_dft.png``.
    """
    model = HedgeNet.load(model_path)
    dataset = FramesFile(dataset_path)
    summary, dft_frames, predicted, arrays = held_out_errors(model, dataset, model_path)
    summary["provenance"] = provenance.record(None, model=str(model_path), dataset=str(dataset_path))
    out_dir = Path(out_dir)
    if primitive is not None:
        if isinstance(primitive, (str, Path)):
            primitive = read_structure(primitive)
        if "pristine" not in dataset.names:
            raise FramesFileError(f"{dataset_path}: no frame named 'pristine' (the undisplaced supercell) to map "
                                  "onto the primitive cell; run without --primitive to skip the band structure")
        pristine = dataset["pristine"]
        pristine_ml = predict_frames(model, [pristine.to_atoms()], ["pristine"], fermi_level=False,
                                     overlap="model")[0]
        # A thermal sample shows more than a finite-difference displacement, when one is held out.
        held_out = next((k for k, f in enumerate(dft_frames) if f.info.get("temperature_K") is not None), 0)
        pairs = [(pristine, pristine_ml), (dft_frames[held_out], predicted[held_out])]
        bands = band_structures(pairs, dataset.basis, primitive, pristine)
        summary["band_eig_mae_meV"] = {f["name"]: f["eig_mae_meV"] for f in bands["frames"]}
        summary["band_eig_window_eV"] = EIG_WINDOW_EV
        plot_band_structure(bands, out_dir / "bands_ml_vs_dft.png", held_out=[False, True],
                            window=BAND_WINDOW_EV)
    plot_parity(*arrays, summary, out_dir / "parity.png")
    provenance.write_json(out_dir / "parity.json", summary)
    return summary
