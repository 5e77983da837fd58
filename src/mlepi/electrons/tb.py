"""Bloch sums of H(R), S(R) blocks and the generalized eigenproblem H(k) c = e S(k) c.

Works on any :class:`mlepi.formats.frames.Frame` with blocks, whatever wrote it (GPAW or HedgeNet).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg

from mlepi.formats.frames import Frame, orbital_counts


def orbital_offsets(numbers, basis: dict) -> np.ndarray:
    """Start index of each atom's orbitals in the dense matrices, ``[n_atoms + 1]``."""
    return np.concatenate([[0], np.cumsum(orbital_counts(numbers, basis))])


def bloch_sum(frame: Frame, basis: dict, kpts) -> tuple[np.ndarray, np.ndarray]:
    """Dense H(k), S(k) ``[n_k, n_orb, n_orb]`` (eV, 1) at reduced k points ``[n_k, 3]``.

    H(k) = sum_e exp(+2 pi i k . R_e) H[e], the phase convention of GPAW's LCAO mode (docs/data.md).
    """
    kpts = np.atleast_2d(np.asarray(kpts, dtype=float))
    offsets = orbital_offsets(frame.numbers, basis)
    counts = np.diff(offsets)
    n_orb = offsets[-1]
    phases = np.exp(2j * np.pi * kpts @ frame.cell_shift.T)  # [n_k, n_edges]
    H_k = np.zeros((len(kpts), n_orb, n_orb), complex)
    S_k = np.zeros_like(H_k)
    i_e, j_e = frame.edge_index
    # Loop over atom pairs with one vectorised sum over k and edges: blocks of one pair share a shape.
    order = np.lexsort((j_e, i_e))
    pairs, starts = np.unique(np.stack([i_e[order], j_e[order]], 1), axis=0, return_index=True)
    bounds = np.append(starts, len(order))
    for (i, j), lo, hi in zip(pairs, bounds[:-1], bounds[1:]):
        edges = order[lo:hi]
        ni, nj = counts[i], counts[j]
        rows, cols = slice(offsets[i], offsets[i] + ni), slice(offsets[j], offsets[j] + nj)
        H_k[:, rows, cols] = np.einsum("ke,eab->kab", phases[:, edges], frame.H[edges, :ni, :nj])
        S_k[:, rows, cols] = np.einsum("ke,eab->kab", phases[:, edges], frame.S[edges, :ni, :nj])
    return H_k, S_k


def eigh_generalized(H_k: np.ndarray, S_k: np.ndarray, eigvecs: bool = False):
    """Eigenvalues (eV, ascending) ``[n_k, n_orb]`` of H(k) c = e S(k) c, optionally with eigenvectors."""
    values, vectors = [], []
    for H, S in zip(H_k, S_k):
        # Symmetrise: blocks come from finite-precision DFT or a model, Hermitian only to rounding.
        H = 0.5 * (H + H.conj().T)
        S = 0.5 * (S + S.conj().T)
        if eigvecs:
            e, c = scipy.linalg.eigh(H, S)
            vectors.append(c)
        else:
            e = scipy.linalg.eigh(H, S, eigvals_only=True)
        values.append(e)
    if eigvecs:
        return np.array(values), np.array(vectors)
    return np.array(values)


def eigenvalues(frame: Frame, basis: dict, kpts) -> np.ndarray:
    """Band energies (eV) ``[n_k, n_orb]`` of a frame at reduced k points."""
    return eigh_generalized(*bloch_sum(frame, basis, kpts))


def fermi_level(band_energies: np.ndarray, n_electrons: float, width: float, k_weights=None) -> float:
    """Fermi level (eV) that puts ``n_electrons`` (spin-degenerate) into ``band_energies`` ``[n_k, n_bands]``.

    Fermi-Dirac occupations of ``width`` (eV, k_B T of the smearing, > 0), the same convention as GPAW's
    ``FermiDirac(width)``; ``k_weights`` default to uniform and are normalised to 1.
    """
    e = np.atleast_2d(band_energies)
    w = np.full(len(e), 1.0 / len(e)) if k_weights is None else np.asarray(k_weights) / np.sum(k_weights)

    def count(mu: float) -> float:
        x = np.clip((e - mu) / width, -200.0, 200.0)
        return 2.0 * float(np.sum(w[:, None] / (1.0 + np.exp(x))))

    lo, hi = float(e.min()) - 10 * width, float(e.max()) + 10 * width
    if not count(lo) <= n_electrons <= count(hi):
        raise ValueError(f"cannot place {n_electrons} electrons in {e.shape[1]} bands")
    for _ in range(200):  # bisection: count(mu) is monotonic
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if count(mid) < n_electrons else (lo, mid)
    return 0.5 * (lo + hi)


def bloch_sum_sparse(frame: Frame, basis: dict, k) -> tuple[scipy.sparse.csr_matrix, scipy.sparse.csr_matrix]:
    """Sparse H(k), S(k) (eV, 1; CSR, complex) at one reduced k point, the phase convention of :func:`bloch_sum`.

    Memory is O(n_edges n_orb^2), linear in the number of atoms, where the dense matrices are quadratic.
    """
    offsets = orbital_offsets(frame.numbers, basis)
    counts = np.diff(offsets)
    n_max = frame.H.shape[1]
    i_e, j_e = frame.edge_index
    a = np.arange(n_max)
    valid = (a[None, :, None] < counts[i_e][:, None, None]) & (a[None, None, :] < counts[j_e][:, None, None])
    rows = np.broadcast_to(offsets[i_e][:, None, None] + a[None, :, None], valid.shape)[valid]
    cols = np.broadcast_to(offsets[j_e][:, None, None] + a[None, None, :], valid.shape)[valid]
    phase = np.exp(2j * np.pi * frame.cell_shift @ np.asarray(k, dtype=float))  # [n_edges]
    n_orb = int(offsets[-1])

    def assemble(blocks):  # duplicates (one pair, several R) are summed by the CSR conversion
        values = (phase[:, None, None] * blocks[:, :n_max, :n_max])[valid]
        return scipy.sparse.coo_matrix((values, (rows, cols)), shape=(n_orb, n_orb)).tocsr()

    return assemble(frame.H), assemble(frame.S)


def eigenvalues_near(frame: Frame, basis: dict, k, sigma: float, n_states: int, *, eigvecs: bool = False):
    """The ``n_states`` eigenvalues (eV, ascending) of H(k) c = e S(k) c closest to ``sigma`` (eV), e.g. E_F.

    Sparse shift-invert Lanczos (ARPACK through :func:`scipy.sparse.linalg.eigsh`, one sparse LU of
    H - sigma S): for large supercells, where dense diagonalisation costs O(n_orb^3) time and O(n_orb^2)
    memory for all states while only those near the Fermi level are wanted. With ``eigvecs``, also the
    S-normalised eigenvectors ``[n_orb, n_states]``.
    """
    H, S = bloch_sum_sparse(frame, basis, k)
    H = 0.5 * (H + H.conj().T)  # Hermitian to rounding, as in eigh_generalized
    S = 0.5 * (S + S.conj().T)
    # The LU of H - sigma S is factorised here and handed to ARPACK: for complex H(k), eigsh's own
    # shift-invert set-up was ~1.4x slower on a 2592-orbital supercell (benchmarks/NOTES.md).
    lu = scipy.sparse.linalg.splu((H - sigma * S).tocsc())
    shift_invert = scipy.sparse.linalg.LinearOperator(H.shape, matvec=lu.solve, dtype=H.dtype)
    values, vectors = scipy.sparse.linalg.eigsh(H, k=n_states, M=S, sigma=sigma, which="LM", OPinv=shift_invert)
    order = np.argsort(values)
    if eigvecs:
        return values[order], vectors[:, order]
    return values[order]
