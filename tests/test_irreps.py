"""``mlepi.ml.irreps``: real harmonics (GPAW's for l <= 2), their rotations and Clebsch-Gordan couplings."""

import numpy as np
import pytest

from mlepi.ml import irreps
from mlepi.ml.wigner import random_rotation


def sphere_quadrature(order: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors and weights integrating polynomials of degree < 2 ``order`` over the sphere exactly
    (Gauss-Legendre in cos θ, uniform in φ): a route independent of the closed-form moments of the module."""
    cos_t, w_t = np.polynomial.legendre.leggauss(order)
    phi = 2 * np.pi * np.arange(2 * order) / (2 * order)
    c, p = np.meshgrid(cos_t, phi, indexing="ij")
    s = np.sqrt(1 - c**2)
    unit = np.stack([s * np.cos(p), s * np.sin(p), c], axis=-1).reshape(-1, 3)
    weights = np.repeat(w_t, 2 * order) * (2 * np.pi / (2 * order))
    return unit, weights


def directions(n: int, seed: int) -> np.ndarray:
    unit = np.random.default_rng(seed).normal(size=(n, 3))
    return unit / np.linalg.norm(unit, axis=1, keepdims=True)


@pytest.mark.parametrize("l", [0, 1, 2])
def test_orbital_harmonics_are_gpaws(l):
    from gpaw.sphere.spherical_harmonics import Y

    unit = directions(20, l)
    gpaw = np.stack([Y(l * l + m, *unit.T) for m in range(2 * l + 1)], axis=-1)
    np.testing.assert_allclose(irreps.real_harmonics(l, unit), gpaw, atol=1e-14)


def test_harmonics_are_orthonormal_on_the_sphere_across_degrees():
    """∫ Y_a Y_b dΩ = δ_ab over all degrees 0..4 at once: orthonormal within a degree, and degree L orthogonal to
    L - 2, L - 4 (so the degree-L polynomials are the harmonic ones, not r² Y_{L-2})."""
    unit, weights = sphere_quadrature()
    y = np.concatenate([irreps.real_harmonics(L, unit) for L in range(irreps.L_MAX + 1)], axis=1)
    np.testing.assert_allclose((y * weights[:, None]).T @ y, np.eye(y.shape[1]), atol=1e-12)
    # and the torch evaluation of the readout uses the same functions
    exps, matrix = irreps.harmonics_matrix()
    mono = np.prod(unit[:, None, :] ** exps[None], axis=-1)
    np.testing.assert_allclose(mono @ matrix, y, atol=1e-13)


@pytest.mark.parametrize("L", range(irreps.L_MAX + 1))
def test_wigner_d_is_an_orthogonal_representation_of_o3(L):
    r1, r2 = random_rotation(1), random_rotation(2)
    d1, d2 = irreps.wigner_d(L, r1), irreps.wigner_d(L, r2)
    np.testing.assert_allclose(d1 @ d1.T, np.eye(2 * L + 1), atol=1e-12)
    np.testing.assert_allclose(irreps.wigner_d(L, r1 @ r2), d1 @ d2, atol=1e-12)
    np.testing.assert_allclose(irreps.wigner_d(L, -np.eye(3)), (-1) ** L * np.eye(2 * L + 1), atol=1e-12)
    n = directions(9, 7)  # the defining property at directions the solve never saw
    np.testing.assert_allclose(irreps.real_harmonics(L, n @ r1.T), irreps.real_harmonics(L, n) @ d1.T, atol=1e-12)
    with pytest.raises(ValueError, match="orthogonal"):
        irreps.wigner_d(L, 2 * np.eye(3))


@pytest.mark.parametrize("l1, l2", [(0, 0), (0, 2), (1, 1), (1, 2), (2, 2), (1, 3)])
def test_clebsch_gordan_intertwines_rotations_and_is_an_isometry(l1, l2):
    """(D^l1 ⊗ D^l2) C = C D^L for rotations; for the inversion, the sign (−1)^(l1+l2+L): couplings with l1 + l2 + L
    odd turn polar into axial quantities (mlepi.ml.block_readout's parity rule)."""
    rotation = random_rotation(5)
    for L in range(abs(l1 - l2), l1 + l2 + 1):
        c = irreps.clebsch_gordan(l1, l2, L)
        np.testing.assert_allclose(np.einsum("abm,abn->mn", c, c), np.eye(2 * L + 1), atol=1e-12)
        for r, sign in ((rotation, 1), (-rotation, (-1) ** (l1 + l2 + L))):
            d1, d2, d = (irreps.wigner_d(k, r) for k in (l1, l2, L))
            np.testing.assert_allclose(np.einsum("ia,jb,abm->ijm", d1, d2, c), sign * np.einsum("ijm,mn->ijn", c, d),
                                       atol=1e-12)
    with pytest.raises(ValueError, match="no coupling"):
        irreps.clebsch_gordan(l1, l2, l1 + l2 + 1)
