"""Stage ``bands`` (mlepi.electrons.bands): config, geometry, band selection and whole runs on synthetic samples
(Slater–Koster bilayer frames, undisplaced and randomly displaced 3×3 supercells)."""

import csv
import json

import h5py
import numpy as np
import pytest

from mlepi.config.bands import BandsConfig
from mlepi.electrons import bands, swmcc, tb
from mlepi.electrons.unfold import spectral_function, unfold
from mlepi.formats.frames import FramesFileError, write_frames
from mlepi.formats.provenance import record
from mlepi.formats.structures import write_structure

import bilayer_tb as bt

SMALL = {"n_k": 9, "n_bootstrap": 8, "n_energy": 101, "seed": 7}
CONFIG = {"bands": SMALL}  # what bands.run takes: config sections


@pytest.fixture(scope="module")
def cells():
    prim = bt.bilayer_primitive()
    return prim, bt.supercell(prim, np.diag([3, 3, 1]), seed=11)


def _frames_file(path, atoms_list, T, **frame_kwargs):
    frames = [bt.tb_frame(atoms, f"sample{i}", temperature_K=T, sample_index=i, **frame_kwargs)
              for i, atoms in enumerate(atoms_list)]
    write_frames(path, frames, basis=bt.BASIS_PZ, source="dft", parameters={"model": "Slater-Koster p_z"},
                 provenance=record())
    return path


# ------------------------------------------------------------------------------------ geometry, path


def test_bilayer_geometry_and_path(cells):
    prim, _ = cells
    geometry = bands.bilayer_geometry(prim)
    assert geometry.a == pytest.approx(bt.A)
    np.testing.assert_allclose(np.linalg.norm(geometry.nn, axis=1), bt.A_CC, rtol=1e-12)
    path = bands.k_path(geometry, 0.1, 5)
    k_K = path.k_reduced[path.index_K]
    # K is a zone corner: three times it is a reciprocal lattice vector, and it is not Γ-equivalent.
    np.testing.assert_allclose(3 * k_K, np.rint(3 * k_K), atol=1e-12)
    assert abs(swmcc.structure_factor(path.k_2d[path.index_K], geometry.nn)[0]) < 1e-12
    np.testing.assert_allclose(np.linalg.norm(path.k_2d - path.k_2d[path.index_K], axis=1), path.q, atol=1e-12)
    np.testing.assert_allclose(path.distance, np.linspace(-0.1, 0.1, 9), atol=1e-12)


def test_bilayer_geometry_rejects_aa_stacking():
    aa = bt.bilayer_primitive()
    aa.positions[3] = aa.positions[0] + [0, 0, bt.D_INT]
    with pytest.raises(bands.BandsError, match="expected 1"):
        bands.bilayer_geometry(aa)


# ------------------------------------------------------------------------------------ band selection


def test_select_bands_centroid_and_max_weight():
    e = np.array([[-2.0, -0.5, -0.1, 0.0, 0.1, 0.2, 0.6, 3.0]])
    w = np.array([[1.0, 1.0, 0.6, 0.0, 0.4, 1.0, 1.0, 1.0]])
    got, total = bands.select_bands(e, w, 0.0, 1.0, "centroid")
    np.testing.assert_allclose(got[0], [-0.5, -0.02, 0.2, 0.6])  # a band split over ±0.1: its centroid
    assert total[0] == pytest.approx(4.0)
    got, _ = bands.select_bands(e, w, 0.0, 1.0, "max_weight")
    np.testing.assert_allclose(got[0], [-0.5, -0.1, 0.2, 0.6])  # the larger part of the split band


# ---------------------------------------------------------------------------------------------- runs


def test_run_on_undisplaced_samples_reproduces_primitive_fit(cells, tmp_path):
    """Unfolded undisplaced supercells give exactly the primitive bands, so the whole stage must return the
    SWMcC fit of the primitive bands, with zero bootstrap error."""
    prim, sc = cells
    path_file = _frames_file(tmp_path / "T0.h5", [sc, sc], 0.0)
    write_structure(tmp_path / "primitive.extxyz", prim, kind="relaxed")  # the stage reads files
    write_structure(tmp_path / "pristine.extxyz", sc, kind="pristine")
    doc = bands.run([path_file], tmp_path / "primitive.extxyz", tmp_path / "pristine.extxyz", tmp_path / "out",
                    CONFIG, with_figures=False)
    geometry = bands.bilayer_geometry(prim)
    path = bands.k_path(geometry, 0.1, SMALL["n_k"])
    e_prim = tb.eigenvalues(bt.tb_frame(prim, "prim"), bt.BASIS_PZ, path.k_reduced)
    e_prim -= 0.5 * (e_prim[path.index_K, 1] + e_prim[path.index_K, 2])
    direct = swmcc.fit_swmcc(path.k_2d, e_prim, geometry.a, nn=geometry.nn)
    result = doc["temperatures"][0]
    np.testing.assert_allclose(result["bands_mean_eV"], e_prim, atol=1e-6)
    np.testing.assert_allclose([result["params_eV"][p] for p in swmcc.PARAM_NAMES], direct.params.to_array(),
                               atol=1e-6)
    assert result["vf_1e6_m_s"] == pytest.approx(swmcc.fermi_velocity(direct.params.gamma0, geometry.a))
    assert result["vf_err_1e6_m_s"] < 1e-9
    assert result["vf_slope_1e6_m_s"] == pytest.approx(result["vf_1e6_m_s"], rel=0.01)
    # Bernal bilayer at K: touching pair at zero, γ1-split pair about ±γ1.
    np.testing.assert_allclose(result["bands_K_eV"][1:3], 0.0, atol=1e-9)
    assert result["bands_K_eV"][3] - result["bands_K_eV"][0] == pytest.approx(2 * result["params_eV"]["gamma1"],
                                                                              rel=0.02)


def test_run_on_displaced_samples_writes_everything(cells, tmp_path):
    prim, sc = cells
    paths = {}
    for T, sigma in ((100.0, 0.005), (300.0, 0.01)):
        samples = [bt.displaced(sc, sigma, 2 * sigma, seed=int(T) + i) for i in range(3)]
        paths[T] = _frames_file(tmp_path / f"T{T:g}.h5", samples, T)
    out = tmp_path / "out"
    doc = bands.run(list(paths.values()), prim, sc, out, CONFIG)

    for name in ("vf.csv", "bands.json", "spectral.h5", "spectral_function.png", "vf.png", "convergence.png"):
        assert (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*tmp*"))  # atomic writes leave no temporaries
    rows = list(csv.DictReader((out / "vf.csv").open()))
    assert [float(r["T_K"]) for r in rows] == [100.0, 300.0]
    assert list(rows[0]) == bands.CSV_COLUMNS
    for row in rows:
        assert 0.7 < float(row["vf_1e6_m_s"]) < 1.0
        assert 0 < float(row["vf_err_1e6_m_s"]) < 0.05
        assert float(row["vf_slope_1e6_m_s"]) == pytest.approx(float(row["vf_1e6_m_s"]), rel=0.05)
        assert int(row["n_samples"]) == 3
        assert float(row["band4_K_eV"]) - float(row["band1_K_eV"]) > 0.8  # 2γ1 of this model ≈ 1.0 eV

    saved = json.loads((out / "bands.json").read_text())
    assert saved["schema"] == bands.SCHEMA and saved["provenance"]["seed"] == SMALL["seed"]
    assert saved["provenance"]["config_hash"]
    assert saved["temperatures"][1]["convergence"]["n_samples"][-1] == 3
    with h5py.File(out / "spectral.h5") as h5:
        assert h5.attrs["schema"] == bands.SPECTRAL_SCHEMA
        A = h5["T_300K/A"][()]
        assert A.shape == (2 * SMALL["n_k"] - 1, SMALL["n_energy"])
        assert np.all(A >= 0)

    # Seeded bootstrap: reproducible; samples unfolded by two worker processes: the same numbers.
    again = bands.run(list(paths.values()), prim, sc, tmp_path / "again", CONFIG, with_figures=False, workers=2)
    for key in ("vf_1e6_m_s", "vf_err_1e6_m_s", "params_eV"):
        assert again["temperatures"][1][key] == doc["temperatures"][1][key], key


def test_sample_from_windowed_unfolding_equals_the_full_solution(cells):
    """analyse_sample solves only for the states near the band window; against every state unfolded: the same
    bands, window weights and centre, and A(k, E) without the tails of the far states to < 0.1 % of its peak."""
    prim, sc = cells
    cfg = BandsConfig.from_section(SMALL)
    geometry, mapping, path, grid = bands.setup(prim, sc, cfg)
    frame = bt.tb_frame(bt.displaced(sc, 0.02, 0.04, seed=5), "sample")
    sample = bands.analyse_sample(frame, bt.BASIS_PZ, path, mapping, cfg, grid)

    energies, weights = unfold(frame, bt.BASIS_PZ, path.k_reduced, mapping)  # every state
    assert np.mean(np.abs(energies - sample.reference) > 2.0) > 0.3  # the window does leave states out
    center = bands.midgap_by_count(energies[path.index_K], bands.n_valence_electrons(frame.numbers, bt.BASIS_PZ))
    expected, total = bands.select_bands(energies, weights, center, cfg.band_window_eV, cfg.band_method)
    reference = 0.5 * (expected[path.index_K, 1] + expected[path.index_K, 2])
    np.testing.assert_allclose(sample.bands, expected - reference, atol=1e-10)
    np.testing.assert_allclose(sample.window_weight, total, atol=1e-10)
    A = spectral_function(energies - reference, weights, grid, cfg.broadening_eV, cfg.broadening_kind)
    assert np.abs(sample.spectral - A).max() < 1e-3 * A.max()


def test_fermi_level_reference_needs_a_stored_fermi_level(cells, tmp_path):
    prim, sc = cells
    path_file = _frames_file(tmp_path / "T0.h5", [sc], 0.0)
    with pytest.raises(FramesFileError, match="no fermi_level"):
        bands.run(path_file, prim, sc, tmp_path / "o", {"bands": {**SMALL, "energy_reference": "fermi_level"}},
                  with_figures=False)


def test_fermi_level_reference_matches_midpoint_for_a_neutral_undisplaced_cell(cells, tmp_path):
    """With E_F stored (here the band-touching energy of the undisplaced cell), both zeros agree."""
    prim, sc = cells
    frame = bt.tb_frame(sc, "s0", temperature_K=0.0)
    e_K = tb.eigenvalues(frame, bt.BASIS_PZ, [[0, 0, 0]])[0]  # K folds onto the supercell Γ
    frame.fermi_level = 0.5 * (e_K[17] + e_K[18])  # 36 p_z electrons: 18 filled states
    write_frames(tmp_path / "T0.h5", [frame], basis=bt.BASIS_PZ, source="dft", parameters={},
                 provenance=record())
    config = {**SMALL, "n_bootstrap": 0}
    by_ef = bands.run(tmp_path / "T0.h5", prim, sc, tmp_path / "ef",
                      {"bands": {**config, "energy_reference": "fermi_level"}}, with_figures=False)
    by_mid = bands.run(tmp_path / "T0.h5", prim, sc, tmp_path / "mid", {"bands": config}, with_figures=False)
    np.testing.assert_allclose(by_ef["temperatures"][0]["bands_mean_eV"],
                               by_mid["temperatures"][0]["bands_mean_eV"], atol=1e-9)


def test_samples_without_a_clean_band_window_are_left_out_up_to_the_limit(cells, tmp_path):
    """One sample whose bands leave the window (its H scaled ×3, so the π bands at |k − K| = 0.1/Å lie
    beyond ±1.5 eV) is left out and recorded; more than ``max_rejected_fraction`` of them stops the stage."""
    prim, sc = cells
    frames = [bt.tb_frame(sc, f"sample{i}", temperature_K=0.0, sample_index=i) for i in range(4)]
    frames[2].H = 3.0 * frames[2].H
    path_file = tmp_path / "T0.h5"
    write_frames(path_file, frames, basis=bt.BASIS_PZ, source="dft", parameters={"model": "Slater-Koster p_z"},
                 provenance=record())
    doc = bands.run(path_file, prim, sc, tmp_path / "out", CONFIG, with_figures=False, workers=2)
    result = doc["temperatures"][0]
    assert result["n_samples"] == 3 and [r["name"] for r in result["rejected_samples"]] == ["sample2"]
    assert "unfolded weight" in result["rejected_samples"][0]["reason"]
    with pytest.raises(bands.BandsError, match="max_rejected_fraction"):
        bands.run(path_file, prim, sc, tmp_path / "o2", {"bands": {**SMALL, "max_rejected_fraction": 0.2}},
                  with_figures=False)


def test_temperatures_come_from_the_frames(cells, tmp_path):
    """Samples are grouped by the temperature each frame records, in whatever files they come: one file with two
    temperatures gives two analyses, ascending; a frame that records none is refused, naming file and frame."""
    prim, sc = cells
    frames = [bt.tb_frame(bt.displaced(sc, 0.005, 0.01, seed=i), f"s{i}", temperature_K=T, sample_index=i)
              for i, T in enumerate((300.0, 100.0, 300.0, 100.0))]
    write_frames(tmp_path / "mixed.h5", frames, basis=bt.BASIS_PZ, source="dft", parameters={}, provenance=record())
    doc = bands.run(tmp_path / "mixed.h5", prim, sc, tmp_path / "out", {"bands": {**SMALL, "n_bootstrap": 0}},
                    with_figures=False)
    assert [(r["T_K"], r["n_samples"]) for r in doc["temperatures"]] == [(100.0, 2), (300.0, 2)]
    assert doc["temperatures"][0]["frames_files"] == [str(tmp_path / "mixed.h5")]
    write_frames(tmp_path / "bare.h5", [bt.tb_frame(sc, "bare")], basis=bt.BASIS_PZ, source="dft", parameters={},
                 provenance=record())
    with pytest.raises(bands.BandsError, match="bare.h5: frame 'bare' records no temperature"):
        bands.run(tmp_path / "bare.h5", prim, sc, tmp_path / "o", CONFIG, with_figures=False)
