"""The SWMcC model of AB bilayer graphene (mlepi.electrons.swmcc): analytic limits, fits, the slope cross-check."""

import numpy as np
import pytest

from mlepi.electrons import swmcc

MK = swmcc.MCCANN_KOSHINO
A = 2.46


def _path(K, k_range=0.1, n=21):
    """K→Γ and K→M branches (absolute k, 1/Å), |k − K| and branch labels."""
    u_gamma = -K / np.linalg.norm(K)
    c, s = 0.5, np.sqrt(3) / 2
    u_m = (np.array([[c, -s], [s, c]]) @ K - K) / np.linalg.norm(K)
    q = np.linspace(0, k_range, n)
    k = np.concatenate([K + q[:, None] * u_gamma, K + q[:, None] * u_m])
    return k, np.concatenate([q, q]), np.repeat([0, 1], n)


def test_fermi_velocity_of_mccann_koshino_gamma0():
    assert swmcc.fermi_velocity(3.16, A) == pytest.approx(1.02, abs=0.005)
    assert swmcc.gamma0_from_velocity(swmcc.fermi_velocity(2.7, A), A) == pytest.approx(2.7, rel=1e-12)


def test_zone_corner():
    nn = swmcc.nn_vectors(A, angle_deg=17.0)
    K = swmcc.k_point(nn)
    assert abs(swmcc.structure_factor(K, nn)[0]) < 1e-12
    assert np.linalg.norm(K) == pytest.approx(4 * np.pi / (3 * A), rel=1e-12)


def test_energies_at_K():
    """At K, f = 0: non-dimer sites at the offset, the dimer pair at offset + Δ' ± γ1."""
    p = swmcc.SWMcCParams(3.0, 0.4, 0.3, 0.1, 0.03, offset=-0.2)
    e = swmcc.band_energies(swmcc.k_point(swmcc.nn_vectors(A)), p)[0]
    np.testing.assert_allclose(e, [-0.2 + 0.03 - 0.4, -0.2, -0.2, -0.2 + 0.03 + 0.4], atol=1e-12)


def test_minimal_model_near_K_is_the_bilayer_hyperbola():
    """γ3 = γ4 = Δ' = 0: E = ±γ1/2 ± √(γ1²/4 + (ħvq)²) (McCann–Koshino Eq. 32) up to O(qa) lattice terms."""
    p = swmcc.SWMcCParams(3.16, 0.381, 0.0, 0.0, 0.0)
    nn = swmcc.nn_vectors(A)
    k, q, _ = _path(swmcc.k_point(nn), k_range=0.01, n=5)
    hv = np.sqrt(3) * A * p.gamma0 / 2 * q
    root = np.sqrt(p.gamma1 ** 2 / 4 + hv ** 2)
    expected = np.sort(np.stack([-p.gamma1 / 2 - root, p.gamma1 / 2 - root, root - p.gamma1 / 2,
                                 root + p.gamma1 / 2], 1), axis=1)
    np.testing.assert_allclose(swmcc.band_energies(k, p, nn), expected, atol=2e-4)


def test_fit_recovers_parameters_noise_free():
    nn = swmcc.nn_vectors(A)
    k, _, _ = _path(swmcc.k_point(nn))
    truth = swmcc.SWMcCParams(3.0, 0.36, 0.25, 0.12, 0.018, offset=0.05)
    start = swmcc.SWMcCParams(2.5, 0.3, -0.3, 0.0, 0.0, 0.0)
    fit = swmcc.fit_swmcc(k, swmcc.band_energies(k, truth, nn), A, initial=start)
    np.testing.assert_allclose(fit.params.to_array(), truth.to_array(), atol=1e-8)
    assert fit.rms_eV < 1e-10


def test_fit_relative_k_and_rotated_lattice_agree():
    """k relative to K, and the same crystal rotated by 23°, give the same parameters."""
    truth = MK
    nn = swmcc.nn_vectors(A)
    K = swmcc.k_point(nn)
    k, _, _ = _path(K)
    bands = swmcc.band_energies(k, truth, nn)
    relative = swmcc.fit_swmcc(k - K, bands, A, K=K, nn=nn)
    phi = np.deg2rad(23.0)
    R = np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
    rotated = swmcc.fit_swmcc(k @ R.T, bands, A, nn=nn @ R.T)
    for fit in (relative, rotated):
        np.testing.assert_allclose(fit.params.to_array(), truth.to_array(), atol=1e-7)


def test_fit_with_noise_is_within_its_error():
    nn = swmcc.nn_vectors(A)
    k, _, _ = _path(swmcc.k_point(nn), n=31)
    rng = np.random.default_rng(42)
    noise = 0.002  # eV
    bands = np.sort(swmcc.band_energies(k, MK, nn) + rng.normal(0, noise, (len(k), 4)), axis=1)
    fit = swmcc.fit_swmcc(k, bands, A, nn=nn)
    deviation = np.abs(fit.params.to_array() - MK.to_array())
    assert np.all(deviation < 4 * fit.errors.to_array() + 1e-12), (fit.params, fit.errors)
    assert fit.rms_eV == pytest.approx(noise, rel=0.2)
    v_err = swmcc.fermi_velocity(fit.errors.gamma0, A)
    assert abs(swmcc.fermi_velocity(fit.params.gamma0, A) - swmcc.fermi_velocity(MK.gamma0, A)) < 4 * v_err


def test_fit_fixed_parameters_and_mask():
    nn = swmcc.nn_vectors(A)
    k, q, _ = _path(swmcc.k_point(nn))
    bands = swmcc.band_energies(k, MK, nn)
    mask = np.ones(bands.shape, bool)
    mask[q < 0.03, 1:3] = False  # inner bands near K left out
    bands_bad = bands.copy()
    bands_bad[~mask] += 0.5  # what is masked must not matter
    fit = swmcc.fit_swmcc(k, bands_bad, A, nn=nn, fixed={"gamma4": MK.gamma4}, mask=mask)
    np.testing.assert_allclose(fit.params.to_array(), MK.to_array(), atol=1e-8)
    assert fit.covariance[3, 3] == 0.0
    with pytest.raises(ValueError, match="unknown SWMcC"):
        swmcc.fit_swmcc(k, bands, A, fixed={"gamma2": 0.0})


@pytest.mark.parametrize("params", [MK, swmcc.SWMcCParams(2.7, 0.48, -0.2, 0.17, 0.01)])
def test_outer_band_slope_agrees_with_gamma0(params):
    """The linearised outer-band slope is an independent route to v (0.4 % low at 0.1 1/Å, see docstring);
    the raw slope of the hyperbola is far lower, which is why the bands stage linearises."""
    nn = swmcc.nn_vectors(A)
    k, q, branch = _path(swmcc.k_point(nn), k_range=0.1)
    bands = swmcc.band_energies(k, params, nn)
    v_true = swmcc.fermi_velocity(params.gamma0, A)
    v_slope, spread = swmcc.outer_band_slope(q, bands, branch, q_min=0.03)
    assert v_slope == pytest.approx(v_true, rel=0.01)
    assert spread < 0.1 * v_true  # the branches differ by trigonal warping (γ3); their mean cancels it
    v_raw, _ = swmcc.outer_band_slope(q, bands, branch, q_min=0.03, linearize=False)
    assert v_raw < 0.95 * v_true
    fitted = swmcc.fit_swmcc(k, bands, A, nn=nn)
    assert swmcc.fermi_velocity(fitted.params.gamma0, A) == pytest.approx(v_slope, rel=0.01)
