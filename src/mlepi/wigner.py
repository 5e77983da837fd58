"""Rotations of GPAW's real LCAO orbitals, and of H and S blocks, for rotation-covariance checks.

GPAW's orbitals are radial functions times its real spherical harmonics Y_lm (``gpaw.sphere.spherical_harmonics``;
l = 1 in the order y, z, x; l = 2 as xy, yz, 3z²−r², zx, x²−y²; docs/data.md). For each l they span a space
that rotations map onto itself: Y_l(R n) = D^l(R) Y_l(n) for every unit vector n, with D^l(R) orthogonal.

Rotating a whole structure, r -> R r (positions and cell), turns every orbital of the old structure into a
combination of the new structure's orbitals on the rotated atoms, so each block of H and S transforms as

    H'_ij(R_cell) = U_i H_ij(R_cell) U_j^T,   U_a = blockdiag(D^{l_1}(R), D^{l_2}(R), ...) over a's radial functions,

with the same integer cell shift (the cell rotates with the atoms). ``tests/test_wigner.py`` checks this against
GPAW itself on a rotated cell; a model is exactly rotation covariant when its blocks obey it too.
"""

from __future__ import annotations

import numpy as np


def real_harmonics(l: int, unit: np.ndarray) -> np.ndarray:
    """GPAW's real spherical harmonics of degree ``l`` at unit vectors ``unit [n, 3]``, ``[n, 2l+1]``."""
    from gpaw.sphere.spherical_harmonics import Y

    x, y, z = np.asarray(unit, dtype=float).T
    return np.stack([Y(l * l + m, x, y, z) for m in range(2 * l + 1)], axis=-1)


def wigner_d(l: int, rotation: np.ndarray) -> np.ndarray:
    """D^l(R), ``[2l+1, 2l+1]``: Y_l(R n) = D^l(R) Y_l(n) in GPAW's real harmonics.

    Solved from Y_l at 4(2l+1) fixed generic directions (least squares, exact: the harmonics of degree l are
    closed under rotations, so the residual is rounding only).
    """
    rotation = np.asarray(rotation, dtype=float)
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-10) or np.linalg.det(rotation) < 0:
        raise ValueError("rotation must be a proper orthogonal 3x3 matrix (det +1)")
    directions = np.random.default_rng(12345).normal(size=(4 * (2 * l + 1), 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    before, after = real_harmonics(l, directions), real_harmonics(l, directions @ rotation.T)
    d_transposed, *_ = np.linalg.lstsq(before, after, rcond=None)  # before @ D^T = after
    return d_transposed.T


def orbital_rotation(orbitals, rotation: np.ndarray) -> np.ndarray:
    """U for one element: block-diagonal D^l(R) over its radial functions ``[(label, l), ...]`` (basis order)."""
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


def random_rotation(seed: int) -> np.ndarray:
    """A seeded rotation, uniform on SO(3) (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q
