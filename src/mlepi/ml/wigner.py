"""Rotations (and reflections) of GPAW's real LCAO orbitals, and of H and S blocks, for covariance checks.

GPAW's orbitals are radial functions times its real spherical harmonics Y_lm (``gpaw.sphere.spherical_harmonics``;
l = 1 in the order y, z, x; l = 2 as xy, yz, 3z²−r², zx, x²−y²; docs/data.md). For each l they span a space
that rotations map onto itself: Y_l(R n) = D^l(R) Y_l(n) for every unit vector n, with D^l(R) orthogonal
(:func:`mlepi.ml.irreps.wigner_d`; the same holds for reflections, the harmonics being polynomials).

Rotating a whole structure, r -> R r (positions and cell), turns every orbital of the old structure into a
combination of the new structure's orbitals on the rotated atoms, so each block of H and S transforms as

    H'_ij(R_cell) = U_i H_ij(R_cell) U_j^T,   U_a = blockdiag(D^{l_1}(R), D^{l_2}(R), ...) over a's radial functions,

with the same integer cell shift (the cell rotates with the atoms). ``tests/test_wigner.py`` checks this against
GPAW itself on a rotated cell; a model is exactly rotation covariant when its blocks obey it too.
"""

from __future__ import annotations

import numpy as np

from mlepi.ml.irreps import random_rotation, wigner_d  # noqa: F401  (part of this module's interface)


def orbital_rotation(orbitals, rotation: np.ndarray) -> np.ndarray:
    """U for one element: block-diagonal D^l(R) over its radial functions ``[(label, l), ...]`` (basis order);
    ``rotation`` any orthogonal 3x3 matrix."""
    blocks = [wigner_d(int(l), rotation) for _, l in orbitals]
    size = sum(len(b) for b in blocks)
    u = np.zeros((size, size))
    start = 0
    for block in blocks:
        u[start:start + len(block), start:start + len(block)] = block
        start += len(block)
    return u


def rotate_blocks(blocks: np.ndarray, numbers, edge_index, basis: dict, rotation: np.ndarray) -> np.ndarray:
    """Blocks ``[E, n_max, n_max]`` (zero-padded, docs/data.md) of the structure rotated by ``rotation``."""
    n_max = blocks.shape[1]
    padded = {}
    for z in {int(z) for z in numbers}:
        u = orbital_rotation(basis["orbitals"][str(z)], rotation)
        padded[z] = np.zeros((n_max, n_max))
        padded[z][:len(u), :len(u)] = u
    u_i = np.stack([padded[int(numbers[i])] for i in edge_index[0]])
    u_j = np.stack([padded[int(numbers[j])] for j in edge_index[1]])
    return np.einsum("eab,ebc,edc->ead", u_i, blocks, u_j)


def rotated_atoms(atoms, rotation: np.ndarray):
    """A copy of ``atoms`` with positions and cell rotated by ``rotation`` (r -> R r); arrays and info kept."""
    rotated = atoms.copy()
    rotated.set_cell(np.asarray(atoms.cell) @ np.asarray(rotation).T, scale_atoms=False)
    rotated.positions = atoms.positions @ np.asarray(rotation).T
    return rotated
