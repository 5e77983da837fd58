"""Unfolding of supercell LCAO states onto the primitive zone (mlepi.electrons.unfold), on a p_z (and s + p_z)
Slater–Koster bilayer with a non-trivial overlap: the supercell is built from the same distance rule as
the primitive cell, so the primitive bands are an independent reference."""

import numpy as np
import pytest
import scipy.linalg

from mlepi.electrons import tb, unfold
from mlepi.geometry import supercell

import bilayer_tb as bt

SQRT3 = np.array([[2, 1, 0], [-1, 1, 0], [0, 0, 1]])  # √3 × √3 R30°, N = 3
THREE = np.diag([3, 3, 1])  # N = 9; K folds onto the supercell Γ
K_RED = np.array([1 / 3, 1 / 3, 0.0])


@pytest.fixture(scope="module")
def prim():
    return bt.bilayer_primitive()


def _kpoints(seed=0, n_random=4):
    rng = np.random.default_rng(seed)
    fixed = [K_RED, [0, 0, 0], [0.5, 0, 0], K_RED + [0.01, -0.02, 0]]
    return np.concatenate([fixed, np.c_[rng.random((n_random, 2)), np.zeros(n_random)]])


@pytest.mark.parametrize("P", [THREE, SQRT3])
def test_map_supercell_recovers_primitive_images(prim, P):
    sc = bt.supercell(prim, P, seed=3, wrap_some=True)  # shuffled order, atoms wrapped (also across vacuum)
    m = supercell.map_supercell(prim, sc)
    assert m.n_cells == round(abs(np.linalg.det(P)))
    expected = prim.positions[m.primitive_index] + m.translation @ prim.cell.array
    np.testing.assert_allclose(sc.positions, expected, atol=1e-9)
    assert np.bincount(m.primitive_index).tolist() == [m.n_cells] * 4
    np.testing.assert_array_equal(m.supercell_matrix, P)


def test_map_supercell_rejects_foreign_supercell(prim):
    sc = bt.supercell(prim, THREE)
    with pytest.raises(supercell.SupercellError, match="matches 0 primitive atoms"):
        supercell.map_supercell(prim, bt.displaced(sc, 0.05, 0.05, seed=0))
    with pytest.raises(supercell.SupercellError, match="not an integer multiple"):
        supercell.map_supercell(bt.bilayer_primitive(a=2.5), sc)


def test_supercell_kpoint_phases_and_folding():
    rng = np.random.default_rng(1)
    for P in (THREE, SQRT3):
        k = rng.random(3)
        K = supercell.supercell_kpoint(k, P)
        n = rng.integers(-5, 6, size=(10, 3))  # supercell lattice vectors in supercell coordinates
        # exp(ik·L) for L = n @ P @ cell equals exp(iK·L) written with supercell reduced coordinates.
        np.testing.assert_allclose(np.exp(2j * np.pi * (n @ P) @ k), np.exp(2j * np.pi * n @ K), atol=1e-12)
        folded = supercell.folding_kpoints(K, P)
        assert len(folded) == round(abs(np.linalg.det(P)))
        np.testing.assert_allclose(supercell.supercell_kpoint(folded, P), np.tile(K, (len(folded), 1)), atol=1e-9)
    np.testing.assert_allclose(supercell.supercell_kpoint(K_RED, THREE), 0.0, atol=1e-12)


@pytest.mark.parametrize("P, with_s", [(THREE, False), (SQRT3, True)])
def test_unfolding_reproduces_primitive_bands(prim, P, with_s):
    """DESIGN §7: undisplaced supercell → primitive bands within 1e-6 eV, weights 0 or 1."""
    basis = bt.BASIS_SPZ if with_s else bt.BASIS_PZ
    sc = bt.supercell(prim, P, seed=5, wrap_some=True)
    sc_frame, prim_frame = bt.tb_frame(sc, "sc", with_s), bt.tb_frame(prim, "prim", with_s)
    assert np.abs(prim_frame.S[np.any(prim_frame.edge_index[0] != prim_frame.edge_index[1])]).max() > 0.05
    k = _kpoints()
    energies, weights = unfold.unfold(sc_frame, basis, k, supercell.map_supercell(prim, sc))
    reference = tb.eigenvalues(prim_frame, basis, k)
    np.testing.assert_allclose(weights, np.rint(weights), atol=1e-6)
    for e, w, e_prim in zip(energies, weights, reference):
        assert (w > 0.5).sum() == len(e_prim)
        np.testing.assert_allclose(e[w > 0.5], e_prim, atol=1e-6)


@pytest.mark.parametrize("sigma", [0.0, 0.05])
def test_weights_sum_to_one_over_folding_kpoints(prim, sigma):
    sc = bt.supercell(prim, SQRT3, seed=2)
    frame = bt.tb_frame(bt.displaced(sc, sigma, sigma, seed=4), "sample", with_s=True)
    m = supercell.map_supercell(prim, sc)
    folded = supercell.folding_kpoints(supercell.supercell_kpoint([0.21, 0.37, 0.0], SQRT3), SQRT3)
    energies, weights = unfold.unfold(frame, bt.BASIS_SPZ, folded, m, resolve_degeneracies=False)
    np.testing.assert_allclose(energies, np.tile(energies[0], (len(folded), 1)), atol=1e-9)
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, atol=1e-10)


def test_window_gives_the_states_of_the_full_solution_inside_it(prim):
    """unfold(window=...) solves for the states in the window alone (MRRR subset): the same energies and
    weights as the full solution's states there, rows padded with zero weight far outside every window."""
    sc = bt.supercell(prim, THREE, seed=2)
    frame = bt.tb_frame(bt.displaced(sc, 0.05, 0.08, seed=6), "sample", with_s=True)
    m = supercell.map_supercell(prim, sc)
    k = _kpoints(n_random=3)
    e_full, w_full = unfold.unfold(frame, bt.BASIS_SPZ, k, m)
    lo, hi = np.quantile(e_full, [0.4, 0.6])  # a window that holds a different number of states at each k
    e_win, w_win = unfold.unfold(frame, bt.BASIS_SPZ, k, m, window=(lo, hi))
    inside = (e_full > lo) & (e_full <= hi)
    assert len(set(inside.sum(axis=1))) > 1 and e_win.shape[1] == inside.sum(axis=1).max() < e_full.shape[1]
    for e, w, ef, wf, keep in zip(e_win, w_win, e_full, w_full, inside):
        n = keep.sum()
        np.testing.assert_allclose(e[:n], ef[keep], atol=1e-10)
        np.testing.assert_allclose(w[:n], wf[keep], atol=1e-10)
        assert np.all(e[n:] == unfold.DROPPED_ENERGY_EV) and np.all(w[n:] == 0.0)


def test_wrapped_displaced_atom_unfolds_the_same(prim):
    """A writer may wrap a displaced atom by a supercell vector: new R labels, same physics."""
    sc = bt.supercell(prim, THREE, seed=1)
    sample = bt.displaced(sc, 0.03, 0.06, seed=7)
    wrapped = sample.copy()
    pos = wrapped.get_positions()
    pos[[3, 8]] += sc.cell[0] - sc.cell[1]
    wrapped.set_positions(pos)
    m = supercell.map_supercell(prim, sc)
    k = _kpoints(n_random=2)
    e1, w1 = unfold.unfold(bt.tb_frame(sample, "a"), bt.BASIS_PZ, k, m)
    e2, w2 = unfold.unfold(bt.tb_frame(wrapped, "b"), bt.BASIS_PZ, k, m)
    np.testing.assert_allclose(e1, e2, atol=1e-9)
    np.testing.assert_allclose(w1, w2, atol=1e-9)


def test_frame_atoms_must_match_reference(prim):
    sc = bt.supercell(prim, THREE)
    m = supercell.map_supercell(prim, sc)
    shuffled = bt.tb_frame(bt.supercell(prim, THREE, seed=9), "other order")
    with pytest.raises(unfold.UnfoldError, match="from its reference site"):
        unfold.unfold(shuffled, bt.BASIS_PZ, [K_RED], m)


def test_overlap_enters_the_weights_of_displaced_cells(prim):
    """Undisplaced cells unfold to 0/1 with any normalisation (their states are Bloch states); in a
    displaced cell the Löwdin weights (c̃ = S^{1/2} c) differ from naive ones (c / |c|), so these tests do
    exercise the non-orthogonal path. Both obey the sum rule over the folding k."""
    sc = bt.supercell(prim, SQRT3)
    frame = bt.tb_frame(bt.displaced(sc, 0.05, 0.1, seed=3), "sample")
    m = supercell.map_supercell(prim, sc)
    K = supercell.supercell_kpoint([0.2, 0.1, 0.0], SQRT3)
    H, S = tb.bloch_sum(frame, bt.BASIS_PZ, K[None])
    _, c = scipy.linalg.eigh(H[0], S[0])
    c /= np.linalg.norm(c, axis=0)
    _, c_tilde = unfold.lowdin_eigh(H[0], S[0])
    atom, prim_orb, n_prim = unfold.orbital_maps(m, bt.BASIS_PZ)
    folded = supercell.folding_kpoints(K, SQRT3)

    def weights(coefficients):
        return np.array([np.sum(np.abs(unfold.bloch_projector(k, m.translation, atom, prim_orb, n_prim, m.n_cells)
                                       @ coefficients) ** 2, axis=0) for k in folded])

    naive, lowdin = weights(c), weights(c_tilde)
    np.testing.assert_allclose(naive.sum(axis=0), 1.0, atol=1e-10)
    np.testing.assert_allclose(lowdin.sum(axis=0), 1.0, atol=1e-10)
    assert np.abs(naive - lowdin).max() > 1e-3
    # The projection the unfolding asks lowdin_eigh for is the projection of its coefficients.
    F = unfold.bloch_projector(folded[1], m.translation, atom, prim_orb, n_prim, m.n_cells)
    for cutoff in (0.0, np.linalg.eigvalsh(S[0])[1]):  # exact, and with a direction of S(k) dropped
        e, amp = unfold.lowdin_eigh(H[0], S[0], overlap_min=cutoff, project=F)
        e_full, c_full = unfold.lowdin_eigh(H[0], S[0], overlap_min=cutoff)
        np.testing.assert_array_equal(e, e_full)
        np.testing.assert_allclose(amp, F @ c_full, atol=1e-12)


@pytest.mark.parametrize("kind", ["lorentzian", "gaussian"])
def test_spectral_function_integrates_to_weights(kind):
    energies = np.array([[-0.3, 0.0, 0.4]])
    weights = np.array([[1.0, 0.25, 0.5]])
    grid = np.linspace(-40, 40, 400001) if kind == "lorentzian" else np.linspace(-2, 2, 4001)
    A = unfold.spectral_function(energies, weights, grid, 0.02, kind)
    integral = np.trapezoid(A[0], grid)
    np.testing.assert_allclose(integral, weights.sum(), rtol=1e-3)
    assert abs(grid[np.argmax(A[0])] + 0.3) < 1e-3


def test_overlap_cutoff_removes_a_spurious_state_from_a_near_null_direction():
    """An H error along a near-null direction of S moves a generalized eigenvalue by error / s_min (a spurious
    state anywhere, e.g. near E_F); canonical orthogonalisation takes that direction out, and nothing else."""
    from mlepi.electrons.unfold import DROPPED_ENERGY_EV, lowdin_eigh

    rng = np.random.default_rng(0)
    n = 12
    U, _ = np.linalg.qr(rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)))
    s = np.concatenate([[4e-5], rng.uniform(0.3, 2.0, n - 1)])  # one near-linear dependency, as in dz(dzp)
    S = (U * s) @ U.conj().T
    S_half = (U * np.sqrt(s)) @ U.conj().T
    A = rng.standard_normal((n, n))
    H = S_half @ (0.5 * (A + A.T)) @ S_half  # generalized eigenvalues those of a few-eV matrix
    null = U[:, [0]]
    H_bad = H + 1e-3 * null @ null.conj().T

    exact, _ = lowdin_eigh(H, S)
    bad, _ = lowdin_eigh(H_bad, S)
    assert np.abs(bad).max() > 10.0  # 1e-3 eV along the null direction: a state tens of eV away
    e_good, c_good = lowdin_eigh(H, S, overlap_min=1e-3)
    e_bad, c_bad = lowdin_eigh(H_bad, S, overlap_min=1e-3)
    np.testing.assert_allclose(e_bad[:-1], e_good[:-1], atol=1e-10)  # the error had no effect
    assert e_bad[-1] == DROPPED_ENERGY_EV and np.all(e_bad[:-1] < 100)
    np.testing.assert_allclose(c_bad.conj().T @ c_bad, np.eye(n), atol=1e-10)  # still a unitary c̃
    # A cutoff below the smallest eigenvalue of S is the exact solution.
    np.testing.assert_allclose(lowdin_eigh(H, S, overlap_min=1e-5)[0], exact, atol=1e-10)
