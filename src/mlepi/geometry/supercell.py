"""A supercell and its primitive cell: the integer matrix P between their cells, each supercell atom as a
primitive atom moved by a primitive lattice vector, and the k points that fold onto each other.

A supercell is built from a primitive cell by P (rows are lattice vectors: ``supercell_cell = P @ primitive_cell``),
N = |det P| primitive cells. In the undisplaced reference supercell every atom s is a primitive atom μ(s) moved by
a primitive lattice vector r(s) (:func:`map_supercell`): x_s = x_μ(s) + r(s) @ primitive_cell. The band
unfolding (:mod:`mlepi.electrons.unfold`) and the tiling of a primitive DFT frame (:mod:`mlepi.dft.tiling`) are
built on this map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlepi.errors import MlepiError


class SupercellError(MlepiError, ValueError):
    """A supercell is not an undisplaced integer supercell of the primitive cell."""


@dataclass(frozen=True)
class SupercellMap:
    """Supercell atom s ↔ (primitive atom μ(s), primitive lattice vector r(s)), from the reference structure."""

    primitive_index: np.ndarray  # [n_sc] μ(s)
    translation: np.ndarray  # [n_sc, 3] int, r(s) in primitive lattice coordinates
    supercell_matrix: np.ndarray  # [3, 3] int, supercell_cell = P @ primitive_cell
    primitive_cell: np.ndarray  # [3, 3] Å, rows
    supercell_cell: np.ndarray  # [3, 3] Å, rows
    primitive_numbers: np.ndarray  # [n_prim]
    reference_positions: np.ndarray  # [n_sc, 3] Å, the undisplaced supercell

    @property
    def n_cells(self) -> int:
        """N, the number of primitive cells in the supercell."""
        return int(round(abs(np.linalg.det(self.supercell_matrix))))

    @property
    def numbers(self) -> np.ndarray:
        return self.primitive_numbers[self.primitive_index]


def supercell_matrix(primitive_cell, supercell_cell, tol: float = 1e-4) -> np.ndarray:
    """Integer P ``[3, 3]`` with ``supercell_cell = P @ primitive_cell`` (rows), or :class:`SupercellError`."""
    P = np.asarray(supercell_cell, float) @ np.linalg.inv(np.asarray(primitive_cell, float))
    P_int = np.rint(P).astype(int)
    if np.abs(P - P_int).max() > tol or round(abs(np.linalg.det(P_int))) < 1:
        raise SupercellError(f"supercell cell is not an integer multiple of the primitive cell: P = {P.round(4)}")
    return P_int


def map_supercell(primitive, supercell, tol: float = 1e-3) -> SupercellMap:
    """Map each atom of the undisplaced supercell onto (primitive atom, primitive lattice vector).

    Works with any cell, the vacuum axis included: an atom wrapped across the vacuum boundary just gets a
    translation with a non-zero third component, which is what its stored H(R) labels mean.

    Parameters
    ----------
    primitive, supercell : ase.Atoms (or :class:`mlepi.formats.frames.Frame`)
        The primitive cell and the undisplaced reference supercell, in the atom order of the frames.
    tol : float
        Largest distance (Å) of a supercell atom from its primitive image.

    Raises
    ------
    SupercellError
        If an atom has no image, or the images do not cover every primitive atom exactly N times.
    """
    prim_cell, prim_pos, prim_z = _geometry(primitive)
    sc_cell, sc_pos, sc_z = _geometry(supercell)
    P = supercell_matrix(prim_cell, sc_cell)
    n_cells = int(round(abs(np.linalg.det(P))))
    if len(sc_pos) != n_cells * len(prim_pos):
        raise SupercellError(f"supercell has {len(sc_pos)} atoms, expected {n_cells} x {len(prim_pos)}")
    inv_prim = np.linalg.inv(prim_cell)
    mu = np.full(len(sc_pos), -1)
    shift = np.zeros((len(sc_pos), 3), int)
    for s, (x, z) in enumerate(zip(sc_pos, sc_z)):
        frac = (x - prim_pos) @ inv_prim  # [n_prim, 3]: integer for the primitive image of s
        r = np.rint(frac)
        dist = np.linalg.norm((frac - r) @ prim_cell, axis=1)
        hits = np.flatnonzero((dist < tol) & (prim_z == z))
        if len(hits) != 1:
            raise SupercellError(f"supercell atom {s} at {x.round(4)} Å matches {len(hits)} primitive atoms "
                              f"(closest {dist.min():.4f} Å, tol {tol} Å); is the supercell undisplaced and "
                              "built from this primitive cell?")
        mu[s], shift[s] = hits[0], r[hits[0]].astype(int)
    _check_cosets(mu, shift, P, len(prim_pos), n_cells)
    return SupercellMap(primitive_index=mu, translation=shift, supercell_matrix=P, primitive_cell=prim_cell,
                        supercell_cell=sc_cell, primitive_numbers=prim_z, reference_positions=sc_pos)


def _geometry(structure):
    """(cell, positions, atomic numbers) of an ``ase.Atoms`` or of anything with those three attributes (a
    :class:`mlepi.formats.frames.Frame`)."""
    if hasattr(structure, "get_positions"):
        return np.array(structure.cell, float), structure.get_positions(), structure.get_atomic_numbers()
    return np.asarray(structure.cell, float), np.asarray(structure.positions, float), np.asarray(structure.numbers)


def _check_cosets(mu, shift, P, n_prim, n_cells) -> None:
    """Each primitive atom must appear N times, at translations distinct modulo the supercell lattice."""
    for m in range(n_prim):
        r = shift[mu == m]
        if len(r) != n_cells:
            raise SupercellError(f"primitive atom {m} has {len(r)} supercell images, expected {n_cells}")
        frac = r @ np.linalg.inv(P)  # supercell lattice coordinates of r
        frac = np.round(frac - np.floor(frac + 1e-9), 9) % 1.0
        if len(np.unique(frac, axis=0)) != n_cells:
            raise SupercellError(f"images of primitive atom {m} repeat a translation modulo the supercell")


def supercell_kpoint(k_prim, supercell_matrix) -> np.ndarray:
    """Supercell k ``[..., 3]`` (reduced, wrapped to [-1/2, 1/2)) onto which primitive k (reduced) folds.

    From k·L for L = n @ P @ primitive_cell: K_sc = P @ k (as column vectors).
    """
    K = np.asarray(k_prim, float) @ np.asarray(supercell_matrix).T
    return K - np.floor(K + 0.5)


def folding_kpoints(K_sc, supercell_matrix) -> np.ndarray:
    """The N primitive k points ``[N, 3]`` (reduced, in [0, 1)) that fold onto supercell k ``K_sc`` (reduced)."""
    P = np.asarray(supercell_matrix)
    P_inv = np.linalg.inv(P)
    # k = P^{-1} (K + G) for the N supercell reciprocal vectors G inside one primitive reciprocal cell.
    span = int(np.abs(P).sum(axis=1).max()) + 1  # |P k| < row sum of |P| for k in [0, 1)
    grid = np.array(np.meshgrid(*[np.arange(-span, span + 1)] * 3, indexing="ij")).reshape(3, -1).T
    k = (np.asarray(K_sc, float) + grid) @ P_inv.T
    k = np.round(k - np.floor(k + 1e-9), 10) % 1.0
    k = np.unique(k, axis=0)
    n_cells = int(round(abs(np.linalg.det(P))))
    if len(k) != n_cells:
        raise SupercellError(f"found {len(k)} folding k points, expected {n_cells}")
    return k
