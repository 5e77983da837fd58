"""Mean-square thermal displacements of an n x n supercell by phonon branch: how much of <u_z^2> is flexural (ZA).

A thermal sample of the n x n supercell holds the phonons at the q points commensurate with it, q = (i/n, j/n)
of the primitive reciprocal lattice. Per atom and averaged over the supercell,

    <u_z^2> = 1 / (N_q n_prim) sum_{q, b} sigma^2(omega_qb) sum_a |e_{a z}(q, b)|^2 / m_a   (A^2)

with sigma^2 of :func:`mlepi.vibrations.thermal.mode_variances` (zero-point motion included) and e the
mass-weighted eigenvectors of phonopy's dynamical matrix. The modes the sampler leaves out are left out here:
frequencies below ``tolerance_THz`` (the translations at Gamma, and soft modes under ``soft_modes: freeze``).

The flexural (ZA) branch is, at each q but Gamma, the lowest remaining mode whose eigenvector is mostly out of
plane (sum_a |e_az|^2 > 1/2); at Gamma it is the z translation, which no sample holds. Its omega ~ q^2 makes its
share of <u_z^2> grow without bound with the supercell (a free membrane's height fluctuations, ~ kT/(kappa q^2)
per mode), which is why it is reported per size: the electrons at K feel bond-length changes, to which a long
flexural wave contributes only at second order in its gradient, so v_F can converge while <u_z^2> does not.
"""

from __future__ import annotations

import numpy as np
from ase import units

from mlepi.vibrations.thermal import mode_variances, pinned_modes

OUT_OF_PLANE = 0.5  # a mode is out of plane when more than this fraction of its eigenvector is along z


def commensurate_qpoints(n: int) -> np.ndarray:
    """The n x n q points (i/n, j/n, 0) of the primitive reciprocal lattice, reduced coordinates ``[n^2, 3]``."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return np.stack([i.ravel() / n, j.ravel() / n, np.zeros(n * n)], axis=1)


def branch_msd(phonon, n: int, temperatures, tolerance_THz: float = 0.3, frozen_gamma=None) -> list[dict]:
    """Per temperature (K): ``u2_xy_A2``, ``u2_z_A2`` (per atom, per direction), the flexural part
    ``u2_z_ZA_A2`` and its ``ZA_share`` of <u_z^2>, for the n x n supercell of ``phonon``'s primitive cell
    (phonopy force constants, any supercell); ``n_modes_left_out`` counts modes below ``tolerance_THz`` and the
    Γ modes along ``frozen_gamma`` ``[3 n_primitive, p]`` (mass-weighted), which the sampler freezes as well
    (:func:`mlepi.vibrations.thermal.sampler_for`)."""
    qpoints = commensurate_qpoints(n)
    phonon.run_qpoints(qpoints, with_eigenvectors=True)
    freq_THz = np.asarray(phonon.qpoints.frequencies)  # [n_q, n_branch]
    vectors = np.asarray(phonon.qpoints.eigenvectors)  # [n_q, 3 n_prim, n_branch]
    masses = np.asarray(phonon.primitive.masses)
    n_prim = len(masses)
    e2 = np.abs(vectors.reshape(len(qpoints), n_prim, 3, -1)) ** 2  # [n_q, atom, xyz, n_branch]
    weight = e2 / masses[None, :, None, None]
    weight_z, weight_xy = weight[:, :, 2].sum(axis=1), weight[:, :, :2].sum(axis=(1, 2)) / 2  # [n_q, n_branch]
    p_z = e2[:, :, 2].sum(axis=1)  # out-of-plane fraction of each eigenvector
    kept = freq_THz >= tolerance_THz
    kept[0] &= ~pinned_modes(vectors[0], kept[0], frozen_gamma)  # q = 0 is Gamma
    flexural = np.zeros_like(kept)
    for q in range(1, len(qpoints)):  # q = 0 is Gamma, where ZA is the z translation
        candidates = np.flatnonzero(kept[q] & (p_z[q] > OUT_OF_PLANE))
        if len(candidates):
            flexural[q, candidates[np.argmin(freq_THz[q, candidates])]] = True
    omega = np.where(kept, freq_THz, 1.0) * 2 * np.pi * 1e12 / units.s  # THz -> rad per ASE time
    rows = []
    for T in temperatures:
        variance = np.where(kept, mode_variances(omega, float(T)), 0.0) / (len(qpoints) * n_prim)
        u2_z = float(np.sum(variance * weight_z))
        u2_z_za = float(np.sum((variance * weight_z)[flexural]))
        rows.append({"T_K": float(T), "u2_xy_A2": float(np.sum(variance * weight_xy)), "u2_z_A2": u2_z,
                     "u2_z_ZA_A2": u2_z_za, "ZA_share": u2_z_za / u2_z if u2_z > 0 else float("nan"),
                     "n_modes_left_out": int((~kept).sum())})
    return rows
