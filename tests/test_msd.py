"""Mean-square displacements by branch (mlepi.vibrations.msd) against two independent routes: the real-space
sampler's analytic covariance of the same n x n supercell, and phonopy's own thermal displacements; and the
flexural branch's share, which must grow with the supercell at finite temperature."""

import numpy as np
import pytest
from test_sum_rules import DFT_PHONONS, THERMAL
from test_supercell_bands import phonon  # noqa: F401  (the 3x3 spring-model bilayer fixture)

from mlepi.vibrations.msd import branch_msd, commensurate_qpoints
from mlepi.vibrations.phonons import interpolated_force_constants, read_phonopy
from mlepi.vibrations.thermal import HarmonicSampler, sampler_for, sampling_phonon

TOL_THZ = 0.3


@pytest.mark.parametrize("n", [3, 6])
def test_total_equals_the_samplers_covariance(phonon, n):  # noqa: F811
    target, fc = interpolated_force_constants(phonon, n)
    sampler = HarmonicSampler(fc, target.supercell.masses, TOL_THZ, "freeze")
    # rel 1e-6: phonopy's THz factor and ASE's CODATA constants agree to ~1e-7, not to round-off
    for row in branch_msd(phonon, n, [0.0, 300.0], TOL_THZ):
        diagonal = np.diag(sampler.covariance(row["T_K"])).reshape(-1, 3)
        assert row["u2_z_A2"] == pytest.approx(diagonal[:, 2].mean(), rel=1e-6)
        assert row["u2_xy_A2"] == pytest.approx(diagonal[:, :2].mean(), rel=1e-6)


def test_total_equals_phonopys_thermal_displacements(phonon):  # noqa: F811
    n, temperatures = 4, [0.0, 300.0, 600.0]
    phonon.run_mesh([n, n, 1], with_eigenvectors=True, is_mesh_symmetry=False, is_gamma_center=True)
    phonon.run_thermal_displacements(temperatures=temperatures, freq_min=TOL_THZ)
    reference = np.asarray(phonon.thermal_displacements.thermal_displacements).reshape(len(temperatures), -1, 3)  # A^2
    for row, expected in zip(branch_msd(phonon, n, temperatures, TOL_THZ), reference):
        assert row["u2_z_A2"] == pytest.approx(expected[:, 2].mean(), rel=1e-6)
        assert row["u2_xy_A2"] == pytest.approx(expected[:, :2].mean(), rel=1e-6)


def test_flexural_share_grows_with_the_supercell(phonon):  # noqa: F811
    rows = {n: branch_msd(phonon, n, [300.0], TOL_THZ)[0] for n in (3, 6, 12)}
    assert rows[3]["u2_z_ZA_A2"] < rows[6]["u2_z_ZA_A2"] < rows[12]["u2_z_ZA_A2"]
    assert 0 < rows[3]["ZA_share"] < rows[12]["ZA_share"] < 1
    # in-plane motion has no such soft branch: it converges far faster than the flexural part
    growth_xy = rows[12]["u2_xy_A2"] / rows[6]["u2_xy_A2"] - 1
    assert growth_xy < 0.5 * (rows[12]["u2_z_ZA_A2"] / rows[6]["u2_z_ZA_A2"] - 1)


def test_commensurate_qpoints():
    q = commensurate_qpoints(3)
    assert q.shape == (9, 3) and np.allclose(q[0], 0) and np.allclose(q[:, 2], 0)
    assert {tuple(np.round(3 * x[:2]).astype(int)) for x in q} == {(i, j) for i in range(3) for j in range(3)}


@pytest.mark.parametrize("n", [3, 4])
def test_invariant_constants_and_their_frozen_shear_as_the_sampler_has_them(n):
    """With thermal.force_constants: invariant (the real DFT constants), the branches leave out what the sampler
    leaves out, the shear that is soft in the finite-difference constants included."""
    dft = read_phonopy(DFT_PHONONS)
    target, sampler = sampler_for(dft, THERMAL, n)
    phonon, frozen = sampling_phonon(dft, THERMAL)
    for row in branch_msd(phonon, n, [0.0, 300.0], TOL_THZ, frozen_gamma=frozen):
        diagonal = np.diag(sampler.covariance(row["T_K"])).reshape(-1, 3)
        assert row["u2_z_A2"] == pytest.approx(diagonal[:, 2].mean(), rel=1e-6)
        assert row["u2_xy_A2"] == pytest.approx(diagonal[:, :2].mean(), rel=1e-6)
        assert row["n_modes_left_out"] == 3 + len(sampler.frozen_THz) == 5
