"""Stage ``select`` of active learning: rank candidate thermal samples by where the committee disagrees.

Candidates are thermal samples a committee predicted (``mlepi infer`` with ``train.committee`` > 1: each
member's H and forces in the frame, ``docs/data.md``). What the pipeline answers is the bands near K, so a
candidate's first criterion is the committee's spread of the four band energies at K: each member's H is
unfolded at K alone, as the band analysis unfolds it (:func:`mlepi.electrons.bands.analyse_sample`, same window,
same zero), and the spread is the RMS over the four bands of the members' standard deviation (meV). The second
is the forces' spread (``info['forces_spread_meV_per_A']`` of infer). The score adds the two, each divided by
its median over the candidates, so neither unit dominates:

    score = band_spread / median(band_spread) + forces_spread / median(forces_spread)

A member whose window at K holds a spurious state (not four bands' weight) is the committee's clearest
failure: that candidate's band spread is infinite, so it ranks first. The ``per_round`` best are written as a
structure file for GPAW, each with its score and origin in ``info``.

:func:`learning` gathers each round's test-set errors (``mlepi testset``) into ``learning.csv`` and its figure:
whether the rounds bring the true error down, and whether the spread they rank by follows it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from mlepi.config import stage_config
from mlepi.config.bands import BandsConfig
from mlepi.electrons import bands, committee
from mlepi.errors import MlepiError
from mlepi.figures import plot_active_learning
from mlepi.formats.frames import FramesFile
from mlepi.formats.provenance import write_csv
from mlepi.formats.structures import write_structures

log = logging.getLogger(__name__)


class SelectError(MlepiError, ValueError):
    """The candidates cannot be ranked: no committee in their frames, or fewer candidates than asked for."""


def at_K(path: bands.KPath) -> bands.KPath:
    """The k path reduced to K alone."""
    i = path.index_K
    return bands.KPath(k_reduced=path.k_reduced[[i]], k_2d=path.k_2d[[i]], distance=path.distance[[i]],
                       branch=path.branch[[i]], index_K=0)


def band_spread_meV(frame, basis: dict, analysis: tuple, cfg: BandsConfig, window_center: float | None,
                    source: str = "") -> tuple[float, np.ndarray | None]:
    """(RMS over the four bands of the members' standard deviation at K, meV; the deviations [4], meV) of one
    committee frame; (inf, None) when a member has no clean four-band window at K."""
    geometry, mapping, path, energy_grid = analysis
    jobs = committee.member_jobs([(frame, basis, source)])
    if not jobs:
        raise SelectError(f"{source}: frame {frame.name!r} holds no committee; infer the candidates with every "
                          "member (train.committee > 1)")
    energies = []
    for ((member, member_basis, _),) in jobs:
        try:
            sample = bands.analyse_sample(member, member_basis, at_K(path), mapping, cfg, energy_grid, source,
                                          window_center=window_center)
        except bands.WindowWeightError as err:
            log.info("select: %s: %s", frame.name, err)
            return float("inf"), None
        energies.append(sample.bands[0])
    spread = 1e3 * np.std(energies, axis=0, ddof=1)
    return float(np.sqrt(np.mean(spread ** 2))), spread


def scores(band_spread, forces_spread) -> np.ndarray:
    """The module's score: each criterion over its median among the candidates (a zero median counts as 1)."""
    band_spread, forces_spread = np.asarray(band_spread, float), np.asarray(forces_spread, float)

    def scaled(values):
        finite = values[np.isfinite(values)]
        median = float(np.median(finite)) if len(finite) else 1.0
        return values / (median if median > 0 else 1.0)

    return scaled(band_spread) + scaled(forces_spread)


COLUMNS = ["name", "frames_file", "T_K", "band_spread_meV", *[f"band{b}_K_spread_meV" for b in range(1, 5)],
           "forces_spread_meV_per_A", "H_spread_meV", "score", "rank", "selected"]


def run(frames_paths, primitive, supercell, out_path, scores_path, per_round: int, config: dict | None = None, *,
        reference=None, round_index: int | None = None) -> list[dict]:
    """Rank the committee frames of ``frames_paths``; write the ``per_round`` best as ``out_path`` (extended
    XYZ) and every candidate's row in ``scores_path`` (CSV, :data:`COLUMNS`). ``primitive``, ``supercell``,
    ``reference`` (the DFT pristine frame: its Fermi level centres the window) and the ``bands`` section of
    ``config`` as for ``mlepi bands``. Returns the rows, best first."""
    # The band analysis' keys that set the bands at K (window, zero, unfolding; the stage select in the schema):
    # the candidates' bands at K are read as the answer's are.
    cfg = BandsConfig.from_section(stage_config("select", config)["bands"])
    analysis = bands.setup(primitive, supercell, cfg)
    window_center = FramesFile(reference)[0].fermi_level if reference is not None else None
    sources = [str(p) for p in ([frames_paths] if isinstance(frames_paths, (str, Path)) else frames_paths)]
    rows, structures = [], []
    for source in sources:
        frames = FramesFile(source)
        for frame in frames:
            forces_spread = frame.info.get("forces_spread_meV_per_A")
            total, per_band = band_spread_meV(frame, frames.basis, analysis, cfg, window_center, source)
            per_band = per_band if per_band is not None else np.full(4, np.inf)
            rows.append({"name": frame.name, "frames_file": source, "T_K": frame.info.get("temperature_K"),
                         "band_spread_meV": total, **{f"band{b + 1}_K_spread_meV": float(per_band[b])
                                                      for b in range(4)},
                         "forces_spread_meV_per_A": forces_spread, "H_spread_meV": frame.info.get("H_spread_meV")})
            structures.append((frame.to_atoms(), frame.info))
    if len(rows) < per_round:
        raise SelectError(f"{len(rows)} candidates in {sources}, fewer than the "
                          f"{per_round} to select (active.per_round)")
    values = scores([r["band_spread_meV"] for r in rows], [r["forces_spread_meV_per_A"] for r in rows])
    order = np.argsort(-values, kind="stable")
    selected, infos = [], []
    for rank, k in enumerate(order):
        rows[k].update(score=float(values[k]), rank=rank, selected=rank < per_round)
        if rank < per_round:
            atoms, info = structures[k]
            selected.append(atoms)
            infos.append({**info, "name": f"sel_{rank:03d}", "candidate": rows[k]["name"],
                          "candidate_file": rows[k]["frames_file"], "selection_score": float(values[k]),
                          **({} if round_index is None else {"active_round": round_index})})
    rows = [rows[k] for k in order]
    write_structures(out_path, selected, infos)
    write_csv(scores_path, rows, COLUMNS)
    return rows



LEARNING_KEYS = ("force_mae_meV_per_A", "h_mae_meV", "eig_K_image_aligned_mae_meV", "energy_mae_meV_per_atom")
LEARNING_COLUMNS = ["round", "n_train_frames", *[f"{who}_{key}" for key in LEARNING_KEYS
                                                 for who in ("mean", "worst_member")],
                    "forces_spread_meV_per_A", "H_spread_meV", "vf_static_max_abs_rel_err"]


def learning(testset_paths, out_csv, out_png) -> list[dict]:
    """One row per round (the ``testset.json`` of rounds 0, 1, ... in order) of :data:`LEARNING_COLUMNS`:
    the committee mean's and the worst member's test-set errors, the committee's spread on the test frames and
    the worst member's static-v_F error; written as ``out_csv`` and plotted as ``out_png``."""
    rows = []
    for k, path in enumerate(testset_paths):
        doc = json.loads(Path(path).read_text())
        row = {"round": k, "n_train_frames": doc.get("n_train_frames"),
               "forces_spread_meV_per_A": doc["forces_spread_meV_per_A"], "H_spread_meV": doc["H_spread_meV"],
               "vf_static_max_abs_rel_err": (doc.get("goals", {}).get("vf_static_max_abs_rel_err") or {})
               .get("worst_member")}
        for key in LEARNING_KEYS:
            values = [m[key] for m in doc["members"] if m[key] is not None]
            row[f"mean_{key}"] = doc["mean"][key]
            row[f"worst_member_{key}"] = max(values) if values else None
        rows.append(row)
    write_csv(out_csv, rows, LEARNING_COLUMNS)
    plot_active_learning(rows, out_png)
    return rows
