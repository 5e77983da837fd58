"""``mlepi compare A.h5 B.h5``: errors of frame B against reference frame A (same structure).

Reported (house units with the unit in the key): energy difference per atom (meV/atom), force MAE
(meV/A), H and S block MAE over the blocks both frames hold (meV, 1), Fermi-level difference (meV), and
the eigenvalue MAE at the Gamma, K and M points of the frame's own cell for the bands within +-1 eV of
A's Fermi level (meV). Each eigenvalue of A in the window is paired with the nearest eigenvalue of B, not by
band index: a model H with errors along the near-null directions of S (split-valence bases) has spurious
states hundreds of eV away that shift every band index without touching the bands near E_F.
"""

from __future__ import annotations

import numpy as np

from mlepi.electrons.tb import eigenvalues
from mlepi.formats.frames import Frame, FramesFile, FramesFileError, orbital_counts
from mlepi.geometry.bz import hexagonal_points

EIG_WINDOW_EV = 1.0


def _edge_keys(frame: Frame) -> dict[tuple, int]:
    return {(int(i), int(j), *map(int, r)): e
            for e, (i, j, r) in enumerate(zip(*frame.edge_index, frame.cell_shift))}


def block_mae(a: Frame, b: Frame, basis: dict, key: str) -> tuple[float, int]:
    """MAE of the H or S entries over blocks present in both frames (padding excluded); matched count."""
    keys_a, keys_b = _edge_keys(a), _edge_keys(b)
    common = sorted(set(keys_a) & set(keys_b))
    if not common:
        return float("nan"), 0
    counts = orbital_counts(a.numbers, basis)
    total, n_entries = 0.0, 0
    for edge in common:
        ni, nj = counts[edge[0]], counts[edge[1]]
        da = getattr(a, key)[keys_a[edge], :ni, :nj]
        db = getattr(b, key)[keys_b[edge], :ni, :nj]
        total += np.abs(da - db).sum()
        n_entries += ni * nj
    return total / n_entries, len(common)


def nearest_eigenvalue_mae(ea: np.ndarray, eb: np.ndarray, center: float,
                           half_width: float = EIG_WINDOW_EV, *, aligned: bool = False) -> float:
    """MAE (eV) of the eigenvalues ``ea [n]`` within ``center ± half_width`` against the nearest of ``eb``.

    ``aligned``: after shifting ``eb`` by the mean offset of those pairs (and pairing again), so a constant
    difference of the energy zero does not count: what is left is the error of the bands' shape and splittings.
    """
    window = np.abs(ea - center) <= half_width
    if not window.any():
        return float("nan")
    a = ea[window]

    def offsets(shift):
        shifted = eb - shift
        return shifted[np.abs(a[:, None] - shifted[None, :]).argmin(axis=1)] - a

    shift = float(offsets(0.0).mean()) if aligned else 0.0
    return float(np.abs(offsets(shift)).mean())


def point_eigenvalues(a: Frame, b: Frame, basis: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Eigenvalues (eV) of A and of B at A's cell's G, K and M."""
    points = hexagonal_points(a.cell)
    ea = eigenvalues(a, basis, [points[p] for p in "GKM"])
    eb = eigenvalues(b, basis, [points[p] for p in "GKM"])
    return {label: (ea[index], eb[index]) for index, label in enumerate("GKM")}


def eigenvalue_errors(a: Frame, b: Frame, basis: dict) -> dict[str, float]:
    """MAE (eV) at G, K, M of A's bands within +-1 eV of its Fermi level against B's nearest eigenvalues."""
    return {label: nearest_eigenvalue_mae(ea, eb, a.fermi_level)
            for label, (ea, eb) in point_eigenvalues(a, b, basis).items()}


def compare(path_a, path_b) -> dict:
    """All errors of the first frame of ``path_b`` against the first frame of ``path_a``."""
    file_a, file_b = FramesFile(path_a), FramesFile(path_b)
    if file_a.basis["orbitals"] != file_b.basis["orbitals"]:
        raise FramesFileError(f"{path_b}: basis {file_b.basis['name']} differs from {file_a.basis['name']} "
                              f"of {path_a}; frames in different bases cannot be compared")
    a, b = file_a[0], file_b[0]
    if a.n_atoms != b.n_atoms or not np.array_equal(a.numbers, b.numbers):
        raise FramesFileError(f"{path_a} and {path_b} hold different structures")
    if np.abs(a.positions - b.positions).max() > 1e-6:
        raise FramesFileError(f"{path_a} and {path_b}: positions differ by more than 1e-6 A")
    result = {"frame_a": a.name, "frame_b": b.name, "n_atoms": a.n_atoms}
    if a.energy is not None and b.energy is not None:
        result["energy_diff_meV_per_atom"] = 1e3 * (b.energy - a.energy) / a.n_atoms
    if a.forces is not None and b.forces is not None:
        result["force_mae_meV_per_A"] = 1e3 * float(np.abs(a.forces - b.forces).mean())
    if a.fermi_level is not None and b.fermi_level is not None:
        result["fermi_level_diff_meV"] = 1e3 * (b.fermi_level - a.fermi_level)
    if a.H is not None and b.H is not None:
        h_mae, matched = block_mae(a, b, file_a.basis, "H")
        s_mae, _ = block_mae(a, b, file_a.basis, "S")
        result.update({"h_mae_meV": 1e3 * h_mae, "s_mae": s_mae, "blocks_matched": matched,
                       "blocks_a": a.edge_index.shape[1], "blocks_b": b.edge_index.shape[1]})
        if a.fermi_level is not None:
            for label, err in eigenvalue_errors(a, b, file_a.basis).items():
                result[f"eig_mae_{label}_meV"] = 1e3 * err
    return result


def format_table(result: dict) -> str:
    width = max(map(len, result))
    lines = []
    for key, value in result.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)
