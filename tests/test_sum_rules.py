"""Force constants with the invariances of a free bilayer (mlepi.vibrations.sum_rules), on the 3x3 spring-model
bilayer, whose isotropic springs break the rotational invariance: afterwards every condition holds, the
correction is a projection (a second one changes nothing), the crystal symmetry survives it, and the flexural
branch comes out as the invariances predict, ω_ZA ∝ q² near Γ, where the isotropic springs give ω ∝ q."""

from pathlib import Path

import numpy as np
import pytest
from phonopy.harmonic.force_constants import compact_fc_to_full_fc
from test_supercell_bands import phonon  # noqa: F401  (the 3x3 spring-model bilayer fixture)

from mlepi.vibrations import sum_rules, thermal
from mlepi.vibrations.phonons import read_phonopy


@pytest.fixture(scope="module")
def corrected(phonon):  # noqa: F811
    return sum_rules.enforce(phonon)


def _lowest_THz(ph, fc, qpoints):
    saved = ph.force_constants
    ph.force_constants = fc
    try:
        ph.run_qpoints(qpoints)
        return np.array(ph.qpoints.frequencies)
    finally:
        ph.force_constants = saved


def test_every_invariance_holds_after_the_correction(phonon, corrected):  # noqa: F811
    scale = np.abs(corrected).max()
    assert sum_rules.violation(phonon) > 1e-2 * scale  # isotropic springs are not rotationally invariant
    assert sum_rules.violation(phonon, corrected) < 1e-10 * scale
    np.testing.assert_allclose(corrected.sum(axis=1), 0.0, atol=1e-10 * scale)  # acoustic sum rule
    full = compact_fc_to_full_fc(phonon.primitive, corrected)
    np.testing.assert_allclose(full, full.transpose(1, 0, 3, 2), atol=1e-10 * scale)
    # a projection: the corrected constants are their own nearest invariant ones
    saved = phonon.force_constants
    phonon.force_constants = corrected
    try:
        np.testing.assert_allclose(sum_rules.enforce(phonon), corrected, atol=1e-10 * scale)
    finally:
        phonon.force_constants = saved


def test_the_crystal_symmetry_survives(phonon, corrected):  # noqa: F811
    """A q point and its images under the threefold axis have equal spectra."""
    reciprocal = np.linalg.inv(phonon.primitive.cell).T  # rows: b_i / 2π
    c, s = np.cos(2 * np.pi / 3), np.sin(2 * np.pi / 3)
    c3 = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    q = np.array([1 / 7, 1 / 11, 0])
    images = [q @ reciprocal @ np.linalg.matrix_power(c3, k).T @ np.linalg.inv(reciprocal) for k in range(3)]
    freqs = _lowest_THz(phonon, corrected, images)
    np.testing.assert_allclose(freqs[1], freqs[0], atol=1e-8)
    np.testing.assert_allclose(freqs[2], freqs[0], atol=1e-8)


def test_the_flexural_branch_is_quadratic_only_with_the_invariances(phonon, corrected):  # noqa: F811
    q = np.array([1 / 24, 1 / 12])[:, None] * [1, 0, 0]
    before = _lowest_THz(phonon, compact_fc_to_full_fc(phonon.primitive, sum_rules.compact(phonon)), q)[:, 0]
    after = _lowest_THz(phonon, corrected, q)[:, 0]
    assert after[1] / after[0] == pytest.approx(4.0, rel=0.05)  # ω ∝ q²
    assert before[1] / before[0] == pytest.approx(2.0, rel=0.05)  # ω ∝ q: the springs' tension
    path = np.linspace(0, 0.5, 25)[1:, None] * [1, 0, 0]
    assert _lowest_THz(phonon, corrected, path).min() > 0.0  # real along Γ-M from q = 1/48 on
    # (closer to Γ the layers' relative sliding, which these conditions leave, adds a small negative q² term:
    # -0.04 THz at q = 1/96 here; on the DFT force constants -0.006 THz at 1/192; see the module docstring)


# The 3x3 DFT force constants of the default config (GPAW LCAO dz(dzp), PBE+D3(BJ), the relaxed AB bilayer;
# phonopy's compact form): their interlayer shear at Γ is imaginary, -0.31 THz.
DFT_PHONONS = Path(__file__).parent / "data" / "blg_ab_3x3_phonopy_params.yaml"
THERMAL = {"imaginary_tolerance_THz": 0.3, "soft_modes": "freeze", "force_constants": "invariant"}


@pytest.fixture(scope="module")
def dft_phonon():
    return read_phonopy(DFT_PHONONS)


def test_the_shear_soft_in_the_dft_constants_stays_frozen(dft_phonon):
    """The invariances make the DFT shear real (+0.41 THz); the sampler still leaves it out, by its pattern,
    and samples every other mode of the invariant constants."""
    soft, freq = sum_rules.gamma_soft_modes(dft_phonon, 0.3)
    assert freq == pytest.approx([-0.312, -0.312], abs=2e-3) and soft.shape == (12, 2)
    in_plane = soft.reshape(4, 3, 2)
    assert np.abs(in_plane[:, 2]).max() < 1e-6  # a sliding of the layers: in-plane
    finite_difference = thermal.sampler_for(dft_phonon, {**THERMAL, "force_constants": "finite_difference"})[1]
    target, invariant = thermal.sampler_for(dft_phonon, THERMAL)
    assert finite_difference.frozen_THz == pytest.approx([-0.312, -0.312], abs=2e-3)
    assert invariant.frozen_THz == pytest.approx([0.407, 0.407], abs=2e-3)
    assert len(invariant.omega) == len(finite_difference.omega)
    masses = target.supercell.masses
    u = invariant.sample(600.0, 4, np.random.default_rng(0)).reshape(4, -1) * np.sqrt(np.repeat(masses, 3))
    # the frozen modes are the invariant constants' own, which the finite-difference pattern matches to 1e-9
    assert np.abs(u @ thermal.tile_gamma_modes(soft, target)).max() < 1e-4 * np.abs(u).max()
    with pytest.raises(thermal.UnstableModeError, match="soft_modes: freeze"):
        thermal.sampler_for(dft_phonon, {**THERMAL, "soft_modes": "error"})


@pytest.mark.parametrize("n", [3, 4])
def test_the_invariant_sampler_agrees_with_phonopys_thermal_displacements(dft_phonon, n):
    """The real-space sampler of the n x n supercell (invariant constants, Fourier-interpolated for n = 4) against
    phonopy's own thermal displacements of the same constants on the n x n mesh: the frozen shear at
    0.41 THz and every mode below the tolerance left out of both (phonopy's freq_min between the two)."""
    target, sampler = thermal.sampler_for(dft_phonon, THERMAL, None if n == 3 else n)
    assert len(target.supercell) == 4 * n * n
    invariant = sum_rules.invariant_phonon(dft_phonon)
    invariant.run_mesh([n, n, 1], with_eigenvectors=True, is_mesh_symmetry=False, is_gamma_center=True)
    others = np.sort(np.asarray(invariant.mesh.frequencies).ravel())
    assert not np.any((others > 0.3) & (others < 0.45) & ~np.isclose(others, 0.407, atol=2e-3))
    invariant.run_thermal_displacements(temperatures=[0.0, 300.0], freq_min=0.45)
    expected = np.asarray(invariant.thermal_displacements.thermal_displacements).reshape(2, -1, 3)  # Å²
    primitive = target.primitive
    atom = np.array([primitive.p2p_map[s] for s in primitive.s2p_map])
    for T, reference in zip((0.0, 300.0), expected):
        diagonal = np.diag(sampler.covariance(T)).reshape(-1, 3)
        per_atom = np.array([diagonal[atom == p].mean(axis=0) for p in range(len(reference))])
        np.testing.assert_allclose(per_atom, reference, rtol=1e-5)
