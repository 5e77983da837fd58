"""Stage ``renormalization``: how much of the thermal band renormalization is second-order EPI, and is it right.

Inputs are the two band analyses of the same HedgeNet samples (``mlepi bands``): with the full predicted H(u)
and with its linearization H(0) + (dH/du).u (``mlepi linearize``), plus single structures analysed here with
the same unfolding, band reading and SWMcC fit (:mod:`mlepi.electrons.bands`):

- **static lattice**: the pristine supercell, DFT and HedgeNet. The reference of every renormalization, and
  the check that the model's static v_F agrees with DFT's (the issue asks for 1 %).
- **special displacement**: the Zacharias-Giustino configuration of each temperature (``mlepi thermal
  --purpose special``), a one-shot estimate to set beside the Monte Carlo average.
- **DFT cross-check**: GPAW on some of the very supercells HedgeNet predicted (``mlepi dft --index``); their
  band energies at K side by side.

Per temperature, with v(static) the model's static value,

    renormalization (%)   r = 100 (v(T) / v(static) − 1)        for the full and the linear H
    second order (%)      r_full − r_lin = 100 (v_full(T) − v_lin(T)) / v(static)
    second-order share    s = 1 − (v_lin(T) − v(static)) / (v_full(T) − v(static))

and the same for the four band energies at K. Errors come from a paired bootstrap over the samples (the
full and linear values of one resampling use the same samples), seeded like ``mlepi bands``, so the error of
the second-order part includes the correlation of the two. The share is a ratio of two differences: when
the full renormalization is within its error of zero the share is not defined by the data
(``share_resolved`` false), while the second-order part r_full − r_lin still is.

The error budget of r_full (:func:`error_budget`): beside the sampling error, the model error (the spread of
the committee members' own renormalizations, when ``mlepi infer`` ran a committee), the bias the DFT
cross-check shows and the supercell's part (r of the largest supercell of ``mlepi supercell_convergence`` minus
this one's), in quadrature; r is stated as resolved only when it exceeds that total, and each temperature
says which of the four limits it (``verdict``).
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mlepi import figures
from mlepi.config import stage_config
from mlepi.config.bands import BandsConfig
from mlepi.electrons import committee, supercell_convergence
from mlepi.electrons.band_files import N_BANDS, json_safe
from mlepi.electrons.bands import BandsError, analyse_sample, fit_bands, parallel_map, setup, temperature_rng
from mlepi.formats.frames import FramesFile, FramesFileError
from mlepi.formats.provenance import record, write_csv, write_json

log = logging.getLogger(__name__)

SCHEMA = "mlepi.renormalization"
SCHEMA_VERSION = 1
STATIC_TOLERANCE = 0.01  # relative v_F difference HedgeNet vs DFT on the static lattice the issue allows


def read_bands_summary(path) -> dict:
    """``bands.json`` of ``mlepi bands``, checked for the per-sample bands this stage needs."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise BandsError(f"{path}: not a readable bands.json ({err}); rerun `mlepi bands`") from None
    if document.get("schema") != "mlepi.bands" or not all(
            "sample_bands_eV" in r for r in document.get("temperatures", [])):
        raise BandsError(f"{path}: not a bands.json with per-sample bands (schema mlepi.bands); rerun `mlepi bands`")
    return document


class Analysis:
    """The unfolding, band reading and fit of :mod:`mlepi.electrons.bands`, for single structures."""

    def __init__(self, primitive, supercell, cfg: BandsConfig):
        self.cfg = cfg
        self.geometry, self.mapping, self.path, self.energy_grid = setup(primitive, supercell, cfg)

    def single(self, frame, basis: dict, window_center: float | None, source: str) -> dict:
        """v_F (fit and slope), SWMcC parameters and the four band energies at K of one structure."""
        sample = analyse_sample(frame, basis, self.path, self.mapping, self.cfg, self.energy_grid, source,
                                window_center=window_center)
        fit = fit_bands(sample.bands, self.path, self.geometry, self.cfg)
        return {"name": frame.name, "vf_1e6_m_s": fit.vf_1e6_m_s, "vf_slope_1e6_m_s": fit.vf_slope_1e6_m_s,
                "params_eV": fit.fit.params.as_dict(), "fit_rms_eV": fit.fit.rms_eV,
                "bands_K_eV": sample.bands[self.path.index_K].tolist(), "bands_eV": sample.bands.tolist()}

    def vf_of_mean(self, sample_bands: np.ndarray) -> float:
        return fit_bands(sample_bands.mean(axis=0), self.path, self.geometry, self.cfg).vf_1e6_m_s

    def single_job(self, job: tuple) -> dict:
        """:meth:`single` of ``job = (frame, basis, window_center, source)`` (one task of a process pool)."""
        return self.single(*job)


def _single_frame(path) -> tuple:
    frames = FramesFile(path)
    if len(frames) != 1:
        raise FramesFileError(f"{path}: holds {len(frames)} frames, expected the one structure")
    return frames[0], frames.basis


def _temperature_of(frame, source) -> float:
    if "temperature_K" not in frame.info:
        raise FramesFileError(f"{source}: frame {frame.name!r} records no temperature_K")
    return float(frame.info["temperature_K"])


def orders(full: dict, linear: dict, static_vf: float, static_K: np.ndarray, analysis: Analysis,
           n_bootstrap: int, seed: int) -> dict:
    """Renormalization of v_F and of the K energies, full vs linear H, with paired-bootstrap errors (one T)."""
    names = [n for n in full["sample_names"] if n in set(linear["sample_names"])]
    pick_f = [full["sample_names"].index(n) for n in names]
    pick_l = [linear["sample_names"].index(n) for n in names]
    bands_f = np.asarray(full["sample_bands_eV"])[pick_f]  # [n, n_k, 4], samples both analyses kept
    bands_l = np.asarray(linear["sample_bands_eV"])[pick_l]
    iK = analysis.path.index_K

    # Every quantity of one resampling, as named slices of one vector (bootstrap errors element by element).
    layout = {"vf": 3, "dK_full": N_BANDS, "dK_linear": N_BANDS, "share_K": N_BANDS, "dK_second": N_BANDS}
    bounds = dict(zip(layout, np.cumsum([0, *layout.values()])[:-1]))

    def quantities(idx):
        vf_f, vf_l = analysis.vf_of_mean(bands_f[idx]), analysis.vf_of_mean(bands_l[idx])
        dK_f, dK_l = bands_f[idx, iK].mean(axis=0) - static_K, bands_l[idx, iK].mean(axis=0) - static_K
        return np.concatenate([[vf_f, vf_l, _share(vf_f - static_vf, vf_l - static_vf)], dK_f, dK_l,
                               _share(dK_f, dK_l), dK_f - dK_l])

    def part(values, name):
        return values[bounds[name]:bounds[name] + layout[name]]

    n = len(names)
    best = quantities(np.arange(n))
    if n >= 2 and n_bootstrap >= 2:
        rng = temperature_rng(seed, full["T_K"])
        boot = np.array([quantities(rng.integers(0, n, size=n)) for _ in range(n_bootstrap)])
        err = np.nanstd(boot, axis=0, ddof=1)
        second_err = np.std(boot[:, 0] - boot[:, 1], ddof=1)  # paired: the same samples in both
    else:
        err, second_err = np.full_like(best, np.nan), np.nan
    vf_f, vf_l, share = best[:3]
    return {
        "T_K": full["T_K"], "n_samples": n,
        "samples_left_out": sorted((set(full["sample_names"]) | set(linear["sample_names"])) - set(names)),
        "vf_full_1e6_m_s": vf_f, "vf_full_err_1e6_m_s": err[0],
        "vf_linear_1e6_m_s": vf_l, "vf_linear_err_1e6_m_s": err[1],
        "renormalization_full_percent": 100 * (vf_f / static_vf - 1),
        "renormalization_linear_percent": 100 * (vf_l / static_vf - 1),
        # v(static) is one deterministic structure: the error of r is the bootstrap error of v(T).
        "renormalization_full_err_percent": 100 * err[0] / static_vf,
        "renormalization_linear_err_percent": 100 * err[1] / static_vf,
        # What the second and higher orders add to v_F, r_full − r_lin, with its paired-bootstrap error:
        # defined whatever the size of the renormalization itself.
        "second_order_percent": 100 * (vf_f - vf_l) / static_vf,
        "second_order_err_percent": 100 * second_err / static_vf,
        "second_order_share": share, "second_order_share_err": err[2],
        # Resolved: the full renormalization is more than two bootstrap errors from zero.
        "share_resolved": bool(np.isfinite(err[0]) and abs(vf_f - static_vf) > 2 * err[0]),
        "bands_K_shift_full_eV": part(best, "dK_full").tolist(),
        "bands_K_shift_full_err_eV": part(err, "dK_full").tolist(),
        "bands_K_shift_linear_eV": part(best, "dK_linear").tolist(),
        "bands_K_shift_linear_err_eV": part(err, "dK_linear").tolist(),
        "bands_K_second_order_eV": part(best, "dK_second").tolist(),
        "bands_K_second_order_err_eV": part(err, "dK_second").tolist(),
        "bands_K_second_order_share": part(best, "share_K").tolist(),
        "bands_K_second_order_share_err": part(err, "share_K").tolist(),
    }


def error_budget(entry: dict, committee_T: dict | None, static_members_vf: list[float], checks: list[dict],
                 static: dict, supercell: dict) -> dict:
    """The errors of the full renormalization r(T) at one temperature, and whether r exceeds them.

    - sampling: the bootstrap over samples (``renormalization_full_err_percent``);
    - model: the committee's spread of r, each member's thermal v_F over its own static v_F
      (``committee_T``: the band analysis' committee summary; NaN without a committee);
    - bias: what the DFT cross-check says of the model's v_F ratio, mean over the checked samples of
      v_ML / v_DFT against the static lattice's v_ML / v_DFT (a bias common to both cancels in r; NaN without
      checks);
    - supercell: ``supercell``, of :func:`supercell_term`: r of the largest supercell HedgeNet sampled minus
      this one's (NaN without a larger size);
    - total: the four in quadrature (NaN when one is unknown). r is resolved when |r| exceeds its total error;
      the largest of the four is what limits the answer.
    """
    nan = float("nan")
    r_members, model = [], nan
    if committee_T is not None and static_members_vf:
        r_members = (100 * (np.asarray(committee_T["vf_members_1e6_m_s"]) / np.asarray(static_members_vf) - 1))
        model = float(np.std(r_members, ddof=1))
    ratios = [row["vf_ml_1e6_m_s"] / row["vf_dft_1e6_m_s"] for row in checks]
    static_ratio = static["ml"]["vf_1e6_m_s"] / static["dft"]["vf_1e6_m_s"]
    bias = 100 * (float(np.mean(ratios)) - static_ratio) if ratios else nan
    sampling = entry["renormalization_full_err_percent"]
    size = supercell["renormalization_supercell_percent"]
    parts = {"samples": sampling, "model (committee)": model, "model bias (DFT cross-check)": abs(bias),
             "supercell": abs(size)}
    total = float(np.sqrt(sum(v ** 2 for v in parts.values())))
    r = entry["renormalization_full_percent"]
    resolved = bool(np.isfinite(total) and abs(r) > total)
    limited = max(parts, key=lambda k: parts[k]) if np.isfinite(total) else None
    largest = supercell["supercell_largest"]
    verdict = (f"r = {r:+.2f} % ± {total:.2f} % (samples {sampling:.2f}, committee {model:.2f}, DFT bias "
               f"{bias:+.2f}, supercell {size:+.2f}"
               + (f" from {largest}x{largest}" if largest else "") + f"): {'resolved' if resolved else 'not resolved'}"
               + (f", limited by the {limited}" if limited else ", total error unknown")
               + (f"; the {largest}x{largest} v_F is not shown converged in size"
                  if largest and supercell["supercell_converged_from"] is None else ""))
    return {"renormalization_members_percent": list(map(float, r_members)),
            "renormalization_model_err_percent": model, "renormalization_bias_percent": bias,
            "renormalization_total_err_percent": total, "renormalization_resolved": resolved,
            "limited_by": limited, "verdict": verdict, **supercell}


def supercell_term(rows: list[dict] | None, n: int, T_K: float, vf: float, static_vf: float, source) -> dict:
    """The supercell's part of the renormalization at ``T_K``: r of the largest size in the convergence table
    ``rows`` (:func:`mlepi.electrons.supercell_convergence.read_convergence`, from ``source``) minus r of this
    analysis' n x n supercell, whose thermal v_F is ``vf``. Both against ``static_vf``: the undisplaced lattice has
    the primitive cell's period, so its v_F does not depend on the supercell. NaN when the table is missing or
    holds no size larger than n; ``supercell_converged_from``: the size from which v_F is within error of the
    largest (None: not shown converged)."""
    term = {"supercell_largest": None, "vf_supercell_largest_1e6_m_s": float("nan"),
            "renormalization_supercell_percent": float("nan"), "supercell_converged_from": None}
    if rows is None:
        return term
    at_T = {r["supercell"]: r for r in rows if r["T_K"] == T_K}
    if n not in at_T:
        raise BandsError(f"{source}: no {n}x{n} row at T = {T_K:g} K; rerun `mlepi supercell_convergence` with the "
                         "workflow's bands.json")
    if abs(at_T[n]["vf_1e6_m_s"] - vf) > 1e-6 * abs(vf):
        raise BandsError(f"{source}: the {n}x{n} v_F at {T_K:g} K is {at_T[n]['vf_1e6_m_s']:.6f}, the band analysis' "
                         f"{vf:.6f}: the table is stale; rerun `mlepi supercell_convergence`")
    largest = max(at_T)
    if largest <= n:
        return term
    return {"supercell_largest": largest, "vf_supercell_largest_1e6_m_s": at_T[largest]["vf_1e6_m_s"],
            "renormalization_supercell_percent": 100 * (at_T[largest]["vf_1e6_m_s"] - vf) / static_vf,
            "supercell_converged_from": supercell_convergence.converged_size(rows, T_K)}


def _share(delta_full, delta_linear):
    """1 − Δ_lin/Δ_full, NaN where Δ_full is 0."""
    delta_full, delta_linear = np.asarray(delta_full, float), np.asarray(delta_linear, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(delta_full != 0, 1.0 - delta_linear / delta_full, np.nan)


def crosscheck_pairs(dft_paths, infer_paths, window_center: float | None) -> list[tuple]:
    """ML against DFT on the same displaced supercells: per DFT frame, (temperature K, sample index, the job of
    :meth:`Analysis.single_job` for it (its own Fermi level centres its window), the job for the HedgeNet frame
    of the same temperature and sample index (centred on ``window_center``))."""
    ml_frames = {}
    for path in infer_paths:
        frames = FramesFile(path)
        for frame in frames:
            key = (_temperature_of(frame, path), int(frame.info.get("sample_index", -1)))
            ml_frames[key] = (frame, frames.basis, path)
    pairs = []
    for path in dft_paths:
        dft_frame, dft_basis = _single_frame(path)
        T, index = _temperature_of(dft_frame, path), int(dft_frame.info.get("sample_index", -1))
        if (T, index) not in ml_frames:
            raise FramesFileError(f"{path}: no HedgeNet frame of T = {T} K, sample {index} among {list(infer_paths)}")
        ml_frame, ml_basis, ml_path = ml_frames[(T, index)]
        if np.abs(ml_frame.positions - dft_frame.positions).max() > 1e-6:
            raise FramesFileError(f"{path} and {ml_path}: sample {index} at {T} K has different positions; the "
                                  "DFT check must run on the inferred structure")
        pairs.append((T, index, (dft_frame, dft_basis, dft_frame.fermi_level, str(path)),
                      (ml_frame, ml_basis, window_center, str(ml_path))))
    return pairs


def crosscheck_rows(pairs: list[tuple], analysed: list[dict]) -> list[dict]:
    """Rows of ``crosscheck.csv`` (band energies at K, single-sample v_F) from :func:`crosscheck_pairs` and the
    analyses of their jobs, in the same order (DFT, HedgeNet, DFT, ...)."""
    rows = []
    for (T, index, *_), dft, ml in zip(pairs, analysed[::2], analysed[1::2]):
        row = {"T_K": T, "sample_index": index, "vf_dft_1e6_m_s": dft["vf_1e6_m_s"], "vf_ml_1e6_m_s": ml["vf_1e6_m_s"]}
        for b in range(N_BANDS):
            row[f"band{b + 1}_K_dft_eV"] = dft["bands_K_eV"][b]
            row[f"band{b + 1}_K_ml_eV"] = ml["bands_K_eV"][b]
            row[f"band{b + 1}_K_diff_meV"] = 1e3 * (ml["bands_K_eV"][b] - dft["bands_K_eV"][b])
        rows.append(row)
    return sorted(rows, key=lambda r: (r["T_K"], r["sample_index"]))


def run(primitive, supercell, bands_path, bands_linear_path, static_ml_path, static_dft_path, out_dir,
        config: dict | None = None, *, special_paths=(), check_dft_paths=(), infer_paths=(), supercells_path=None,
        with_figures: bool = True, workers: int = 1) -> dict:
    """Write ``renormalization.csv``, ``crosscheck.csv``, ``renormalization.json`` and two figures to ``out_dir``.

    ``config``: config sections (:func:`mlepi.config.stage_config`); the stage reads the ``bands`` section, as
    the band analyses do. ``bands_path``, ``bands_linear_path``:
    ``bands.json`` of the full and the linearized samples. ``static_ml_path``, ``static_dft_path``: frames
    files of the pristine supercell (HedgeNet, DFT); the DFT Fermi level centres the band window of every
    HedgeNet structure, as in ``mlepi bands --reference``. ``special_paths``: HedgeNet frames of the special
    displacements (one per temperature). ``check_dft_paths``: DFT frames of inferred samples, matched by
    temperature and sample index to the frames of ``infer_paths``. ``supercells_path``: ``convergence.csv`` of
    ``mlepi supercell_convergence`` (the supercell's part of the error budget; without it, that part and the
    total are unknown). ``workers``: processes that analyse these
    single structures in parallel (results do not depend on it).
    """
    cfg = BandsConfig.from_section(stage_config("renormalization", config)["bands"])
    out_dir = Path(out_dir)
    analysis = Analysis(primitive, supercell, cfg)
    full, linear = read_bands_summary(bands_path), read_bands_summary(bands_linear_path)
    sizes = supercell_convergence.read_convergence(supercells_path) if supercells_path else None
    n_side = round(np.sqrt(abs(np.linalg.det(np.asarray(full["geometry"]["supercell_matrix"], float)))))
    dft_frame, dft_basis = _single_frame(static_dft_path)
    ml_frame, ml_basis = _single_frame(static_ml_path)
    window_center = dft_frame.fermi_level
    special_frames = {}
    for path in special_paths:
        frame, basis = _single_frame(path)
        special_frames[_temperature_of(frame, path)] = (frame, basis, window_center, str(path))
    pairs = crosscheck_pairs(check_dft_paths, infer_paths, window_center)
    # Each committee member's static lattice (the reference of its own renormalization), or none
    static_members = [(frame, basis, window_center, source) for ((frame, basis, source),) in
                      committee.member_jobs([(ml_frame, ml_basis, str(static_ml_path))])]
    # The single structures are independent: unfolded in parallel with several workers, results in order.
    jobs = [(dft_frame, dft_basis, window_center, str(static_dft_path)),
            (ml_frame, ml_basis, window_center, str(static_ml_path)),
            *special_frames.values(), *(job for *_, dft_job, ml_job in pairs for job in (dft_job, ml_job)),
            *static_members]
    linear_by_T = {r["T_K"]: r for r in linear["temperatures"]}
    for result in full["temperatures"]:
        if result["T_K"] not in linear_by_T:
            raise BandsError(f"{bands_linear_path}: no T = {result['T_K']} K, which {bands_path} has; analyse the "
                             "same samples")
    # Independent pieces (the single structures, then each temperature's bootstrap, seeded per temperature):
    # in parallel with several workers, results in order and the same as with one.
    with parallel_map(workers) as run_all:
        analysed = list(run_all(analysis.single_job, jobs))
        static = {"dft": analysed[0], "ml": analysed[1]}
        static_vf, static_K = static["ml"]["vf_1e6_m_s"], np.asarray(static["ml"]["bands_K_eV"])
        per_T = list(run_all(functools.partial(orders, static_vf=static_vf, static_K=static_K, analysis=analysis,
                                               n_bootstrap=cfg.n_bootstrap, seed=cfg.seed),
                             full["temperatures"], [linear_by_T[r["T_K"]] for r in full["temperatures"]]))
    special = dict(zip(special_frames, analysed[2:2 + len(special_frames)]))
    checks = crosscheck_rows(pairs, analysed[2 + len(special_frames):2 + len(special_frames) + 2 * len(pairs)])
    static_members_vf = [r["vf_1e6_m_s"] for r in analysed[len(analysed) - len(static_members):]]
    if static_members_vf:
        static["ml_members_vf_1e6_m_s"] = static_members_vf
        static["ml_model_err_1e6_m_s"] = float(np.std(static_members_vf, ddof=1))
    static_difference = static["ml"]["vf_1e6_m_s"] / static["dft"]["vf_1e6_m_s"] - 1
    if abs(static_difference) > STATIC_TOLERANCE:
        log.warning("renormalization: static-lattice v_F of HedgeNet differs from DFT by %.2f %% (more than %g %%)",
                    100 * static_difference, 100 * STATIC_TOLERANCE)
    full_by_T = {r["T_K"]: r for r in full["temperatures"]}
    for entry in per_T:
        T = entry["T_K"]
        if T in special:
            entry["vf_special_1e6_m_s"] = special[T]["vf_1e6_m_s"]
            entry["bands_K_shift_special_eV"] = (np.asarray(special[T]["bands_K_eV"]) - static_K).tolist()
        size = supercell_term(sizes, n_side, T, full_by_T[T]["vf_1e6_m_s"], static_vf, supercells_path)
        entry.update(error_budget(entry, full_by_T[T].get("committee"), static_members_vf,
                                  [row for row in checks if row["T_K"] == T], static, size))
        log.info("renormalization: T = %g K: %s", T, entry["verdict"])
    document = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "units": {"energy": "eV", "velocity": "1e6 m/s", "temperature": "K"},
        "static": static, "static_vf_difference_percent": 100 * static_difference,
        "static_vf_within_tolerance": abs(static_difference) <= STATIC_TOLERANCE,
        "temperatures": per_T, "special": {f"{T:g}": v for T, v in special.items()}, "crosscheck": checks,
        "config": asdict(cfg),
        "provenance": record(asdict(cfg), seed=cfg.seed, inputs=[
            str(path) for path in (bands_path, bands_linear_path, static_ml_path, static_dft_path, supercells_path)
            if path]),
    }
    write_outputs(document, out_dir, with_figures)
    return document


CSV_COLUMNS = ["T_K", "n_samples", "vf_static_dft_1e6_m_s", "vf_static_ml_1e6_m_s", "vf_full_1e6_m_s",
               "vf_full_err_1e6_m_s", "vf_linear_1e6_m_s", "vf_linear_err_1e6_m_s", "vf_special_1e6_m_s",
               "renormalization_full_percent", "renormalization_full_err_percent",
               "renormalization_model_err_percent", "renormalization_bias_percent",
               "renormalization_supercell_percent", "supercell_largest", "vf_supercell_largest_1e6_m_s",
               "supercell_converged_from",
               "renormalization_total_err_percent", "renormalization_resolved", "limited_by",
               "renormalization_linear_percent", "renormalization_linear_err_percent",
               "second_order_percent", "second_order_err_percent", "second_order_share", "second_order_share_err",
               "share_resolved"] + [
    f"band{b}_K_shift_{kind}_eV" for kind in ("full", "linear", "special") for b in range(1, N_BANDS + 1)] + [
    f"band{b}_K_second_order{suffix}_eV" for suffix in ("", "_err") for b in range(1, N_BANDS + 1)]


def write_outputs(document: dict, out_dir: Path, with_figures: bool = True) -> None:
    static = document["static"]
    rows = []
    for entry in document["temperatures"]:
        row = {**entry, "vf_static_dft_1e6_m_s": static["dft"]["vf_1e6_m_s"],
               "vf_static_ml_1e6_m_s": static["ml"]["vf_1e6_m_s"],
               "vf_special_1e6_m_s": entry.get("vf_special_1e6_m_s")}
        for kind in ("full", "linear", "special"):
            shifts = entry.get(f"bands_K_shift_{kind}_eV") or [None] * N_BANDS
            row.update({f"band{b + 1}_K_shift_{kind}_eV": shifts[b] for b in range(N_BANDS)})
        for suffix in ("", "_err"):
            values = entry[f"bands_K_second_order{suffix}_eV"]
            row.update({f"band{b + 1}_K_second_order{suffix}_eV": values[b] for b in range(N_BANDS)})
        rows.append(row)
    write_csv(out_dir / "renormalization.csv", rows, CSV_COLUMNS)
    check_columns = ["T_K", "sample_index", "vf_dft_1e6_m_s", "vf_ml_1e6_m_s"] + [
        f"band{b}_K_{kind}" for b in range(1, N_BANDS + 1) for kind in ("dft_eV", "ml_eV", "diff_meV")]
    write_csv(out_dir / "crosscheck.csv", document["crosscheck"], check_columns)
    write_json(out_dir / "renormalization.json", json_safe(document))
    if with_figures:
        figures.plot_vf_orders(document, out_dir / "vf_orders.png")
        figures.plot_crosscheck(document["crosscheck"], out_dir / "crosscheck.png")
