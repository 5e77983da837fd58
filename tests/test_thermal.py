"""Thermal sampler: statistics against analytic covariances, limits in T, and phonopy's own sampler.

The force constants are an isotropic spring network on the real AB bilayer supercell geometry (stiff
intra-layer, soft inter-layer springs). It is translation invariant and stable by construction, so every
quantity has an independent closed form, and phonopy accepts it like DFT force constants.
"""

import numpy as np
import pytest
from ase import units
from ase.neighborlist import neighbor_list
from phonopy import Phonopy
from scipy import constants

from mlepi.geometry.layers import build_bilayer
from mlepi.vibrations.displace import to_phonopy
from mlepi.vibrations.thermal import (
    HBAR,
    HarmonicSampler,
    UnstableModeError,
    canonical_modes,
    omega_to_THz,
    sample_rng,
)


def spring_force_constants(atoms, k_intra=20.0, k_inter=1.0, cutoff=3.6):
    """Isotropic springs (eV/A^2) between neighbours; Phi_ii = -sum_j Phi_ij (acoustic sum rule)."""
    n = len(atoms)
    fc = np.zeros((n, n, 3, 3))
    layer = atoms.arrays["layer"]
    for i, j in zip(*neighbor_list("ij", atoms, cutoff)):
        k = k_intra if layer[i] == layer[j] else k_inter
        fc[i, j] -= k * np.eye(3)
        fc[i, i] += k * np.eye(3)
    return fc


@pytest.fixture(scope="module")
def supercell():
    return build_bilayer("AB").repeat((3, 3, 1))


@pytest.fixture(scope="module")
def sampler(supercell):
    return HarmonicSampler(spring_force_constants(supercell), supercell.get_masses())


def test_sample_covariance_matches_analytic(sampler):
    n = 4000
    u = sampler.sample(300.0, n, np.random.default_rng(1), antithetic=True).reshape(n, -1)
    sample_cov = u.T @ u / n  # mean is zero by construction (antithetic pairs)
    cov = sampler.covariance(300.0)
    # Antithetic partners have the same u u^T: n/2 independent estimates. Error of a sample
    # covariance element: sqrt((C_ii C_jj + C_ij^2) / n_eff).
    n_eff = n / 2
    d = np.diag(cov)
    sigma = np.sqrt((np.outer(d, d) + cov ** 2) / n_eff)
    z = np.abs(sample_cov - cov) / sigma
    assert z.max() < 5.5
    # The total mean-square displacement: var(tr S) = 2 tr(C^2) / n_eff for Gaussian samples.
    assert abs(np.trace(sample_cov) - np.trace(cov)) < 4 * np.sqrt(2 * np.trace(cov @ cov) / n_eff)


def test_zero_temperature_is_zero_point_motion(sampler):
    zero_point = sampler.covariance(0.0)
    mw = sampler.vectors * np.repeat(sampler.masses ** -0.5, 3)[:, None]
    assert np.allclose(zero_point, (mw * HBAR / (2 * sampler.omega)) @ mw.T)
    assert np.allclose(sampler.covariance(1e-3), zero_point)
    assert np.all(np.trace(sampler.covariance(50.0)) > np.trace(zero_point))


def test_high_temperature_is_classical(sampler, supercell):
    """At high T the covariance tends to k_B T Phi^+ (pseudo-inverse, translations projected out):
    an independent route through the force constants alone (all masses equal here)."""
    fc = spring_force_constants(supercell)
    n = len(supercell)
    phi = fc.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
    phi_pinv = np.linalg.pinv(phi, rcond=1e-10, hermitian=True)
    for T in (20000.0, 40000.0):
        cov = sampler.covariance(T)
        assert np.linalg.norm(cov / (units.kB * T) - phi_pinv) / np.linalg.norm(phi_pinv) < 0.01
    msd = [np.trace(sampler.covariance(T)) for T in (10000.0, 20000.0)]
    assert msd[1] / msd[0] == pytest.approx(2.0, rel=0.01)


def test_agrees_with_phonopy_random_displacements(supercell, sampler):
    """phonopy's own thermal sampler on the same force constants gives the same mean-square displacements."""
    unit = build_bilayer("AB")
    phonon = Phonopy(to_phonopy(unit), supercell_matrix=np.diag([3, 3, 1]), primitive_matrix="P")
    fc = spring_force_constants(supercell)
    # phonopy orders supercell atoms its own way: map ours onto its order by position.
    frac_ours = supercell.get_scaled_positions()
    frac_ph = phonon.supercell.scaled_positions
    diff = frac_ph[:, None, :] - frac_ours[None, :, :]
    order = np.argmin(np.linalg.norm(diff - np.round(diff), axis=2), axis=1)
    phonon.force_constants = fc[np.ix_(order, order)]
    T, n = 300.0, 3000
    phonon.generate_displacements(number_of_snapshots=n, temperature=T, random_seed=7)
    u_ph = phonon.displacements  # [n, n_atoms, 3]
    msd_ph = np.mean(u_ph ** 2, axis=(0, 1))  # per Cartesian direction
    msd_ours = np.diag(sampler.covariance(T)).reshape(-1, 3).mean(axis=0)
    assert msd_ph == pytest.approx(msd_ours, rel=0.05)


def test_zero_point_amplitude_of_a_carbon_mode():
    """One C atom on an isotropic spring tuned to 48 THz: RMS zero-point amplitude ~0.03 A (DESIGN sec. 1)."""
    mass = 12.011
    omega_si = 2 * np.pi * 48e12
    k = mass * (omega_si / units.s) ** 2  # eV/A^2, with omega in ASE units
    fc = np.zeros((2, 2, 3, 3))  # a spring to a heavy partner, so the uniform translation stays a mode
    fc[0, 0] = fc[1, 1] = k * np.eye(3)
    fc[0, 1] = fc[1, 0] = -k * np.eye(3)
    sampler = HarmonicSampler(fc, [mass, 1e9])  # heavy partner: the light atom moves at omega
    expected = np.sqrt(constants.hbar / (2 * mass * constants.atomic_mass * omega_si)) * 1e10
    rms = np.sqrt(np.diag(sampler.covariance(0.0))[:3].mean())
    assert rms == pytest.approx(expected, rel=1e-3)
    assert expected == pytest.approx(0.03, abs=0.003)
    assert omega_to_THz(sampler.omega).max() == pytest.approx(48.0, rel=1e-3)


def test_imaginary_mode_is_an_error(supercell):
    fc = spring_force_constants(supercell, k_inter=-0.5)
    with pytest.raises(UnstableModeError, match="imaginary"):
        HarmonicSampler(fc, supercell.get_masses())


def test_antithetic_pairs_and_seeds(sampler):
    a = sampler.sample(300.0, 6, sample_rng(5, "train", 300.0))
    b = sampler.sample(300.0, 6, sample_rng(5, "train", 300.0))
    c = sampler.sample(300.0, 6, sample_rng(5, "infer", 300.0))
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.array_equal(a[1::2], -a[0::2])
    with pytest.raises(ValueError, match="even"):
        sampler.sample(300.0, 3, np.random.default_rng(0))


def test_soft_modes_can_be_frozen_explicitly(supercell):
    """freeze: the soft modes are left out (zero amplitude along them), the others sampled as before."""
    fc = spring_force_constants(supercell, k_inter=-0.05)
    masses = supercell.get_masses()
    with pytest.raises(UnstableModeError, match="soft_modes: freeze"):
        HarmonicSampler(fc, masses)
    frozen = HarmonicSampler(fc, masses, soft_modes="freeze")
    assert frozen.frozen_THz and all(f < 0.3 for f in frozen.frozen_THz)
    reference = HarmonicSampler(spring_force_constants(supercell), masses)
    assert len(frozen.omega) + len(frozen.frozen_THz) == len(reference.omega)
    # displacements have no component along the frozen (mass-weighted) directions
    n = len(supercell)
    D = fc.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n) / np.sqrt(np.outer(np.repeat(masses, 3), np.repeat(masses, 3)))
    w2, vecs = np.linalg.eigh(D)
    soft = vecs[:, w2 < -1e-8]
    u = frozen.sample(300.0, 4, np.random.default_rng(0)).reshape(4, -1) * np.sqrt(np.repeat(masses, 3))
    assert np.abs(u @ soft).max() < 1e-10 * np.abs(u).max()


def test_special_displacement_has_every_mode_at_its_thermal_amplitude(sampler):
    """ZG: each normal coordinate is ±sigma_nu, signs alternating with frequency; sum M u^2 = tr(M C)."""
    u = sampler.special_displacement(300.0)
    modes = canonical_modes(sampler.omega, sampler.vectors)
    np.testing.assert_allclose(modes.T @ modes, np.eye(modes.shape[1]), atol=1e-10)  # still an eigenbasis
    np.testing.assert_allclose(np.abs(sampler.vectors.T @ modes) ** 2 @ np.ones(len(sampler.omega)), 1.0, atol=1e-10)
    q = modes.T @ (u.reshape(-1) * np.repeat(np.sqrt(sampler.masses), 3))  # normal coordinates
    sigma = np.sqrt(sampler.mode_variances(300.0))
    np.testing.assert_allclose(q, np.where(np.arange(len(sigma)) % 2 == 0, 1, -1) * sigma, rtol=1e-8)
    assert np.all(np.diff(sampler.omega) >= 0)
    mass_weighted_cov = sampler.covariance(300.0) * np.repeat(sampler.masses, 3)[:, None]
    assert np.sum(sampler.masses[:, None] * u ** 2) == pytest.approx(np.trace(mass_weighted_cov), rel=1e-10)


def test_special_displacement_does_not_depend_on_the_eigensolvers_basis(sampler):
    """Degenerate modes rotated at random (as another LAPACK might return them) give the same displacement."""
    omega, vectors = sampler.omega, sampler.vectors.copy()
    rng = np.random.default_rng(5)
    groups = np.split(np.arange(len(omega)), np.nonzero(np.diff(omega) > 1e-6 * omega[1:])[0] + 1)
    assert max(map(len, groups)) >= 2  # the 3x3 supercell has degenerate modes
    for group in groups:
        rotation, _ = np.linalg.qr(rng.standard_normal((len(group), len(group))))
        vectors[:, group] = vectors[:, group] @ rotation
    np.testing.assert_allclose(canonical_modes(omega, vectors), canonical_modes(omega, sampler.vectors), atol=1e-8)


def test_frozen_patterns_freeze_their_modes_whatever_their_frequency(supercell, sampler):
    """A pattern given as frozen takes its mode out of the sampling even far above the tolerance; a pattern that
    is no mode of the force constants is an error."""
    fc, masses = spring_force_constants(supercell), supercell.get_masses()
    # a whole set of degenerate modes (the supercell's symmetry leaves few alone) from the middle of the spectrum
    middle = len(sampler.omega) // 2
    group = np.flatnonzero(np.isclose(sampler.omega, sampler.omega[middle], rtol=1e-6))
    pinned = HarmonicSampler(fc, masses, frozen_patterns=sampler.vectors[:, group], soft_modes="freeze")
    assert pinned.frozen_THz == pytest.approx(sampler.frequencies_THz[group])
    assert pinned.frequencies_THz[0] > 0.3 and len(pinned.omega) == len(sampler.omega) - len(group)
    u = pinned.sample(300.0, 4, np.random.default_rng(0)).reshape(4, -1) * np.sqrt(np.repeat(masses, 3))
    assert np.abs(u @ sampler.vectors[:, group]).max() < 1e-10 * np.abs(u).max()
    with pytest.raises(ValueError, match="matches no mode"):
        HarmonicSampler(fc, masses, frozen_patterns=np.random.default_rng(1).standard_normal((3 * len(masses), 1)))
