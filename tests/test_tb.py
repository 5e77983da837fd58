"""Bloch sums and the generalized eigenproblem (mlepi.electrons.tb): the sparse shift-invert route against dense."""

import numpy as np
import pytest

from mlepi.electrons import tb

from bilayer_tb import BASIS_SPZ, bilayer_primitive, displaced, supercell, tb_frame


@pytest.mark.parametrize("k", [[0.0, 0.0, 0.0], [1 / 3, 1 / 3, 0.0], [0.13, 0.29, 0.0]])
def test_sparse_shift_invert_matches_dense_near_sigma(k):
    """The states nearest E_F from one sparse LU + Lanczos equal those of dense diagonalisation, with
    S-orthonormal eigenvectors, for a displaced supercell with two orbitals per atom and a non-trivial S."""
    atoms = displaced(supercell(bilayer_primitive(), np.diag([3, 3, 1])), 0.05, 0.03, seed=4)
    frame = tb_frame(atoms, "sample", with_s=True)
    H_k, S_k = tb.bloch_sum(frame, BASIS_SPZ, [k])
    H_sp, S_sp = tb.bloch_sum_sparse(frame, BASIS_SPZ, k)
    np.testing.assert_allclose(H_sp.toarray(), H_k[0], atol=1e-13)
    np.testing.assert_allclose(S_sp.toarray(), S_k[0], atol=1e-13)

    dense = tb.eigh_generalized(H_k, S_k)[0]
    sigma, n = 0.05, 8
    values, vectors = tb.eigenvalues_near(frame, BASIS_SPZ, k, sigma, n, eigvecs=True)
    expected = np.sort(dense[np.argsort(np.abs(dense - sigma))[:n]])
    np.testing.assert_allclose(values, expected, atol=1e-10)
    np.testing.assert_allclose(vectors.conj().T @ S_k[0] @ vectors, np.eye(n), atol=1e-10)
    np.testing.assert_allclose(H_k[0] @ vectors, S_k[0] @ vectors * values, atol=1e-10)
