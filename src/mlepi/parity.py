"""Stage ``parity``: HedgeNet against DFT on the held-out frames of the dataset (forces, H blocks).

The model stores the names of its validation frames (``metadata['validation_frames']``), which it never
trained on. For each, the model predicts forces and H on the DFT frame's own block edges; the errors are
written to ``parity.json`` (force MAE in meV/A, H MAE in meV overall and for intra- and inter-layer blocks)
and drawn in ``parity.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import provenance
from .compare import _edge_keys
from .frames import FramesFile, FramesFileError, orbital_counts
from .graph import INTER, edge_type


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


def run(model_path, dataset_path, out_dir) -> dict:
    """Predict the validation frames, write ``parity.json`` and ``parity.png``; return the summary."""
    from .figures import plot_parity
    from .infer import predict_frames
    from .model import HedgeNet

    model = HedgeNet.load(model_path)
    dataset = FramesFile(dataset_path)
    names = model.metadata.get("validation_frames") or []
    if not names:
        raise FramesFileError(f"{model_path}: the model has no validation frames (train.val_fraction = 0?)")
    dft_frames = [dataset[name] for name in names]
    # S is not compared here, so the model's own S suffices (no GPAW needed).
    predicted = predict_frames(model, [f.to_atoms() for f in dft_frames], names, fermi_level=False,
                               overlap="model")
    forces_ref = np.concatenate([f.forces.ravel() for f in dft_frames])
    forces_ml = np.concatenate([f.forces.ravel() for f in predicted])
    pairs = [_h_pairs(d, m, dataset.basis) for d, m in zip(dft_frames, predicted)]
    h_ref, h_ml, inter = (np.concatenate(parts) for parts in zip(*pairs))
    err = np.abs(h_ml - h_ref)
    summary = {
        "validation_frames": names,
        "force_mae_meV_per_A": 1e3 * float(np.abs(forces_ml - forces_ref).mean()),
        "h_mae_meV": 1e3 * float(err.mean()),
        "h_mae_intra_meV": 1e3 * float(err[~inter].mean()),
        "h_mae_inter_meV": 1e3 * float(err[inter].mean()) if inter.any() else float("nan"),
        "provenance": provenance.record(None, model=str(model_path), dataset=str(dataset_path)),
    }
    out_dir = Path(out_dir)
    plot_parity(forces_ref, forces_ml, h_ref, h_ml, inter, summary, out_dir / "parity.png")
    provenance.write_json(out_dir / "parity.json", summary)
    return summary
