"""Stage ``bands``: thermal band renormalisation of AB bilayer graphene near K and the Fermi velocity v_F(T).

For every temperature, every displaced supercell (a frame with H, S blocks, DFT or HedgeNet) is unfolded
onto a short path through K (K→Γ and K→M, |k − K| ≤ ``k_range_1_A``); the four π bands near E_F are read
off the unfolded weights, put on a common energy zero, averaged over samples (standard errors), and fitted
by the SWMcC model (:mod:`mlepi.electrons.swmcc`) → γ0, γ1, γ3, γ4, Δ' and v_F = √3 a γ0 / 2ħ, with a seeded
bootstrap over samples for the errors and the outer-band slope as an independent check. Choices and
formulas: ``docs/bands.md``.

Outputs in ``out_dir``: ``vf.csv``, ``bands.json`` (same numbers, the averaged bands, convergence with the
number of samples, config and provenance), ``spectral.h5`` (thermal-averaged A(k, E) per T) and the figures
``spectral_function.png``, ``vf.png``, ``convergence.png``, written atomically by
:mod:`mlepi.electrons.band_files`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mlepi.config import stage_config
from mlepi.config.bands import BandsConfig
from mlepi.electrons import committee, swmcc
from mlepi.electrons.band_files import (  # noqa: F401 (the file layout, also bands.SCHEMA, ...)
    CSV_COLUMNS,
    N_BANDS,
    SCHEMA,
    SCHEMA_VERSION,
    SPECTRAL_SCHEMA,
    UNITS,
    csv_row,
    json_safe,
    write_outputs,
)
from mlepi.electrons.unfold import spectral_function, unfold
from mlepi.errors import MlepiError
from mlepi.formats.frames import FramesFile, FramesFileError
from mlepi.formats.provenance import record
from mlepi.formats.structures import read_structure
from mlepi.geometry.supercell import map_supercell

log = logging.getLogger(__name__)


class BandsError(MlepiError, ValueError):
    """The band analysis cannot proceed (inputs inconsistent with each other or with the config)."""


class WindowWeightError(BandsError):
    """One sample's four pi bands do not carry four states of unfolded weight inside the band window."""




@dataclass(frozen=True)
class BilayerGeometry:
    """What the analysis needs from the primitive AB bilayer: lattice constant, orientation, K."""

    a: float  # Å, |a1|
    nn: np.ndarray  # [3, 2] Å, in-plane A1→B1 vectors in the (e1, e2) frame
    plane: np.ndarray  # [2, 3] orthonormal in-plane axes e1, e2 (Cartesian)
    reciprocal: np.ndarray  # [3, 3] 1/Å, rows b_i with a_i·b_j = 2π δ_ij
    K_2d: np.ndarray  # [2] 1/Å, the zone corner of the first Brillouin zone in the (e1, e2) frame


def bilayer_geometry(primitive, tol: float = 0.05) -> BilayerGeometry:
    """Lattice constant, nearest-neighbour vectors and K of a 4-atom AB bilayer primitive cell.

    The dimer pair is the two atoms on top of each other (different layers, same in-plane site); A1 is a
    non-dimer atom and B1 the dimer atom of its layer. Which layer is called 1 does not matter: swapping
    layers maps f(k) → f*(k), the bands at k onto those at −k, equal by time reversal.

    Parameters
    ----------
    primitive : ase.Atoms
        4 carbon atoms, hexagonal in-plane lattice a1, a2 (|a1| = |a2|, 60° or 120°), a3 the layer axis.
    tol : float
        Relative tolerance of the hexagonal-lattice checks.
    """
    cell = np.array(primitive.cell, float)
    pos = primitive.get_positions()
    if len(pos) != 4:
        raise BandsError(f"the SWMcC analysis needs the 4-atom AB bilayer primitive cell, got {len(pos)} atoms")
    a1, a2 = cell[0], cell[1]
    a = float(np.linalg.norm(a1))
    cos = a1 @ a2 / (a * np.linalg.norm(a2))
    if abs(np.linalg.norm(a2) / a - 1) > tol or abs(abs(cos) - 0.5) > tol:
        raise BandsError(f"in-plane lattice is not hexagonal (|a1| = {a:.4f}, |a2| = "
                         f"{np.linalg.norm(a2):.4f} Å, cos = {cos:.4f}); a3 must be the layer axis")
    normal = np.cross(a1, a2)
    normal /= np.linalg.norm(normal)
    e1 = a1 / a
    plane = np.array([e1, np.cross(normal, e1)])
    lat2d = cell[:2] @ plane.T  # [2, 2]
    images = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)]) @ lat2d

    def in_plane(v):  # shortest in-plane image of a Cartesian difference vector
        cand = (v @ plane.T)[None, :] + images
        return cand[np.argmin(np.linalg.norm(cand, axis=1))]

    height = pos @ normal
    c_perp = abs(cell[2] @ normal)
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)
             if np.linalg.norm(in_plane(pos[j] - pos[i])) < tol * a]
    if len(pairs) != 1:
        raise BandsError(f"found {len(pairs)} vertically stacked pairs, expected 1 (AB stacking)")
    dimer = pairs[0]
    A1 = next(i for i in range(4) if i not in dimer)

    def dz(i, j):
        d = height[j] - height[i]
        return abs(d - c_perp * np.round(d / c_perp))

    B1 = min(dimer, key=lambda d: dz(A1, d))
    delta = in_plane(pos[B1] - pos[A1])
    if abs(np.linalg.norm(delta) * np.sqrt(3) / a - 1) > tol:
        raise BandsError(f"A1-B1 distance {np.linalg.norm(delta):.4f} Å is not a/sqrt(3) for a = {a:.4f} Å")
    rot = np.array([[-0.5, -np.sqrt(3) / 2], [np.sqrt(3) / 2, -0.5]])  # 120°
    nn = np.array([delta, rot @ delta, rot @ rot @ delta])
    reciprocal = 2.0 * np.pi * np.linalg.inv(cell).T
    return BilayerGeometry(a=a, nn=nn, plane=plane, reciprocal=reciprocal, K_2d=swmcc.k_point(nn))


@dataclass(frozen=True)
class KPath:
    """The two branches K→Γ and K→M, Γ side first, K once."""

    k_reduced: np.ndarray  # [n, 3] primitive reduced coordinates
    k_2d: np.ndarray  # [n, 2] 1/Å, absolute, in-plane frame of BilayerGeometry
    distance: np.ndarray  # [n] 1/Å, signed |k − K|: negative towards Γ, positive towards M
    branch: np.ndarray  # [n] 0: K→Γ, 1: K→M (K itself: 1)
    index_K: int

    @property
    def q(self) -> np.ndarray:
        return np.abs(self.distance)


def k_path(geometry: BilayerGeometry, k_range: float, n_k: int) -> KPath:
    """k = K + q u, q in [0, ``k_range``] (1/Å, ``n_k`` points per branch), u towards Γ and towards M."""
    K = geometry.K_2d
    u_gamma = -K / np.linalg.norm(K)
    c, s = 0.5, np.sqrt(3) / 2
    K_prime = np.array([[c, -s], [s, c]]) @ K  # the neighbouring corner; M is halfway
    u_m = (0.5 * (K + K_prime) - K) / np.linalg.norm(0.5 * (K_prime - K))
    q = np.linspace(0.0, k_range, n_k)
    k_2d = np.concatenate([K + q[:0:-1, None] * u_gamma, K + q[:, None] * u_m])
    distance = np.concatenate([-q[:0:-1], q])
    branch = np.concatenate([np.zeros(n_k - 1, int), np.ones(n_k, int)])
    k_cart = k_2d @ geometry.plane
    k_red = k_cart @ np.linalg.inv(geometry.reciprocal)
    return KPath(k_reduced=k_red, k_2d=k_2d, distance=distance, branch=branch, index_K=n_k - 1)


# --------------------------------------------------------------------------------------------------------
# Per sample: from unfolded states to four aligned band energies


def select_bands(energies, weights, center: float, half_width: float, method: str = "centroid",
                 n_bands: int = N_BANDS) -> tuple[np.ndarray, np.ndarray]:
    """Four band energies ``[n_k, n_bands]`` (eV) per k from unfolded states within ``center ± half_width``.

    ``centroid``: order the states in the window by energy, cut their cumulative weight into ``n_bands``
    equal slices, and give each band the weight-averaged energy of its slice. It equals the band energy for
    an undisplaced cell (weights 0/1), and otherwise the centroid of the band's spectral weight; it does not
    depend on how degenerate states are rotated. ``max_weight``: the ``n_bands`` states of largest weight.

    Returns the bands (ascending) and the total unfolded weight in the window ``[n_k]``.
    """
    energies, weights = np.asarray(energies), np.asarray(weights)
    bands = np.empty((len(energies), n_bands))
    total = np.empty(len(energies))
    for i, (e, w) in enumerate(zip(energies, weights)):
        inside = np.abs(e - center) <= half_width
        e, w = e[inside], w[inside]
        order = np.argsort(e)
        e, w = e[order], w[order]
        total[i] = w.sum()
        if len(e) < n_bands:
            raise BandsError(f"only {len(e)} states within {center:.3f} ± {half_width} eV at k point {i}; "
                             "raise band_window_eV")
        if method == "centroid":
            cum = np.concatenate([[0.0], np.cumsum(w)])
            edges = np.linspace(0.0, total[i], n_bands + 1)
            overlap = np.clip(np.minimum(cum[None, 1:], edges[1:, None])
                              - np.maximum(cum[None, :-1], edges[:-1, None]), 0.0, None)  # [n_bands, n_states]
            bands[i] = overlap @ e / (total[i] / n_bands)
        elif method == "max_weight":
            bands[i] = np.sort(e[np.argsort(w, kind="stable")[-n_bands:]])
        else:
            raise BandsError(f"band_method must be 'centroid' or 'max_weight', got {method!r}")
    return bands, total


def midgap_by_count(energies_K: np.ndarray, n_electrons: float) -> float:
    """Energy (eV) halfway between the highest occupied and lowest empty state at one k, spin-degenerate.

    At the supercell k that holds the primitive K, every folded primitive k contributes its filled valence
    bands below E_F, so this is a robust first guess of E_F for centring the band window.
    """
    n_occ = n_electrons / 2.0
    if abs(n_occ - round(n_occ)) > 1e-6 or not 0 < n_occ < len(energies_K):
        raise BandsError(f"cannot split {n_electrons} electrons over {len(energies_K)} states at K")
    n_occ = int(round(n_occ))
    e = np.sort(energies_K)
    return 0.5 * (e[n_occ - 1] + e[n_occ])


def n_valence_electrons(numbers, basis: dict, source: str = "") -> float:
    """Valence electrons of the atoms ``numbers`` from the ``valence`` entry of a frames-file basis."""
    valence = basis.get("valence")
    if not valence:
        raise FramesFileError(f"{source}: basis has no 'valence' entry; needed to locate E_F "
                              "(or use energy_reference = 'fermi_level')")
    try:
        return float(sum(valence[str(int(z))] for z in numbers))
    except KeyError as err:
        raise FramesFileError(f"{source}: basis 'valence' lacks element {err.args[0]}") from None


@dataclass
class SampleBands:
    """One sample's bands on the path, on its own energy zero."""

    name: str
    bands: np.ndarray  # [n_k, 4] eV, relative to `reference`
    reference: float  # eV, the sample's energy zero on the frame's own scale
    window_weight: np.ndarray  # [n_k] unfolded weight inside the band window
    spectral: np.ndarray  # [n_k, n_E] 1/eV
    antithetic: bool = False  # drawn as one of an antithetic pair (2k, 2k+1), from the frame's info
    index: int | None = None  # the frame's sample_index


def _analyse_or_reject(job, *, path, mapping, cfg, energy_grid, window_center):
    """:func:`analyse_sample` of ``job = (frame, basis, source)``, or the record of why it was left out."""
    frame, basis, source = job
    try:
        return analyse_sample(frame, basis, path, mapping, cfg, energy_grid, source, window_center=window_center)
    except WindowWeightError as err:
        return {"name": frame.name, "source": source, "reason": str(err)}


# Beyond the band window and the A(k, E) grid, the unfolding solves for the states within this margin (eV), for
# the tails of the broadened states just outside the grid; the farther ones add < 0.1 % of a band's peak to
# A(k, E) on the grid (docs/bands.md).
SPECTRAL_MARGIN_EV = 0.5


def sample_center(frame, basis: dict, path: KPath, mapping, cfg: BandsConfig, source: str = "",
                  window_center: float | None = None) -> float:
    """Centre (eV) of the band window of one frame: its Fermi level, ``window_center``, or the midgap at K."""
    if cfg.energy_reference == "fermi_level":
        if frame.fermi_level is None:
            raise FramesFileError(f"{source}: frame {frame.name!r} has no fermi_level; use "
                                  "energy_reference = 'k_midpoint'")
        return float(frame.fermi_level)
    if window_center is not None:
        return float(window_center)
    # Counting electrons needs every state at K: one k point unfolded without a window.
    energies_K, _ = unfold(frame, basis, path.k_reduced[[path.index_K]], mapping,
                           max_displacement=cfg.max_displacement_A, overlap_min=cfg.overlap_min,
                           resolve_degeneracies=False)
    return midgap_by_count(energies_K[0], n_valence_electrons(frame.numbers, basis, source))


def analyse_sample(frame, basis: dict, path: KPath, mapping, cfg: BandsConfig, energy_grid,
                   source: str = "", window_center: float | None = None) -> SampleBands:
    """Unfold one frame on the path, read off the four bands and put them on the configured zero."""
    center = sample_center(frame, basis, path, mapping, cfg, source, window_center)
    half = max(cfg.band_window_eV, abs(cfg.spectral_emin_eV), abs(cfg.spectral_emax_eV)) + SPECTRAL_MARGIN_EV
    energies, weights = unfold(frame, basis, path.k_reduced, mapping, degeneracy_tol=cfg.degeneracy_tol_eV,
                               max_displacement=cfg.max_displacement_A, overlap_min=cfg.overlap_min,
                               window=(center - half, center + half))
    iK = path.index_K
    bands, total = select_bands(energies, weights, center, cfg.band_window_eV, cfg.band_method)
    if np.any(np.abs(total - N_BANDS) > 0.5):
        i = int(np.argmax(np.abs(total - N_BANDS)))
        raise WindowWeightError(f"{source}: frame {frame.name!r}: unfolded weight {total[i]:.2f} within ±"
                         f"{cfg.band_window_eV} eV of {center:.3f} eV at k point {i}, expected {N_BANDS}; "
                         "adjust band_window_eV or k_range_1_A")
    reference = center if cfg.energy_reference == "fermi_level" else 0.5 * (bands[iK, 1] + bands[iK, 2])
    spectral = spectral_function(energies - reference, weights, energy_grid, cfg.broadening_eV,
                                 cfg.broadening_kind)
    return SampleBands(name=frame.name, bands=bands - reference, reference=reference, window_weight=total,
                       spectral=spectral, antithetic=bool(frame.info.get("antithetic", False)),
                       index=frame.info.get("sample_index"))


# --------------------------------------------------------------------------------------------------------
# Over samples: averages, fits, bootstrap, convergence


@dataclass
class BandFit:
    """SWMcC fit and velocity estimates of one set of averaged bands."""

    fit: swmcc.SWMcCFit
    vf_1e6_m_s: float
    vf_slope_1e6_m_s: float


def fit_bands(mean_bands: np.ndarray, path: KPath, geometry: BilayerGeometry, cfg: BandsConfig,
              initial: swmcc.SWMcCParams | None = None) -> BandFit:
    """SWMcC fit of averaged bands (unweighted: the bootstrap supplies the errors) and the slope check."""
    fit = swmcc.fit_swmcc(path.k_2d, mean_bands, geometry.a, nn=geometry.nn, initial=initial)
    v_slope, _ = swmcc.outer_band_slope(path.q, mean_bands, path.branch, cfg.slope_q_min_1_A)
    return BandFit(fit=fit, vf_1e6_m_s=float(swmcc.fermi_velocity(fit.params.gamma0, geometry.a)),
                   vf_slope_1e6_m_s=v_slope)


def standard_error(samples: np.ndarray) -> np.ndarray:
    """Standard error of the mean over axis 0 (NaN for a single sample)."""
    n = len(samples)
    if n < 2:
        return np.full(samples.shape[1:], np.nan)
    return samples.std(axis=0, ddof=1) / np.sqrt(n)


def bootstrap(samples: np.ndarray, path: KPath, geometry: BilayerGeometry, cfg: BandsConfig,
              start: swmcc.SWMcCParams, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Refit resampled (with replacement) sample means: arrays of parameters ``[n_boot, 6]``, v and v_slope."""
    n = len(samples)
    params, vf, vf_slope = [], [], []
    for _ in range(cfg.n_bootstrap):
        pick = rng.integers(0, n, size=n)
        result = fit_bands(samples[pick].mean(axis=0), path, geometry, cfg, initial=start)
        params.append(result.fit.params.to_array())
        vf.append(result.vf_1e6_m_s)
        vf_slope.append(result.vf_slope_1e6_m_s)
    return {"params": np.array(params).reshape(-1, 6), "vf": np.array(vf), "vf_slope": np.array(vf_slope)}


def convergence(samples: np.ndarray, path: KPath, geometry: BilayerGeometry, cfg: BandsConfig,
                start: swmcc.SWMcCParams, max_points: int = 12, step: int = 1) -> dict[str, list]:
    """v_F and the K-point bands from the first n samples, for n from ``step`` to N (about geometric steps,
    multiples of ``step``: 2 keeps antithetic pairs whole)."""
    n_units = len(samples) // step
    ns = step * np.unique(np.round(np.geomspace(1, n_units, min(max_points, n_units))).astype(int))
    out = {"n_samples": [], "vf_1e6_m_s": [], "bands_K_eV": [], "bands_K_err_eV": []}
    for n in ns:
        subset = samples[:n]
        result = fit_bands(subset.mean(axis=0), path, geometry, cfg, initial=start)
        out["n_samples"].append(int(n))
        out["vf_1e6_m_s"].append(result.vf_1e6_m_s)
        out["bands_K_eV"].append(subset[:, path.index_K].mean(axis=0).tolist())
        out["bands_K_err_eV"].append(standard_error(subset[:, path.index_K]).tolist())
    return out


def temperature_rng(seed: int, T: float) -> np.random.Generator:
    # One stream per temperature, fixed by (seed, T): adding a temperature does not change the others.
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(round(T * 1000)),)))


def analyse_temperature(T: float, samples: list[SampleBands], path: KPath, geometry: BilayerGeometry,
                        cfg: BandsConfig) -> dict:
    """Averages, SWMcC fit, bootstrap errors and convergence for one temperature (JSON-ready dict)."""
    stack = np.array([s.bands for s in samples])  # [n_samples, n_k, 4]
    mean, se = stack.mean(axis=0), standard_error(stack)
    best = fit_bands(mean, path, geometry, cfg)
    if not best.fit.success:
        log.warning("bands: SWMcC fit at T = %s K did not converge: %s", T, best.fit.message)
    params = best.fit.params
    result = {"T_K": float(T), "n_samples": len(samples), "vf_1e6_m_s": best.vf_1e6_m_s,
              "vf_slope_1e6_m_s": best.vf_slope_1e6_m_s, "params_eV": params.as_dict(),
              "fit_errors_eV": best.fit.errors.as_dict(), "fit_covariance_eV2": best.fit.covariance.tolist(),
              "fit_rms_eV": best.fit.rms_eV, "fit_success": best.fit.success}
    boot = None
    if len(samples) >= 2 and cfg.n_bootstrap >= 2:
        boot = bootstrap(stack, path, geometry, cfg, params, temperature_rng(cfg.seed, T))
    nan = float("nan")
    result["vf_err_1e6_m_s"] = float(boot["vf"].std(ddof=1)) if boot else nan
    result["vf_slope_err_1e6_m_s"] = float(boot["vf_slope"].std(ddof=1)) if boot else nan
    err = boot["params"].std(axis=0, ddof=1) if boot else np.full(6, nan)
    result["params_err_eV"] = dict(zip(swmcc.PARAM_NAMES, map(float, err)))
    result["bands_K_eV"] = mean[path.index_K].tolist()
    result["bands_K_err_eV"] = se[path.index_K].tolist()
    result["bands_mean_eV"] = mean.tolist()
    result["bands_err_eV"] = se.tolist()
    result["bands_fit_eV"] = swmcc.band_energies(path.k_2d, params, geometry.nn).tolist()
    result["window_weight_mean"] = float(np.mean([s.window_weight for s in samples]))
    result["sample_references_eV"] = [s.reference for s in samples]
    result["sample_names"] = [s.name for s in samples]
    result["sample_bands_eV"] = stack.tolist()
    # With antithetic pairs: convergence over whole pairs, and over one member of each pair (independent
    # draws), the comparison that shows what the pairing buys.
    # Only when every pair is complete and in order (no sample left out).
    paired = (all(s.antithetic for s in samples) and [s.index for s in samples] == list(range(len(samples)))
              and len(samples) % 2 == 0 and len(samples) >= 4)
    result["convergence"] = convergence(stack, path, geometry, cfg, params, step=2 if paired else 1)
    if paired:
        result["convergence_independent"] = convergence(stack[::2], path, geometry, cfg, params)
    return result


# --------------------------------------------------------------------------------------------------------
# The stage


def _read_structure(structure):
    return structure if hasattr(structure, "get_positions") else read_structure(structure)


def _frames_sources(paths) -> list[Path]:
    return [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]


def samples_by_temperature(frames_paths) -> tuple[dict[float, list[tuple[str, str]]], dict[float, list[str]]]:
    """The frames of ``frames_paths`` grouped by the temperature each records (``info['temperature_K']``, which
    the thermal stage writes into every sample and ``dft`` and ``infer`` carry into its frame), ascending:
    ({T: [(frames file, frame name)]}, {T: [frames files]}). Only the frames' info is read: the analysis loads
    one temperature's frames at a time (:func:`load_samples`). Every file must be in the same basis."""
    refs, files, basis_seen = {}, {}, None
    for source in map(str, _frames_sources(frames_paths)):
        frames = FramesFile(source)
        if basis_seen is not None and frames.basis != basis_seen:
            raise FramesFileError(f"{source}: basis differs from the other frames files")
        basis_seen = frames.basis
        for name in frames.names:
            recorded = frames.info(name).get("temperature_K")
            if recorded is None:
                raise BandsError(f"{source}: frame {name!r} records no temperature (info 'temperature_K'); "
                                 "analyse thermal samples of `mlepi thermal`, or frames that carry their info")
            T = float(recorded)
            refs.setdefault(T, []).append((source, name))
            if source not in files.setdefault(T, []):
                files[T].append(source)
    if not refs:
        raise BandsError(f"no frames in {[str(p) for p in _frames_sources(frames_paths)]}")
    return {T: refs[T] for T in sorted(refs)}, files


def load_samples(refs) -> list[tuple]:
    """The jobs of the sample analysis, (frame, basis, frames file), of the (frames file, frame name) ``refs``."""
    files = {source: FramesFile(source) for source in dict.fromkeys(source for source, _ in refs)}
    return [(files[source][name], files[source].basis, source) for source, name in refs]


def setup(primitive, supercell, cfg: BandsConfig):
    """(geometry, supercell mapping, k path, A(k, E) energy grid) of an analysis; structures as paths or Atoms."""
    primitive, supercell = _read_structure(primitive), _read_structure(supercell)
    geometry = bilayer_geometry(primitive)
    mapping = map_supercell(primitive, supercell, tol=cfg.map_tol_A)
    path = k_path(geometry, cfg.k_range_1_A, cfg.n_k)
    energy_grid = np.linspace(cfg.spectral_emin_eV, cfg.spectral_emax_eV, cfg.n_energy)
    return geometry, mapping, path, energy_grid


@contextlib.contextmanager
def parallel_map(workers: int):
    """``map``, or with ``workers`` > 1 the ``map`` of a pool of that many processes (results in order)."""
    if workers <= 1:
        yield map
        return
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        yield pool.map


def run(frames_paths, primitive, supercell, out_dir, config: dict | None = None, *, with_figures: bool = True,
        reference=None, workers: int = 1) -> dict:
    """Run the band analysis; write ``vf.csv``, ``bands.json``, ``spectral.h5`` and figures to ``out_dir``.

    Parameters
    ----------
    frames_paths : path or list of paths
        Frames files (``docs/data.md``); every frame with H, S blocks is one thermal sample of the supercell, its
        atoms in the order of ``supercell``, and records its temperature (:func:`samples_by_temperature`): one
        analysis per temperature found, ascending.
    primitive : path or ase.Atoms
        The 4-atom AB bilayer primitive cell (extended XYZ, ``mlepi.formats.structures``; the ``structure``
        stage's ``primitive.extxyz``).
    supercell : path or ase.Atoms
        The undisplaced reference supercell the samples were displaced from, atoms in the order of the
        frames (the ``displace`` stage's ``pristine.extxyz``).
    out_dir : path
        Output folder (created).
    config : dict, optional
        Config sections (:func:`mlepi.config.stage_config`); the stage reads the ``bands`` section
        (:class:`mlepi.config.bands.BandsConfig`); missing keys take their defaults.
    with_figures : bool
        Also draw the three figures (default); False skips them (tests, quick looks).
    reference : path, optional
        The DFT frames file of the pristine supercell: its Fermi level centres the band window of every sample.
        Default: the centre is found per sample by counting electrons at K, which a model H with states in the
        near-null space of S can throw far off (docs/bands.md).
    workers : int
        Processes that unfold samples, then fit the temperatures, in parallel (results do not depend on it).

    Returns
    -------
    dict
        The content of ``bands.json``.
    """
    cfg = BandsConfig.from_section(stage_config("bands", config)["bands"])
    out_dir = Path(out_dir)
    geometry, mapping, path, energy_grid = setup(primitive, supercell, cfg)
    refs_by_T, files_by_T = samples_by_temperature(frames_paths)
    window_center = FramesFile(reference)[0].fermi_level if reference is not None else None
    samples_by_T, rejected_by_T, members_by_T = {}, {}, {}
    analyse = functools.partial(_analyse_or_reject, path=path, mapping=mapping, cfg=cfg, energy_grid=energy_grid,
                                window_center=window_center)
    with parallel_map(workers) as run_all:
        for T, refs in refs_by_T.items():
            # Samples are independent: with several workers they are unfolded in parallel, results in order.
            # One temperature's frames in memory at a time (H and S of 4x4 samples add up).
            jobs = load_samples(refs)
            members = committee.member_jobs(jobs)  # each committee member's H of the same samples, or none
            outcomes = list(run_all(analyse, jobs + [job for member in members for job in member]))
            outcomes, member_outcomes = outcomes[:len(jobs)], outcomes[len(jobs):]
            members_by_T[T] = [member_outcomes[m * len(jobs):(m + 1) * len(jobs)] for m in range(len(members))]
            samples = [out for out in outcomes if isinstance(out, SampleBands)]
            rejected = [out for out in outcomes if not isinstance(out, SampleBands)]
            for out in rejected:
                log.warning("bands: T = %g K: sample left out: %s", T, out["reason"])
            n_total = len(samples) + len(rejected)
            if len(rejected) > cfg.max_rejected_fraction * n_total or not samples:
                raise BandsError(f"T = {T:g} K: {len(rejected)} of {n_total} samples have no clean four-band window "
                                 f"(more than bands.max_rejected_fraction = {cfg.max_rejected_fraction}); first: "
                                 f"{rejected[0]['reason']}")
            log.info("bands: T = %g K, %d samples (%d left out)", T, len(samples), len(rejected))
            samples_by_T[T], rejected_by_T[T] = samples, rejected
        # The temperatures' fits and bootstraps (seeded per temperature) are independent too: in parallel, the
        # same results as in series.
        results = list(run_all(functools.partial(analyse_temperature, path=path, geometry=geometry, cfg=cfg),
                               samples_by_T, samples_by_T.values()))
    spectra = {}
    for T, result in zip(samples_by_T, results):
        if members_by_T[T]:
            result["committee"] = committee.summary(
                samples_by_T[T], members_by_T[T], lambda bands: fit_bands(bands, path, geometry, cfg).vf_1e6_m_s,
                path.index_K)
        result["vf_model_err_1e6_m_s"] = result.get("committee", {}).get("vf_model_err_1e6_m_s", float("nan"))
        result["vf_total_err_1e6_m_s"] = committee.total_error(result["vf_err_1e6_m_s"],
                                                               result["vf_model_err_1e6_m_s"])
        result["rejected_samples"] = rejected_by_T[T]
        result["frames_files"] = files_by_T[T]
        spectra[T] = np.mean([s.spectral for s in samples_by_T[T]], axis=0)
    cfg_dict = asdict(cfg)
    document = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "units": UNITS, "config": cfg_dict,
        "provenance": record(cfg_dict, seed=cfg.seed, inputs=[r["frames_files"] for r in results]),
        "geometry": {"a_A": geometry.a, "nn_A": geometry.nn.tolist(), "K_2d_1_A": geometry.K_2d.tolist(),
                     "plane": geometry.plane.tolist(), "K_reduced": path.k_reduced[path.index_K].tolist(),
                     "supercell_matrix": mapping.supercell_matrix.tolist()},
        "path": {"distance_1_A": path.distance.tolist(), "branch": path.branch.tolist(),
                 "index_K": path.index_K, "k_reduced": path.k_reduced.tolist()},
        "temperatures": results,
    }
    write_outputs(document, spectra, energy_grid, out_dir, with_figures)
    return document
