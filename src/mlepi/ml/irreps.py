"""Real spherical harmonics up to degree 4 and their Clebsch-Gordan couplings, in GPAW's orbital convention.

What HedgeNet's equivariant block readout (:mod:`mlepi.ml.block_readout`) is built from, with numpy and torch only (no
GPAW at run time: the GPU machines cannot install it).

- **Harmonics.** Y_L(n) for L = 0..4 as homogeneous polynomials of the unit vector n, orthonormal on the sphere
  (∫ Y_a Y_b dΩ = δ_ab). For L <= 2 they are GPAW's (``gpaw.sphere.spherical_harmonics``: l = 1 in the order
  y, z, x; l = 2 as xy, yz, 3z²−r², zx, x²−y²), because the orbitals of an H block use them; ``tests/test_irreps.py``
  checks them against GPAW. For L = 3, 4 (only inside couplings, never an orbital) any orthonormal basis does:
  the harmonic polynomials of degree L (the kernel of the Laplacian, found in exact rational arithmetic, so
  the same on every machine) made orthonormal by Löwdin's symmetric orthonormalisation (unique, no sign choice).
- **Rotations.** D^L(R) with Y_L(R n) = D^L(R) Y_L(n), for proper and improper orthogonal R (polynomials are
  closed under O(3)); D^L(−1) = (−1)^L.
- **Couplings.** C^{l1 l2 L} [2l1+1, 2l2+1, 2L+1] with D^{l1} ⊗ D^{l2} C = C D^L for every rotation: the one
  intertwiner (up to sign) of each triangle (l1, l2, L), normalised as an isometry (Σ_ab C_abM C_abM' = δ_MM'),
  its first clearly non-zero element positive. A block B_ab = Σ_M C_abM x_M of an l1 and an l2 orbital shell
  rotates as D^{l1} B D^{l2}ᵀ exactly when x rotates as Y_L.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache
from itertools import product
from math import gamma, pi, sqrt

import numpy as np

L_MAX = 4  # d-d blocks couple to L <= 4; f orbitals (L up to 6) are refused by the readout

# GPAW's real harmonics for L <= 2: {exponents (a, b, c) of x^a y^b z^c: coefficient} per m.
_GPAW = {
    0: [{(0, 0, 0): 1 / (2 * sqrt(pi))}],
    1: [{(0, 1, 0): sqrt(3 / (4 * pi))}, {(0, 0, 1): sqrt(3 / (4 * pi))}, {(1, 0, 0): sqrt(3 / (4 * pi))}],
    2: [{(1, 1, 0): sqrt(15 / (4 * pi))}, {(0, 1, 1): sqrt(15 / (4 * pi))},
        {(0, 0, 2): 2 * sqrt(5 / (16 * pi)), (2, 0, 0): -sqrt(5 / (16 * pi)), (0, 2, 0): -sqrt(5 / (16 * pi))},
        {(1, 0, 1): sqrt(15 / (4 * pi))}, {(2, 0, 0): sqrt(15 / (16 * pi)), (0, 2, 0): -sqrt(15 / (16 * pi))}],
}


def monomials(degree: int) -> list[tuple[int, int, int]]:
    """Exponents (a, b, c) of the monomials x^a y^b z^c of total degree exactly ``degree``, in a fixed order."""
    return [e for e in product(range(degree, -1, -1), repeat=3) if sum(e) == degree]


def _sphere_moment(a: int, b: int, c: int) -> float:
    """∫ x^a y^b z^c dΩ over the unit sphere."""
    if a % 2 or b % 2 or c % 2:
        return 0.0
    return 2 * gamma((a + 1) / 2) * gamma((b + 1) / 2) * gamma((c + 1) / 2) / gamma((a + b + c + 3) / 2)


def _nullspace(rows: list[list[Fraction]], n_cols: int) -> list[list[Fraction]]:
    """Basis of {v: A v = 0} by exact row reduction (one vector per free column, in column order)."""
    a = [list(r) for r in rows]
    pivots, r = [], 0
    for col in range(n_cols):
        pivot = next((k for k in range(r, len(a)) if a[k][col] != 0), None)
        if pivot is None:
            continue
        a[r], a[pivot] = a[pivot], a[r]
        a[r] = [v / a[r][col] for v in a[r]]
        for k in range(len(a)):
            if k != r and a[k][col] != 0:
                a[k] = [x - a[k][col] * y for x, y in zip(a[k], a[r])]
        pivots.append(col)
        r += 1
    basis = []
    for free in (c for c in range(n_cols) if c not in pivots):
        v = [Fraction(0)] * n_cols
        v[free] = Fraction(1)
        for row, col in enumerate(pivots):
            v[col] = -a[row][free]
        basis.append(v)
    return basis


@cache
def harmonic_coefficients(L: int) -> np.ndarray:
    """Y_L as coefficients of :func:`monomials` (L), ``[2L+1, n_monomials]`` (see the module docstring)."""
    if not 0 <= L <= L_MAX:
        raise ValueError(f"harmonic degree {L} outside 0..{L_MAX}")
    exps = monomials(L)
    if L in _GPAW:
        return np.array([[y.get(e, 0.0) for e in exps] for y in _GPAW[L]])
    lower = {e: k for k, e in enumerate(monomials(L - 2))}
    laplacian = [[Fraction(0)] * len(exps) for _ in lower]  # Δ maps degree L onto degree L - 2
    for col, e in enumerate(exps):
        for axis in range(3):
            if e[axis] >= 2:
                target = tuple(v - 2 * (k == axis) for k, v in enumerate(e))
                laplacian[lower[target]][col] += e[axis] * (e[axis] - 1)
    kernel = np.array(_nullspace(laplacian, len(exps)), dtype=float)  # [2L+1, n_monomials]
    gram = np.array([[_sphere_moment(*np.add(p, q)) for q in exps] for p in exps])
    w, v = np.linalg.eigh(kernel @ gram @ kernel.T)
    return (v / np.sqrt(w)) @ v.T @ kernel  # S^(-1/2) K: orthonormal on the sphere


@cache
def harmonics_matrix(l_max: int = L_MAX) -> tuple[np.ndarray, np.ndarray]:
    """(exponents [n_mono, 3] of all monomials of degree <= l_max, T [n_mono, (l_max+1)²]) with Y(n) = mono(n) T;
    column L² + m of Y is Y_Lm."""
    exps = [e for L in range(l_max + 1) for e in monomials(L)]
    t = np.zeros((len(exps), (l_max + 1) ** 2))
    row = 0
    for L in range(l_max + 1):
        coeffs = harmonic_coefficients(L)
        t[row:row + coeffs.shape[1], L * L:(L + 1) ** 2] = coeffs.T
        row += coeffs.shape[1]
    return np.array(exps), t


def real_harmonics(L: int, unit: np.ndarray) -> np.ndarray:
    """Y_L at the unit vectors ``unit`` [n, 3], ``[n, 2L+1]`` (numpy)."""
    unit = np.asarray(unit, dtype=float)
    mono = np.stack([np.prod(unit ** np.array(e), axis=-1) for e in monomials(L)], axis=-1)
    return mono @ harmonic_coefficients(L).T


def wigner_d(L: int, rotation: np.ndarray) -> np.ndarray:
    """D^L(R), ``[2L+1, 2L+1]``, orthogonal: Y_L(R n) = D^L(R) Y_L(n), for any orthogonal 3x3 R.

    Solved from Y_L at 4(2L+1) fixed generic directions (least squares, exact up to rounding: the harmonics of
    degree L are closed under O(3)).
    """
    rotation = np.asarray(rotation, dtype=float)
    if rotation.shape != (3, 3) or not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-10):
        raise ValueError("rotation must be an orthogonal 3x3 matrix")
    directions = np.random.default_rng(12345).normal(size=(4 * (2 * L + 1), 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    before, after = real_harmonics(L, directions), real_harmonics(L, directions @ rotation.T)
    d_transposed, *_ = np.linalg.lstsq(before, after, rcond=None)  # before @ D^T = after
    return d_transposed.T


def random_rotation(seed: int) -> np.ndarray:
    """A seeded rotation, uniform on SO(3) (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@cache
def clebsch_gordan(l1: int, l2: int, L: int) -> np.ndarray:
    """C^{l1 l2 L}, ``[2l1+1, 2l2+1, 2L+1]`` (see the module docstring); raises unless |l1−l2| <= L <= l1+l2."""
    if not abs(l1 - l2) <= L <= l1 + l2 or max(l1, l2, L) > L_MAX:
        raise ValueError(f"no coupling of degrees {l1} and {l2} to {L}")
    dims = (2 * l1 + 1, 2 * l2 + 1, 2 * L + 1)
    # C_abM as a vector c: D1 ⊗ D2 ⊗ D_L c = c for each fixed rotation (D_L orthogonal, so C D_L = D1 ⊗ D2 C).
    # Two generic rotations generate a dense subgroup of SO(3): an intertwiner of both is one of every rotation.
    eqs = [np.kron(np.kron(wigner_d(l1, q), wigner_d(l2, q)), wigner_d(L, q)) - np.eye(int(np.prod(dims)))
           for q in (random_rotation(1), random_rotation(2))]
    _, sigma, vt = np.linalg.svd(np.concatenate(eqs))
    if sigma[-1] > 1e-8 or (len(sigma) > 1 and sigma[-2] < 1e-6):  # exactly one intertwiner (Schur)
        raise RuntimeError(f"coupling ({l1}, {l2}) -> {L}: intertwiner space is not one-dimensional")
    c = vt[-1]
    c = c * np.sign(c[np.argmax(np.abs(c) > 1e-3 * np.abs(c).max())])
    return (c * sqrt(2 * L + 1) / np.linalg.norm(c)).reshape(dims)
