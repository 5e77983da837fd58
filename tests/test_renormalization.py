"""Stage ``renormalization`` (mlepi.electrons.renormalization) on the Slater–Koster bilayer: full against linearized H
(the linearization by a finite difference of the analytic model, an independent route from the model's
autograd), static lattice, special displacement and the DFT cross-check table."""

import csv
import json

import numpy as np
import pytest

from mlepi.electrons import bands, renormalization, supercell_convergence
from mlepi.formats.frames import write_frames
from mlepi.formats.provenance import record
from mlepi.formats.structures import write_structure

import bilayer_tb as bt

SMALL = {"n_k": 7, "n_bootstrap": 16, "n_energy": 51, "seed": 3}
CONFIG = {"bands": SMALL}
T = 300.0


def _keys(frame):
    return {(int(i), int(j), *map(int, r)): e for e, (i, j, r) in enumerate(zip(*frame.edge_index, frame.cell_shift))}


def _linearized(sc, u, name, step=1e-4, **info):
    """The SK frame at x0 + u with H replaced by H(0) + (dH/du).u (central difference), S kept exact."""
    full = bt.tb_frame(_moved(sc, u), name, **info)
    parts = [bt.tb_frame(_moved(sc, t * u), "x") for t in (0.0, step, -step)]
    lookups = [_keys(p) for p in parts]

    def block(k, key):
        e = lookups[k].get(key)
        return parts[k].H[e] if e is not None else 0.0

    linear_H = np.array([block(0, key) + (block(1, key) - block(2, key)) / (2 * step) for key in _keys(full)])
    full.H = linear_H
    return full


def _moved(sc, u):
    out = sc.copy()
    out.positions += u
    return out


def _write(path, frames, source="dft"):
    write_frames(path, frames, basis=bt.BASIS_PZ, source=source, parameters={}, provenance=record())
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("renorm")
    prim = bt.bilayer_primitive()
    sc = bt.supercell(prim, np.diag([3, 3, 1]))
    write_structure(d / "primitive.extxyz", prim, kind="relaxed")
    write_structure(d / "pristine.extxyz", sc, kind="pristine")
    rng = np.random.default_rng(0)
    draws = [rng.normal(size=(len(sc), 3)) * [0.03, 0.03, 0.06] for _ in range(2)]
    us = [s * u for u in draws for s in (1, -1)]  # antithetic pairs
    info = [{"temperature_K": T, "sample_index": k, "antithetic": True} for k in range(len(us))]
    full = [bt.tb_frame(_moved(sc, u), f"s{k}", **i) for k, (u, i) in enumerate(zip(us, info))]
    linear = [_linearized(sc, u, f"s{k}", **i) for k, (u, i) in enumerate(zip(us, info))]
    paths = {"full": _write(d / "full.h5", full, "hedgenet"), "linear": _write(d / "linear.h5", linear, "hedgenet"),
             "static": _write(d / "static.h5", [bt.tb_frame(sc, "pristine", temperature_K=0.0)]),
             "special": _write(d / "special.h5", [bt.tb_frame(_moved(sc, draws[0]), "zg", temperature_K=T)],
                               "hedgenet"),
             "check": _write(d / "check.h5", [full[1]])}
    for kind in ("full", "linear"):
        bands.run(paths[kind], d / "primitive.extxyz", d / "pristine.extxyz", d / f"bands_{kind}", CONFIG,
                  with_figures=False)
    return d, paths


def _run(d, paths, linear_json, out, **kwargs):
    return renormalization.run(d / "primitive.extxyz", d / "pristine.extxyz", d / "bands_full/bands.json", linear_json,
                               paths["static"], paths["static"], out, CONFIG, **kwargs)


def test_orders_static_special_and_crosscheck(setup):
    d, paths = setup
    doc = _run(d, paths, d / "bands_linear/bands.json", d / "out", special_paths=[paths["special"]],
               check_dft_paths=[paths["check"]], infer_paths=[paths["full"]])
    for name in ("renormalization.csv", "renormalization.json", "crosscheck.csv", "vf_orders.png", "crosscheck.png"):
        assert (d / "out" / name).stat().st_size > 0, name

    # The static lattice: the undisplaced supercell unfolds onto the primitive bands (test_bands), so its v_F is
    # that of the stage on an undisplaced sample; HedgeNet = DFT here.
    undisplaced = bands.run(paths["static"], d / "primitive.extxyz", d / "pristine.extxyz", d / "static_bands", CONFIG,
                            with_figures=False)
    assert doc["static"]["ml"]["vf_1e6_m_s"] == pytest.approx(undisplaced["temperatures"][0]["vf_1e6_m_s"], rel=1e-10)
    assert doc["static_vf_difference_percent"] == 0.0 and doc["static_vf_within_tolerance"]

    (row,) = doc["temperatures"]
    full = json.loads((d / "bands_full/bands.json").read_text())["temperatures"][0]
    linear = json.loads((d / "bands_linear/bands.json").read_text())["temperatures"][0]
    assert row["vf_full_1e6_m_s"] == pytest.approx(full["vf_1e6_m_s"], rel=1e-10)
    assert row["vf_linear_1e6_m_s"] == pytest.approx(linear["vf_1e6_m_s"], rel=1e-10)
    assert row["n_samples"] == 4 and row["samples_left_out"] == []
    # Antithetic samples: convergence over whole pairs, and over one member of each pair.
    assert full["convergence"]["n_samples"] == [2, 4]
    assert full["convergence_independent"]["n_samples"] == [1, 2]
    v0 = doc["static"]["ml"]["vf_1e6_m_s"]
    r_full, r_lin = row["renormalization_full_percent"], row["renormalization_linear_percent"]
    assert r_full == pytest.approx(100 * (full["vf_1e6_m_s"] / v0 - 1), rel=1e-10)
    assert row["second_order_share"] == pytest.approx(1 - r_lin / r_full, rel=1e-8)
    assert row["second_order_percent"] == pytest.approx(r_full - r_lin, rel=1e-8)
    assert row["second_order_err_percent"] > 0
    assert np.isfinite(row["second_order_share_err"]) and row["vf_full_err_1e6_m_s"] > 0
    # The linearized H is a different Hamiltonian: its bands differ from the full ones, by second order in u.
    shift_full, shift_lin = np.array(row["bands_K_shift_full_eV"]), np.array(row["bands_K_shift_linear_eV"])
    assert 1e-4 < np.abs(shift_full - shift_lin).max() < 0.1
    assert row["vf_special_1e6_m_s"] == pytest.approx(doc["special"]["300"]["vf_1e6_m_s"])

    # Cross-check of a frame against itself: sample 1 is matched by temperature and index, differences vanish.
    (check,) = doc["crosscheck"]
    assert check["sample_index"] == 1 and check["T_K"] == T
    for b in range(1, 5):
        assert check[f"band{b}_K_diff_meV"] == 0.0
    rows = list(csv.DictReader((d / "out" / "renormalization.csv").open()))
    assert list(rows[0]) == renormalization.CSV_COLUMNS
    assert float(rows[0]["second_order_share"]) == pytest.approx(row["second_order_share"], rel=1e-9)


def test_workers_give_the_same_document(setup, tmp_path):
    """Two processes (the workflow's `bands_threads`) analyse the single structures and the temperatures' bootstraps
    in parallel; every number is the one of a serial run."""
    d, paths = setup
    kwargs = {"special_paths": [paths["special"]], "check_dft_paths": [paths["check"]], "infer_paths": [paths["full"]],
              "with_figures": False}
    serial = _run(d, paths, d / "bands_linear/bands.json", tmp_path / "one", **kwargs)
    parallel = _run(d, paths, d / "bands_linear/bands.json", tmp_path / "two", workers=2, **kwargs)
    for key in ("static", "temperatures", "special", "crosscheck"):
        assert json.dumps(parallel[key], sort_keys=True) == json.dumps(serial[key], sort_keys=True), key


def test_share_is_zero_for_equal_orders_and_one_without_first_order(setup, tmp_path):
    d, paths = setup
    same = _run(d, paths, d / "bands_full/bands.json", tmp_path / "same")["temperatures"][0]
    assert same["second_order_share"] == 0.0
    assert same["second_order_percent"] == 0.0 and same["second_order_err_percent"] == 0.0
    assert same["renormalization_linear_percent"] == same["renormalization_full_percent"]
    # "Linear" samples that are all the static lattice: no first-order renormalization at all, share 1.
    static = bt.tb_frame(bt.supercell(bt.bilayer_primitive(), np.diag([3, 3, 1])), "x")
    frames = []
    for k in range(4):
        frame = bt.tb_frame(static.to_atoms(), f"s{k}", temperature_K=T, sample_index=k, antithetic=True)
        frames.append(frame)
    _write(tmp_path / "static_samples.h5", frames)
    bands.run(tmp_path / "static_samples.h5", d / "primitive.extxyz", d / "pristine.extxyz", tmp_path / "bands_static",
              CONFIG, with_figures=False)
    none = _run(d, paths, tmp_path / "bands_static/bands.json", tmp_path / "none")["temperatures"][0]
    assert none["renormalization_linear_percent"] == pytest.approx(0.0, abs=1e-8)
    assert none["second_order_share"] == pytest.approx(1.0, abs=1e-8)
    np.testing.assert_allclose(none["bands_K_shift_linear_eV"], 0.0, atol=1e-9)


def test_foreign_or_old_bands_summary_is_refused(setup, tmp_path):
    (tmp_path / "bands.json").write_text(json.dumps({"schema": "mlepi.bands", "temperatures": [{"T_K": 0}]}))
    with pytest.raises(bands.BandsError, match="per-sample bands"):
        renormalization.read_bands_summary(tmp_path / "bands.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(bands.BandsError, match="not a readable bands.json"):
        renormalization.read_bands_summary(tmp_path / "bad.json")


def test_error_budget_with_a_committee(setup, tmp_path):
    """Two members: one the Slater-Koster model, one with V_ppπ 3 % larger in the displaced samples but not in
    the static lattice (a model error that moves its renormalization by ~+3 %). Each member's renormalization,
    from the band analyses of its own frames alone, is the one the stage reports; the model error is their
    spread, the bias of a check against itself is zero, the total their sum in quadrature."""
    d, _ = setup
    prim, sc = d / "primitive.extxyz", d / "pristine.extxyz"
    pristine = bt.supercell(bt.bilayer_primitive(), np.diag([3, 3, 1]))
    rng = np.random.default_rng(5)
    us = [s * rng.normal(size=(len(pristine), 3)) * [0.03, 0.03, 0.06] for _ in range(2) for s in (1, -1)]
    members = [[bt.tb_frame(_moved(pristine, u), f"s{k}", scale_pi=scale, temperature_K=T, sample_index=k)
                for k, u in enumerate(us)] for scale in (1.0, 1.03)]
    static = bt.tb_frame(pristine, "pristine", temperature_K=0.0)

    full = _write(tmp_path / "full.h5", bt.committee_frames(members), "hedgenet")
    static_ml = _write(tmp_path / "static_ml.h5", bt.committee_frames([[static], [static]]), "hedgenet")
    static_dft = _write(tmp_path / "static_dft.h5", [static])
    out = {}
    for name, frames in (("full", full), *((f"m{m}", _write(tmp_path / f"m{m}.h5", f)) for m, f in
                                            enumerate(members))):
        out[name] = bands.run(frames, prim, sc, tmp_path / f"bands_{name}", CONFIG, with_figures=False)
    check = _write(tmp_path / "check.h5", [members[0][1]])  # "DFT" of sample 1: the unscaled model
    # A 6x6 analysis whose v_F is 0.02 below this 3x3 one's: the supercell's part of the budget
    v3 = out["full"]["temperatures"][0]["vf_1e6_m_s"]
    larger = _sized_bands(tmp_path / "bands_6x6.json", out["full"], 6, v3 - 0.02)
    supercell_convergence.summarize({3: tmp_path / "bands_full/bands.json", 6: larger}, tmp_path / "sizes")
    doc = renormalization.run(prim, sc, tmp_path / "bands_full/bands.json", tmp_path / "bands_full/bands.json",
                              static_ml, static_dft, tmp_path / "out", CONFIG, check_dft_paths=[check],
                              infer_paths=[full], supercells_path=tmp_path / "sizes/convergence.csv")
    (row,) = doc["temperatures"]
    v_static = doc["static"]["dft"]["vf_1e6_m_s"]
    assert doc["static"]["ml_members_vf_1e6_m_s"] == pytest.approx([v_static] * 2, rel=1e-10)
    expected = [100 * (out[f"m{m}"]["temperatures"][0]["vf_1e6_m_s"] / v_static - 1) for m in range(2)]
    assert row["renormalization_members_percent"] == pytest.approx(expected, rel=1e-8)
    assert 2.5 < expected[1] - expected[0] < 3.5
    assert row["renormalization_model_err_percent"] == pytest.approx(np.std(expected, ddof=1), rel=1e-8)
    # The committee's mean has V_ppπ ~1.5 % larger than the check's in the displaced sample, and none in the
    # static lattice: a bias of about +1.5 % in the renormalization.
    (checked,) = doc["crosscheck"]
    assert row["renormalization_bias_percent"] == pytest.approx(
        100 * (checked["vf_ml_1e6_m_s"] / checked["vf_dft_1e6_m_s"] - 1), rel=1e-10)
    assert 1.0 < row["renormalization_bias_percent"] < 2.0
    # The supercell's part: r of 6x6 minus r of 3x3, both against the static v_F
    assert row["supercell_largest"] == 6 and row["vf_supercell_largest_1e6_m_s"] == pytest.approx(v3 - 0.02)
    assert row["renormalization_supercell_percent"] == pytest.approx(-2 / v_static, rel=1e-6)
    within = 0.02 <= np.hypot(*[out["full"]["temperatures"][0]["vf_err_1e6_m_s"]] * 2)
    assert row["supercell_converged_from"] == (3 if within else None)
    assert ("not shown converged" in row["verdict"]) == (not within)
    assert row["renormalization_total_err_percent"] == pytest.approx(np.sqrt(
        row["renormalization_full_err_percent"] ** 2 + row["renormalization_model_err_percent"] ** 2
        + row["renormalization_bias_percent"] ** 2 + row["renormalization_supercell_percent"] ** 2), rel=1e-10)
    errors = {"samples": row["renormalization_full_err_percent"],
              "model (committee)": row["renormalization_model_err_percent"],
              "model bias (DFT cross-check)": row["renormalization_bias_percent"],
              "supercell": abs(row["renormalization_supercell_percent"])}
    assert row["limited_by"] == max(errors, key=errors.get)
    assert row["renormalization_resolved"] == (abs(row["renormalization_full_percent"])
                                               > row["renormalization_total_err_percent"])
    assert f"limited by the {row['limited_by']}" in row["verdict"]


def test_without_a_committee_the_renormalization_is_not_stated_as_resolved(setup):
    d, paths = setup
    doc = _run(d, paths, d / "bands_linear/bands.json", d / "out_single", check_dft_paths=[paths["check"]],
               infer_paths=[paths["full"]])
    (row,) = doc["temperatures"]
    assert np.isnan(row["renormalization_model_err_percent"]) and np.isnan(row["renormalization_total_err_percent"])
    assert not row["renormalization_resolved"] and row["limited_by"] is None
    assert "total error unknown" in row["verdict"]


def _sized_bands(path, document, n, vf):
    """``document`` (a bands.json) as the analysis of an n x n supercell with thermal v_F ``vf``."""
    sized = {**document, "geometry": {**document["geometry"], "supercell_matrix": [[n, 0, 0], [0, n, 0], [0, 0, 1]]},
             "temperatures": [{**r, "vf_1e6_m_s": vf} for r in document["temperatures"]]}
    path.write_text(json.dumps(sized))
    return path


def test_a_stale_or_smaller_supercell_table(setup, tmp_path):
    """A table whose 3x3 row is not this band analysis' is refused; one with no larger size leaves the
    supercell's part (and so the total) unknown."""
    d, paths = setup
    full = json.loads((d / "bands_full/bands.json").read_text())
    v3 = full["temperatures"][0]["vf_1e6_m_s"]
    stale = _sized_bands(tmp_path / "stale.json", full, 3, v3 + 0.01)
    supercell_convergence.summarize({3: stale, 6: _sized_bands(tmp_path / "6.json", full, 6, v3)}, tmp_path / "a")
    with pytest.raises(bands.BandsError, match="stale"):
        _run(d, paths, d / "bands_linear/bands.json", tmp_path / "out_a",
             supercells_path=tmp_path / "a/convergence.csv")
    supercell_convergence.summarize({2: _sized_bands(tmp_path / "2.json", full, 2, v3),
                                     3: d / "bands_full/bands.json"}, tmp_path / "b")
    rows = supercell_convergence.read_convergence(tmp_path / "b/convergence.csv")
    term = renormalization.supercell_term(rows, 3, T, v3, v3, "b")
    assert term["supercell_largest"] is None and np.isnan(term["renormalization_supercell_percent"])
