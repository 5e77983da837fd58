"""Band unfolding of supercell LCAO eigenstates onto the primitive Brillouin zone (non-orthogonal basis).

A supercell is built from a primitive cell by the integer matrix P (rows are lattice vectors:
``supercell_cell = P @ primitive_cell``), N = |det P| primitive cells. In the undisplaced reference supercell
every atom s is a primitive atom μ(s) moved by a primitive lattice vector r(s)
(:func:`mlepi.geometry.supercell.map_supercell`):

    x_s = x_μ(s) + r(s) @ primitive_cell.

Bloch sums use lattice vectors only (GPAW's LCAO phase, ``docs/data.md``). A primitive Bloch orbital at k
splits over the N images of μ, and the supercell Bloch orbitals at K are the same for every k ≡ K modulo the
supercell reciprocal lattice (``exp(ik·L) = exp(iK·L)`` for supercell vectors L):

    |μa, k⟩ = N^(-1/2) Σ_{s: μ(s)=μ} exp(+i k·r(s)) |s a, K⟩

In the Löwdin-orthogonalised supercell basis (coefficients c̃ = S(K)^{1/2} c, orthonormal because
c† S c = 1), the weight of supercell state n on primitive k is

    W_n(k) = Σ_{μ,a} | N^(-1/2) Σ_{s: μ(s)=μ} exp(−2πi k·r(s)) c̃_{sa,n} |²      (k, r reduced, primitive)

The Löwdin orbitals of an undisplaced supercell are lattice translates of the primitive ones (S^{±1/2}
commutes with the translations), so the weights are then exactly 0 or 1 and Σ_k W_n(k) = 1 over the N k
points folding onto K. Exactly degenerate supercell states (e.g. from K and K' at the supercell Γ) are
rotated within their degenerate subspace to diagonalise the projector onto k, which makes their weights
0 or 1 too; the spectral function does not depend on that rotation. Derivation: ``docs/bands.md``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from mlepi.electrons.tb import bloch_sum, orbital_offsets
from mlepi.errors import MlepiError
from mlepi.formats.frames import Frame
from mlepi.geometry.supercell import SupercellMap, supercell_kpoint


class UnfoldError(MlepiError, ValueError):
    """Supercell and primitive cell, or a frame and its reference, do not match."""


def frame_translations(mapping: SupercellMap, frame: Frame, max_displacement: float = 1.0) -> np.ndarray:
    """Primitive translations r(s) ``[n_sc, 3]`` valid for the stored (possibly wrapped) atoms of ``frame``.

    A displaced atom that the writer wrapped by a supercell vector L carries H(R) labels shifted by L; its
    Bloch orbital at K gains exp(−iK·L), which the unfolding absorbs by using r(s) + L (exp(ik·L) =
    exp(iK·L)). Labels come from the reference: the frame's atom s is the reference atom s.

    Raises
    ------
    UnfoldError
        If cell, atom count or species differ from the reference, or an atom sits farther than
        ``max_displacement`` (Å) from its reference site (after removing the wrap).
    """
    if frame.n_atoms != len(mapping.primitive_index) or not np.array_equal(frame.numbers, mapping.numbers):
        raise UnfoldError(f"frame {frame.name!r}: atoms differ from the reference supercell "
                          f"({frame.n_atoms} vs {len(mapping.primitive_index)} atoms, or other species)")
    if np.abs(np.asarray(frame.cell) - mapping.supercell_cell).max() > 1e-4:
        raise UnfoldError(f"frame {frame.name!r}: cell differs from the reference supercell cell")
    frac = (np.asarray(frame.positions) - mapping.reference_positions) @ np.linalg.inv(mapping.supercell_cell)
    wrap = np.rint(frac)
    moved = np.linalg.norm((frac - wrap) @ mapping.supercell_cell, axis=1)
    if moved.max() > max_displacement:
        s = int(np.argmax(moved))
        raise UnfoldError(f"frame {frame.name!r}: atom {s} is {moved[s]:.3f} Å from its reference site "
                          f"(limit {max_displacement} Å); frames and reference supercell do not match "
                          "(atom order?)")
    return mapping.translation + wrap.astype(int) @ mapping.supercell_matrix


# Energy (eV) given to the directions of S(k) below the overlap cutoff, and to the zero-weight padding of an
# unfolding window: far outside every window and grid.
DROPPED_ENERGY_EV = 1.0e4


def lowdin_eigh(H: np.ndarray, S: np.ndarray, name: str = "", overlap_min: float = 0.0,
                project: np.ndarray | None = None,
                window: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (eV, ascending) and Löwdin coefficients c̃ = S^{1/2} c ``[n, n]`` (columns) of H c = e S c.

    Solved as the standard problem S^{-1/2} H S^{-1/2} c̃ = e c̃, which gives c̃ directly. ``overlap_min`` > 0:
    canonical orthogonalisation. The eigenvectors of S(k) with eigenvalue below it (near-linear dependencies of
    the basis) are taken out of the problem: they become states of energy ``DROPPED_ENERGY_EV`` with c̃ along
    themselves, so the count of states, their normalisation and the unfolding are unchanged, while an H with
    errors along those directions (a model, a linearization) cannot put a spurious state near E_F.

    ``project`` [m, n]: return ``project @ c̃`` ``[m, n]`` instead of c̃. The unfolding needs only that projection
    onto one primitive k (m = primitive orbitals); it costs 2 m n² operations in place of the n³ of c̃ itself.

    ``window`` (lo, hi) in eV: only the states with lo < e <= hi (dropped directions never). LAPACK's MRRR
    driver then computes those eigenvectors alone: at 512 orbitals 39 ms against 119 ms for all of them
    (``benchmarks/NOTES.md`` §23); the eigenvalues and their vectors are the same to rounding.
    """
    H = 0.5 * (H + H.conj().T)  # Hermitian only to rounding in model or DFT blocks
    S = 0.5 * (S + S.conj().T)
    # LAPACK drivers timed on S(k) and H′(k) of HedgeNet samples, one thread: for S the MRRR driver (evr) is
    # 1.2x faster than divide and conquer (evd) at 288 and 512 orbitals, for H′ evd is 1.08x faster at 512 (the
    # default, ev, is 2.5-3x slower than either; benchmarks/NOTES.md §21).
    s, U = scipy.linalg.eigh(S, driver="evr")
    if s[0] <= 1e-10 * s[-1]:
        raise UnfoldError(f"{name}: overlap S(k) is not positive definite (smallest eigenvalue {s[0]:.3e})")
    # In the eigenbasis of S the Löwdin problem is (U s^-1/2)† H (U s^-1/2), with c̃ = U y; with a cutoff only the
    # kept block is solved (no cutoff: all of it, the plain Löwdin solution).
    keep = s >= overlap_min
    X = U[:, keep] / np.sqrt(s[keep])
    H_prime = X.conj().T @ H @ X
    left = U if project is None else project @ U
    if window is not None:
        e, y = scipy.linalg.eigh(H_prime, driver="evr", subset_by_value=tuple(window))
        return e, left[:, keep] @ y
    e_keep, y = scipy.linalg.eigh(H_prime, driver="evd")
    e = np.concatenate([e_keep, np.full(int((~keep).sum()), DROPPED_ENERGY_EV)])
    return e, np.concatenate([left[:, keep] @ y, left[:, ~keep]], axis=1)


def orbital_maps(mapping: SupercellMap, basis: dict) -> tuple[np.ndarray, np.ndarray, int]:
    """For each supercell orbital: its atom ``[n_orb_sc]`` and its primitive orbital ``[n_orb_sc]``; n_orb_prim."""
    sc_offsets = orbital_offsets(mapping.numbers, basis)
    prim_offsets = orbital_offsets(mapping.primitive_numbers, basis)
    counts = np.diff(sc_offsets)
    atom = np.repeat(np.arange(len(counts)), counts)
    local = np.arange(sc_offsets[-1]) - sc_offsets[atom]
    prim_orbital = prim_offsets[mapping.primitive_index[atom]] + local
    return atom, prim_orbital, int(prim_offsets[-1])


def bloch_projector(k_prim, translations, atom_of_orbital, prim_orbital, n_prim_orbitals, n_cells) -> np.ndarray:
    """F ``[n_orb_prim, n_orb_sc]`` at one reduced primitive k: the unfolding amplitudes of Löwdin coefficients c̃
    are ⟨μa, k | n⟩ = (F c̃)_{μa,n} = N^{-1/2} Σ_s exp(−2πi k·r(s)) c̃_{sa,n}."""
    phase = np.exp(-2j * np.pi * (translations @ np.asarray(k_prim, float)))[atom_of_orbital]  # [n_orb_sc]
    F = np.zeros((n_prim_orbitals, len(phase)), complex)
    F[prim_orbital, np.arange(len(phase))] = phase / np.sqrt(n_cells)
    return F


def resolve_degenerate(energies: np.ndarray, amplitudes: np.ndarray, tol: float) -> np.ndarray:
    """Weights ``[n_states]`` with each degenerate group (|Δe| ≤ ``tol`` eV, chained) rotated to diagonalise
    the projector onto the primitive k; outside degeneracies this is Σ |amplitude|²."""
    weights = np.sum(np.abs(amplitudes) ** 2, axis=0)
    breaks = np.flatnonzero(np.diff(energies) > tol) + 1
    for group in np.split(np.arange(len(energies)), breaks):
        if len(group) > 1:
            a = amplitudes[:, group]
            weights[group] = np.clip(np.linalg.eigvalsh(a.conj().T @ a), 0.0, None)
    return weights


def unfold(frame: Frame, basis: dict, k_prim_path, mapping: SupercellMap, *, degeneracy_tol: float = 1e-6,
           max_displacement: float = 1.0, resolve_degeneracies: bool = True,
           chunk: int = 8, overlap_min: float = 0.0,
           window: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Supercell band energies and their unfolded weights on primitive k points.

    Parameters
    ----------
    frame : Frame
        Supercell (undisplaced or displaced) with H, S blocks; atom s is reference atom s of ``mapping``.
    basis : dict
        Basis description of the frames file (orbitals per element).
    k_prim_path : array [n_k, 3]
        Primitive k points, reduced (fractions of the primitive reciprocal vectors).
    mapping : SupercellMap
        From :func:`mlepi.geometry.supercell.map_supercell` on the undisplaced reference.
    degeneracy_tol : float
        Energy (eV) below which supercell states count as degenerate (see :func:`resolve_degenerate`).
    max_displacement : float
        Largest allowed distance (Å) of an atom from its reference site.
    resolve_degeneracies : bool
        Rotate degenerate groups (default); False gives the raw per-state weights of the eigensolver's
        vectors, whose sum over the N folding k is 1 state by state.
    chunk : int
        k points per Bloch-sum batch (memory: 2 × chunk × n_orb² complex numbers).
    overlap_min : float
        Canonical orthogonalisation threshold on the eigenvalues of S(K) (:func:`lowdin_eigh`); 0: exact.
    window : (lo, hi), optional
        Only the states with lo < e <= hi (eV): their energies and weights are those of the full solution,
        for a third of the cost of the Löwdin problem's eigenvectors at 512 orbitals (:func:`lowdin_eigh`).
        Rows with fewer states than the widest are padded with energy ``DROPPED_ENERGY_EV`` and weight 0.
        Default: every state.

    Returns
    -------
    energies : array [n_k, n_states]
        Eigenvalues (eV, ascending) at the supercell k onto which each primitive k folds; n_states = n_orb_sc
        without a window.
    weights : array [n_k, n_states]
        W_n(k), in [0, 1].
    """
    if frame.H is None or frame.S is None:
        raise UnfoldError(f"frame {frame.name!r} has no H/S blocks to unfold")
    k_prim = np.atleast_2d(np.asarray(k_prim_path, float))
    translations = frame_translations(mapping, frame, max_displacement)
    atom, prim_orbital, n_prim_orbitals = orbital_maps(mapping, basis)
    K_sc = supercell_kpoint(k_prim, mapping.supercell_matrix)
    energies, weights = [], []
    for lo in range(0, len(k_prim), chunk):
        H_k, S_k = bloch_sum(frame, basis, K_sc[lo:lo + chunk])
        for k, H, S in zip(k_prim[lo:lo + chunk], H_k, S_k):
            F = bloch_projector(k, translations, atom, prim_orbital, n_prim_orbitals, mapping.n_cells)
            e, amp = lowdin_eigh(H, S, name=f"frame {frame.name!r}", overlap_min=overlap_min, project=F,
                                 window=window)
            w = (resolve_degenerate(e, amp, degeneracy_tol) if resolve_degeneracies
                 else np.sum(np.abs(amp) ** 2, axis=0))
            energies.append(e)
            weights.append(w)
    width = max(len(e) for e in energies)
    return (np.array([np.pad(e, (0, width - len(e)), constant_values=DROPPED_ENERGY_EV) for e in energies]),
            np.array([np.pad(w, (0, width - len(w))) for w in weights]))


def spectral_function(energies, weights, energy_grid, broadening: float,
                      kind: str = "lorentzian") -> np.ndarray:
    """A(k, E) = Σ_n W_n(k) δ(E − e_n) ``[n_k, n_E]`` (1/eV), δ broadened.

    Parameters
    ----------
    energies, weights : array [n_k, n_states]
        Energies (eV, on the same zero as ``energy_grid``) and unfolded weights.
    energy_grid : array [n_E]
        Energies (eV).
    broadening : float
        Half width at half maximum of the Lorentzian, or standard deviation of the Gaussian (eV), > 0.
    kind : {'lorentzian', 'gaussian'}
    """
    if broadening <= 0:
        raise ValueError(f"broadening must be > 0 eV, got {broadening}")
    E = np.asarray(energy_grid, float)
    out = np.empty((len(energies), len(E)))
    for i, (e, w) in enumerate(zip(np.asarray(energies), np.asarray(weights))):
        x = E[:, None] - e[None, :]  # [n_E, n_states]
        if kind == "lorentzian":
            shape = broadening / np.pi / (x ** 2 + broadening ** 2)
        elif kind == "gaussian":
            shape = np.exp(-0.5 * (x / broadening) ** 2) / (broadening * np.sqrt(2.0 * np.pi))
        else:
            raise ValueError(f"broadening kind must be 'lorentzian' or 'gaussian', got {kind!r}")
        out[i] = shape @ w
    return out
