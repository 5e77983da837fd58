"""The Slonczewski–Weiss–McClure (SWMcC) four-band model of AB (Bernal) bilayer graphene.

Tight-binding form of McCann & Koshino, Rep. Prog. Phys. 76, 056503 (2013), Eq. (30), in the basis
(A1, B1, A2, B2), where B1 and A2 are the interlayer dimer sites, without overlap and with U = δ_AB = 0:

    H(k) = offset + [[ 0,          -γ0 f,       γ4 f,        -γ3 f* ],
                     [ -γ0 f*,      Δ',          γ1,          γ4 f   ],
                     [ γ4 f*,       γ1,          Δ',          -γ0 f  ],
                     [ -γ3 f,       γ4 f*,       -γ0 f*,      0      ]]

    f(k) = Σ_j exp(i k·δ_j)        (δ_j: the three in-plane vectors from an A1 site to its B1 neighbours)

All energies in eV, k in 1/Å (Cartesian, in the plane of the layers), lengths in Å. f vanishes at the
Brillouin-zone corners K, K'; near K, |f| ≈ (√3 a / 2) |k − K|, so the monolayer velocity is

    v = √3 a γ0 / (2 ħ)                                                   (γ0 = 3.16 eV, a = 2.46 Å → 1.02e6 m/s)

The model is written with the actual nearest-neighbour vectors of the crystal (``nn_vectors``), so the
orientation of the trigonal warping (γ3) matches the lattice whatever its orientation; the default vectors
are those of ASE's hexagonal cell a1 = a(1, 0), a2 = a(−1/2, √3/2) with B1 − A1 = (0, a/√3).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import scipy.optimize
from ase import units

#: ħ in eV s, from CODATA via ase.units.
HBAR_EV_S = units._hbar / units._e
#: 1 Å in m.
ANGSTROM_M = 1.0 / units.m

PARAM_NAMES = ("gamma0", "gamma1", "gamma3", "gamma4", "delta", "offset")


@dataclass(frozen=True)
class SWMcCParams:
    """SWMcC parameters (eV): hoppings γ0, γ1, γ3, γ4, dimer-site energy Δ' and a rigid energy offset."""

    gamma0: float
    gamma1: float
    gamma3: float
    gamma4: float
    delta: float
    offset: float = 0.0

    def to_array(self) -> np.ndarray:
        return np.array([getattr(self, name) for name in PARAM_NAMES], dtype=float)

    @classmethod
    def from_array(cls, values) -> "SWMcCParams":
        return cls(*(float(v) for v in values))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


#: McCann–Koshino review values (eV), the reference of DESIGN.md §2.
MCCANN_KOSHINO = SWMcCParams(gamma0=3.16, gamma1=0.381, gamma3=0.38, gamma4=0.14, delta=0.022, offset=0.0)


def nn_vectors(a: float = 2.46, angle_deg: float = 0.0) -> np.ndarray:
    """The three in-plane A1→B1 vectors ``[3, 2]`` (Å) of a honeycomb lattice with lattice constant ``a`` (Å).

    ``angle_deg`` rotates the default orientation (B1 − A1 = (0, a/√3), ASE's hexagonal cell) anticlockwise.
    """
    d = a / np.sqrt(3.0)
    phis = np.deg2rad(90.0 + angle_deg + np.array([0.0, 120.0, 240.0]))
    return d * np.stack([np.cos(phis), np.sin(phis)], axis=1)


def structure_factor(k, nn: np.ndarray) -> np.ndarray:
    """f(k) = Σ_j exp(i k·δ_j) ``[n_k]`` for Cartesian in-plane k ``[n_k, 2]`` (1/Å) and ``nn`` ``[3, 2]`` (Å)."""
    k = np.atleast_2d(np.asarray(k, dtype=float))
    return np.exp(1j * k @ np.asarray(nn).T).sum(axis=1)


def k_point(nn: np.ndarray) -> np.ndarray:
    """A Brillouin-zone corner K ``[2]`` (1/Å) of the lattice of ``nn``: the corner with f(K) = 0 found first.

    The two inequivalent corners K and K' give bands mirrored in k − K; the band analysis passes absolute k
    and the crystal's own ``nn``, so which corner is called K does not matter there.
    """
    nn = np.asarray(nn, dtype=float)
    # Honeycomb: the Bravais vectors are differences of the nearest-neighbour vectors.
    lattice = np.array([nn[1] - nn[0], nn[2] - nn[0]])
    recip = 2.0 * np.pi * np.linalg.inv(lattice).T  # rows b_i with a_i·b_j = 2π δ_ij
    candidates = [np.array(m) @ recip / 3.0 for m in ((1, 1), (2, 1), (1, 2), (2, 2))]
    for K in candidates:
        if abs(structure_factor(K, nn)[0]) < 1e-9:
            # Shortest equivalent vector: the corner of the first Brillouin zone.
            shifts = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)]) @ recip
            images = K + shifts
            return images[np.argmin(np.linalg.norm(images, axis=1))]
    raise ValueError("nn vectors do not form a honeycomb lattice: no zone corner with f(K) = 0")


def hamiltonian(k, params: SWMcCParams, nn: np.ndarray | None = None) -> np.ndarray:
    """SWMcC Hamiltonian ``[n_k, 4, 4]`` (eV) at Cartesian in-plane k ``[n_k, 2]`` (1/Å), basis (A1, B1, A2, B2).

    ``nn`` defaults to :func:`nn_vectors` with a = 2.46 Å.
    """
    nn = nn_vectors() if nn is None else nn
    f = structure_factor(k, nn)
    fc = f.conj()
    g0, g1, g3, g4, dp, e0 = params.to_array()
    H = np.zeros((len(f), 4, 4), complex)
    H[:, 0, 1], H[:, 0, 2], H[:, 0, 3] = -g0 * f, g4 * f, -g3 * fc
    H[:, 1, 2], H[:, 1, 3] = g1, g4 * f
    H[:, 2, 3] = -g0 * f
    H = H + H.conj().transpose(0, 2, 1)
    H[:, 1, 1] += dp
    H[:, 2, 2] += dp
    H += e0 * np.eye(4)
    return H


def band_energies(k, params: SWMcCParams, nn: np.ndarray | None = None) -> np.ndarray:
    """The four SWMcC band energies ``[n_k, 4]`` (eV, ascending) at Cartesian in-plane k ``[n_k, 2]`` (1/Å)."""
    return np.linalg.eigvalsh(hamiltonian(k, params, nn))


def fermi_velocity(gamma0, a: float = 2.46):
    """Monolayer velocity v = √3 a γ0 / (2ħ) in 10^6 m/s, for γ0 in eV and a in Å (3.16 eV → 1.02)."""
    hbar_v_eV_A = np.sqrt(3.0) * a * np.asarray(gamma0) / 2.0
    return velocity_from_slope(hbar_v_eV_A)


def velocity_from_slope(slope_eV_A):
    """Velocity in 10^6 m/s from a band slope dE/dk = ħv in eV Å."""
    return np.asarray(slope_eV_A) / HBAR_EV_S * ANGSTROM_M / 1e6


def gamma0_from_velocity(v_1e6_m_s, a: float = 2.46):
    """Inverse of :func:`fermi_velocity`: γ0 (eV) from v in 10^6 m/s and a in Å."""
    hbar_v_eV_A = np.asarray(v_1e6_m_s) * 1e6 * HBAR_EV_S / ANGSTROM_M
    return 2.0 * hbar_v_eV_A / (np.sqrt(3.0) * a)


@dataclass(frozen=True)
class SWMcCFit:
    """Result of :func:`fit_swmcc`.

    ``covariance`` ``[6, 6]`` (eV²) is in :data:`PARAM_NAMES` order, zero in rows/columns of fixed parameters;
    it is s²(JᵀJ)⁻¹ with s² the reduced χ² when no ``sigma`` was given (so it reflects the misfit), else
    (JᵀWJ)⁻¹ with W = 1/σ². ``rms_eV`` is the root-mean-square residual.
    """

    params: SWMcCParams
    covariance: np.ndarray
    rms_eV: float
    success: bool
    message: str

    @property
    def errors(self) -> SWMcCParams:
        """One-standard-deviation errors (eV) from the covariance."""
        return SWMcCParams.from_array(np.sqrt(np.clip(np.diag(self.covariance), 0.0, None)))


_LOWER = np.array([0.1, 0.0, -3.0, -3.0, -2.0, -np.inf])
_UPPER = np.array([20.0, 3.0, 3.0, 3.0, 2.0, np.inf])


def initial_guess(k_abs: np.ndarray, bands: np.ndarray, K: np.ndarray) -> SWMcCParams:
    """Start values: McCann–Koshino hoppings, γ1, Δ' and the offset read off the bands nearest K."""
    b = bands[np.argmin(np.linalg.norm(k_abs - K, axis=1))]
    offset = 0.5 * (b[1] + b[2])
    gamma1 = float(np.clip(0.5 * (b[3] - b[0]), 0.05, 2.0))
    delta = float(np.clip(0.5 * (b[3] + b[0]) - offset, -0.5, 0.5))
    return replace(MCCANN_KOSHINO, gamma1=gamma1, delta=delta, offset=float(offset))


def fit_swmcc(k_points, bands, a: float = 2.46, *, K=None, nn: np.ndarray | None = None,
              initial: SWMcCParams | None = None, sigma=None, fixed: dict | None = None,
              mask=None) -> SWMcCFit:
    """Least-squares fit of the SWMcC bands to four bands per k point.

    Parameters
    ----------
    k_points : array [n_k, 2] (or [n_k, 3], z ignored)
        Cartesian in-plane k (1/Å): absolute when ``K`` is None, else relative to ``K``.
    bands : array [n_k, 4]
        Band energies (eV), ascending at each k.
    a : float
        Lattice constant (Å); sets the default ``nn`` (ASE's hexagonal orientation).
    K : array [2], optional
        The zone corner (1/Å) the ``k_points`` are measured from; ``swmcc.k_point(nn)`` is one.
    nn : array [3, 2], optional
        In-plane A1→B1 vectors (Å) of the crystal the bands come from (``bands.bilayer_geometry``).
    initial : SWMcCParams, optional
        Start values; default :func:`initial_guess`.
    sigma : array [n_k, 4] or float, optional
        Standard errors (eV) of ``bands``: weights 1/σ²; points with σ = 0 are given the smallest non-zero σ.
    fixed : dict, optional
        Parameters held at the given values (eV), e.g. ``{"gamma4": 0.14}``.
    mask : bool array [n_k, 4], optional
        Band energies used in the fit (default all); the others neither enter the residual nor the rms.

    Returns
    -------
    SWMcCFit
    """
    nn = nn_vectors(a) if nn is None else np.asarray(nn, dtype=float)
    k = np.atleast_2d(np.asarray(k_points, dtype=float))[:, :2]
    bands = np.asarray(bands, dtype=float)
    if bands.shape != (len(k), 4):
        raise ValueError(f"bands must be [n_k, 4] = [{len(k)}, 4], got {bands.shape}")
    k_abs = k if K is None else k + np.asarray(K, dtype=float)[:2]
    K_ref = k_point(nn) if K is None else np.asarray(K, dtype=float)[:2]
    start = (initial or initial_guess(k_abs, bands, K_ref)).to_array()
    fixed = dict(fixed or {})
    unknown = set(fixed) - set(PARAM_NAMES)
    if unknown:
        raise ValueError(f"unknown SWMcC parameters {sorted(unknown)}; choose from {PARAM_NAMES}")
    for name, value in fixed.items():
        start[PARAM_NAMES.index(name)] = value
    free = np.array([name not in fixed for name in PARAM_NAMES])
    use = np.ones(bands.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), bands.shape)
    if use.sum() <= int(np.sum([n not in fixed for n in PARAM_NAMES])):
        raise ValueError(f"only {use.sum()} band energies left to fit {PARAM_NAMES}")
    weight = _weights(sigma, bands.shape)

    def full(x):
        p = start.copy()
        p[free] = x
        return p

    def residual(x):
        model = band_energies(k_abs, SWMcCParams.from_array(full(x)), nn)
        return ((model - bands) * weight)[use]

    x0 = np.clip(start[free], _LOWER[free] + 1e-9, _UPPER[free] - 1e-9)
    result = scipy.optimize.least_squares(residual, x0, bounds=(_LOWER[free], _UPPER[free]), method="trf",
                                          x_scale=1.0, xtol=1e-12, ftol=1e-12, gtol=1e-12)
    params = SWMcCParams.from_array(full(result.x))
    unweighted = band_energies(k_abs, params, nn) - bands
    rms = float(np.sqrt(np.mean(unweighted[use] ** 2)))
    covariance = np.zeros((6, 6))
    covariance[np.ix_(free, free)] = _covariance(result, sigma is None)
    return SWMcCFit(params=params, covariance=covariance, rms_eV=rms, success=bool(result.success),
                    message=str(result.message))


def _weights(sigma, shape) -> np.ndarray:
    if sigma is None:
        return np.ones(shape)
    s = np.broadcast_to(np.asarray(sigma, dtype=float), shape).copy()
    positive = s[s > 0]
    if positive.size == 0:
        return np.ones(shape)
    # An exact (zero-error) point would get infinite weight; give it the smallest error seen instead.
    s[s <= 0] = positive.min()
    return 1.0 / s


def _covariance(result, scale_by_misfit: bool) -> np.ndarray:
    J = result.jac
    n_res, n_par = J.shape
    cov = np.linalg.pinv(J.T @ J)
    if scale_by_misfit:
        dof = max(n_res - n_par, 1)
        cov = cov * (2.0 * result.cost / dof)  # cost = ½ Σ r²
    return cov


def outer_band_slope(q, bands, branch, q_min: float, linearize: bool = True) -> tuple[float, float]:
    """Velocity (10^6 m/s) from the slopes of the two outer bands, independent of the SWMcC fit.

    Energies are taken relative to the band-touching point E_0 (mean of the two middle bands at K, the point
    with the smallest q). The outer band of the bilayer is a hyperbola, in the two-parameter model
    E_out(q) = ±[γ1/2 + √(γ1²/4 + (ħvq)²)], whose plain slope reaches ħv only for ħvq ≫ γ1/2 (7 % low at
    0.1 1/Å). With ``linearize`` (default) each outer band is first mapped onto its asymptote,

        y(q) = √( E_out(q) · (E_out(q) − E_out(K)) ) = ħv q        (exact in that model, E_out(K) = ±γ1),

    which needs nothing but the outer band itself. On each branch (a straight line out of K) y or E of the
    top and bottom bands is fitted by a straight line over q ≥ ``q_min``; ħv is the mean of the two slopes
    (cancels the electron–hole asymmetry of γ4 to first order), averaged over branches (K→Γ and K→M cancel
    the first-order trigonal warping). On the McCann–Koshino bands with q_min = k_max / 4 it is 0.4 % below
    √3aγ0/2ħ for k_max = 0.1 1/Å (1 % at 0.15, 1.6 % at 0.2: the cone itself bends further out); the raw
    slope (``linearize=False``) is 11 % low at 0.1 1/Å.

    Parameters
    ----------
    q : array [n_k]
        Distance |k − K| (1/Å); the smallest must be K itself (q ≈ 0).
    bands : array [n_k, 4]
        Band energies (eV), ascending.
    branch : array [n_k]
        Branch label of each k (e.g. 0 for K→Γ, 1 for K→M); K itself may carry either.
    q_min : float
        Smallest |k − K| (1/Å) used; at least two points per branch must lie beyond it.
    linearize : bool
        Map the outer bands onto their asymptote first (default); False fits the raw outer bands.

    Returns
    -------
    (v_1e6_m_s, spread_1e6_m_s): the velocity and half the spread between the branch estimates.
    """
    q, bands, branch = np.asarray(q, float), np.asarray(bands, float), np.asarray(branch)
    i_K = int(np.argmin(q))
    if q[i_K] > 1e-6:
        raise ValueError(f"outer_band_slope needs K itself among the k points (smallest |k - K| = {q[i_K]})")
    e = bands - 0.5 * (bands[i_K, 1] + bands[i_K, 2])
    top, bottom = e[:, 3], -e[:, 0]
    if linearize:
        top = np.sqrt(np.clip(top * (top - top[i_K]), 0.0, None))
        bottom = np.sqrt(np.clip(bottom * (bottom - bottom[i_K]), 0.0, None))
    estimates = []
    for b in np.unique(branch):
        sel = (branch == b) & (q >= q_min)
        if sel.sum() < 2:
            continue
        slopes = [np.polyfit(q[sel], y[sel], 1)[0] for y in (top, bottom)]
        estimates.append(0.5 * sum(slopes))
    if not estimates:
        raise ValueError(f"no branch has two k points with |k - K| >= q_min = {q_min} 1/Å; lower q_min or "
                         "raise the k range")
    v = velocity_from_slope(np.array(estimates))
    return float(v.mean()), float(0.5 * (v.max() - v.min()))
