"""The committee (train.committee): bootstrap resampling of the training frames, the committee's mean and
spread in infer and linearize against each member predicted alone, and the band analysis of every member
against the analysis of that member's frames on their own."""

import subprocess
import sys

import ase.io
import numpy as np
import pytest
import torch

from mlepi.electrons import bands
from mlepi.formats.frames import FramesFile, write_frames
from mlepi.formats.provenance import record
from mlepi.formats.structures import write_structure
from mlepi.ml import active, infer, train
from mlepi.ml.linearize import linearize_frames
from mlepi.ml.model import HedgeNet

import bilayer_tb as bt
from hedgenet_synthetic import TOY_BASIS, TOY_DFT, bilayer

torch.set_num_threads(1)

BANDS = {"bands": {"n_k": 7, "n_bootstrap": 4, "n_energy": 51, "seed": 3}}


def _member(seed, hidden=8):
    torch.manual_seed(seed)
    model = HedgeNet.from_config({"hidden": hidden, "n_rbf": 4, "num_interactions": 1}, TOY_BASIS).double()
    model.set_standardisation({"H_onsite_mean": np.diag([-8.0, 0.0, 0.0, 0.0])[None], "H_scale": 0.5,
                               "S_scale": 0.02, "energy_shift": [-9.0], "energy_scale": 0.3})
    return model.eval()


# ------------------------------------------------------------------------------------------ training


def test_bootstrap_draws_whole_training_groups_only():
    groups = [("frame", "pristine"), ("frame", "fd_000"), ("thermal", 300.0, 0), ("thermal", 300.0, 0),
              ("thermal", 300.0, 1), ("thermal", 300.0, 1), ("frame", "fd_001")]
    train_idx, val_idx = train.split_indices(groups, 0.25, seed=4)
    draws = {tuple(train.bootstrap_indices(groups, train_idx, seed)) for seed in range(20)}
    assert len(draws) > 5  # the seed decides the resample
    for drawn in draws:
        assert set(drawn) <= set(train_idx) and not set(drawn) & set(val_idx)
        # as many groups as the training set holds (some twice), each with all its frames equally often
        assert len(drawn) >= len({groups[k] for k in train_idx})
        for k in drawn:
            partners = [j for j in train_idx if groups[j] == groups[k]]
            assert all(drawn.count(j) == drawn.count(k) for j in partners)
    assert tuple(train.bootstrap_indices(groups, train_idx, 7)) == tuple(train.bootstrap_indices(groups,
                                                                                                 train_idx, 7))
    assert train.member_seed({"seed": 10}, 0) == 10 and train.member_seed({"seed": 10}, 2) == 12


# ------------------------------------------------------------------------------------------- infer


@pytest.fixture(scope="module")
def structures():
    return [bilayer(2, rattle=0.04, seed=k) for k in range(3)]


def _predict(models, structures):
    return infer.predict_frames(models, structures, [f"s{k}" for k in range(len(structures))], overlap="model",
                                fermi_level=False, dtype=torch.float64)


def test_committee_mean_members_and_spread_against_each_member_alone(structures):
    a, b, c = _member(0), _member(1), _member(2)
    alone = [_predict(model, structures) for model in (a, b, c)]
    together = _predict([a, b, c], structures)
    for k, frame in enumerate(together):
        members = [frames[k] for frames in alone]
        for key in ("forces", "H"):
            each = np.array([getattr(m, key) for m in members])
            np.testing.assert_allclose(getattr(frame, f"{key}_committee"), each, rtol=0, atol=1e-12)
            np.testing.assert_allclose(getattr(frame, key), each.mean(axis=0), rtol=0, atol=1e-12)
        energies = [m.energy for m in members]
        assert frame.energy == pytest.approx(np.mean(energies), rel=1e-12)
        # The spread, computed here from the members' own predictions
        H = np.array([m.H for m in members])
        used = np.any(H != 0, axis=0)
        assert frame.info["H_spread_meV"] == pytest.approx(1e3 * np.sqrt(np.var(H, axis=0, ddof=1)[used].mean()))
        F = np.array([m.forces for m in members])
        assert frame.info["forces_spread_meV_per_A"] == pytest.approx(1e3 * np.sqrt(np.var(F, 0, ddof=1).mean()))
        assert frame.info["energy_spread_meV_per_atom"] == pytest.approx(
            1e3 * np.std(energies, ddof=1) / len(frame.numbers))
        assert frame.info["committee_size"] == 3 and frame.info["H_spread_meV"] > 0


def test_a_committee_of_one_model_twice_is_that_model(structures):
    model = _member(0)
    single, twice = _predict(model, structures), _predict([model, model], structures)
    for one, two in zip(single, twice):
        assert two.energy == one.energy
        np.testing.assert_array_equal(two.H, one.H)
        np.testing.assert_array_equal(two.forces, one.forces)
        assert one.H_committee is None and two.info["H_spread_meV"] == 0.0


def test_members_trained_unalike_are_refused(structures, tmp_path):
    paths = []
    for m, hidden in enumerate((8, 12)):
        paths.append(tmp_path / f"m{m}.pt")
        _member(m, hidden).float().save(paths[-1], dft_parameters=TOY_DFT, kpoint_length=[9.84, 9.84])
    ase.io.write(tmp_path / "s.extxyz", structures, format="extxyz")
    result = subprocess.run([sys.executable, "-m", "mlepi.cli", "infer", *map(str, paths),
                             str(tmp_path / "s.extxyz"), "--out", str(tmp_path / "out.h5"), "--overlap", "model"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "m1.pt: its config differs from" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.h5").exists()


def test_the_frames_file_keeps_the_members(structures, tmp_path):
    frames = _predict([_member(0), _member(1)], structures)
    write_frames(tmp_path / "c.h5", frames, basis=TOY_BASIS, source="hedgenet", parameters={},
                 provenance=record())
    for written, read in zip(frames, FramesFile(tmp_path / "c.h5")):
        for key in ("energy_committee", "forces_committee", "H_committee"):
            np.testing.assert_array_equal(getattr(read, key), getattr(written, key))
        assert read.info == written.info


def test_linearized_committee_is_the_mean_of_the_members_linearized(structures):
    reference = bilayer(2, rattle=0.0)
    a, b = _member(0), _member(1)
    frames = _predict([a, b], structures[:2])
    together = linearize_frames([a, b], frames, reference)
    for k, frame in enumerate(together):
        each = np.array([linearize_frames(m, [frames[k]], reference)[0].H for m in (a, b)])
        np.testing.assert_allclose(frame.H_committee, each, rtol=0, atol=1e-12)
        np.testing.assert_allclose(frame.H, each.mean(axis=0), rtol=0, atol=1e-12)
        assert frame.forces_committee is None and "forces_spread_meV_per_A" not in frame.info
        assert frame.info["H_spread_meV"] > 0 and frame.info["epi_order"] == "linear"


# ------------------------------------------------------------------------------------------- bands


def _member_frames(sc, T, scales, n=4):
    """Per member, displaced Slater-Koster samples with V_ppπ scaled by ``scales[m]`` (a model that is off by
    that factor in the intralayer hopping: its v_F is off by about as much)."""
    return [[bt.tb_frame(bt.displaced(sc, 0.01, 0.02, seed=100 + i), f"s{i}", scale_pi=scale, temperature_K=T,
                         sample_index=i) for i in range(n)] for scale in scales]


def _write(path, frames):
    write_frames(path, frames, basis=bt.BASIS_PZ, source="dft", parameters={}, provenance=record())
    return path


def test_band_analysis_of_each_member_is_that_of_its_frames_alone(tmp_path):
    prim = bt.bilayer_primitive()
    sc = bt.supercell(prim, np.diag([3, 3, 1]), seed=11)
    members = _member_frames(sc, 300.0, (1.0, 1.03))
    doc = bands.run(_write(tmp_path / "c.h5", bt.committee_frames(members)), prim, sc, tmp_path / "out", BANDS,
                    with_figures=False)
    result = doc["temperatures"][0]
    spread = result["committee"]
    alone = [bands.run(_write(tmp_path / f"m{m}.h5", frames), prim, sc, tmp_path / f"out{m}", BANDS,
                       with_figures=False)["temperatures"][0] for m, frames in enumerate(members)]
    assert spread["vf_members_1e6_m_s"] == pytest.approx([r["vf_1e6_m_s"] for r in alone], rel=1e-9)
    assert np.allclose(spread["bands_K_members_eV"], [r["bands_K_eV"] for r in alone], rtol=0, atol=1e-9)
    # V_ppπ 3 % larger: v_F about 3 % larger (SWMcC: v_F is linear in gamma0)
    ratio = spread["vf_members_1e6_m_s"][1] / spread["vf_members_1e6_m_s"][0]
    assert ratio == pytest.approx(1.03, abs=5e-3)
    assert result["vf_model_err_1e6_m_s"] == pytest.approx(np.std(spread["vf_members_1e6_m_s"], ddof=1))
    assert result["vf_total_err_1e6_m_s"] == pytest.approx(np.hypot(result["vf_err_1e6_m_s"],
                                                                    result["vf_model_err_1e6_m_s"]))
    assert np.shape(spread["sample_bands_K_spread_eV"]) == (4, 4) and spread["left_out"] == []


def test_without_a_committee_the_model_error_is_unknown(tmp_path):
    prim = bt.bilayer_primitive()
    sc = bt.supercell(prim, np.diag([3, 3, 1]), seed=11)
    frames = _member_frames(sc, 300.0, (1.0,), n=2)[0]
    result = bands.run(_write(tmp_path / "c.h5", frames), prim, sc, tmp_path / "out", BANDS,
                       with_figures=False)["temperatures"][0]
    assert "committee" not in result
    assert np.isnan(result["vf_model_err_1e6_m_s"]) and np.isnan(result["vf_total_err_1e6_m_s"])


# ------------------------------------------------------------------------------------- active learning


def test_candidates_ranked_by_the_committees_spread_at_K(tmp_path):
    """Four candidates whose two members differ by V_ppπ scaled 1, 1.01, 1.02, 1.04 (and forces spreads that
    do not reverse the order): ranked by that; each candidate's band spread is the members' standard deviation
    of the band energies at K from the full band analysis of each member's frames alone."""
    prim = bt.bilayer_primitive()
    sc = bt.supercell(prim, np.diag([3, 3, 1]), seed=11)
    write_structure(tmp_path / "primitive.extxyz", prim)
    write_structure(tmp_path / "pristine.extxyz", sc)
    scales = (1.0, 1.01, 1.04, 1.02)
    base = _member_frames(sc, 300.0, (1.0,), n=4)[0]
    other = [bt.tb_frame(bt.displaced(sc, 0.01, 0.02, seed=100 + i), f"s{i}", scale_pi=scale, temperature_K=300.0,
                         sample_index=i) for i, scale in enumerate(scales)]
    candidates = bt.committee_frames([base, other])
    for frame, forces_spread in zip(candidates, (1.0, 2.0, 3.0, 2.5)):
        frame.info["forces_spread_meV_per_A"] = forces_spread
    rows = active.run(_write(tmp_path / "c.h5", candidates), tmp_path / "primitive.extxyz",
                      tmp_path / "pristine.extxyz", tmp_path / "selected.extxyz", tmp_path / "scores.csv", 2, BANDS)
    assert [r["name"] for r in rows] == ["s2", "s3", "s1", "s0"]
    assert [r["selected"] for r in rows] == [True, True, False, False]
    selected = ase.io.read(tmp_path / "selected.extxyz", ":")
    assert [a.info["name"] for a in selected] == ["sel_000", "sel_001"]
    assert [a.info["candidate"] for a in selected] == ["s2", "s3"]
    np.testing.assert_allclose(selected[0].positions, candidates[2].positions, atol=1e-6)  # extxyz text

    # The band spread by the full analysis of each member's frames
    at_K = []
    for m, frames in enumerate((base, other)):
        result = bands.run(_write(tmp_path / f"m{m}.h5", frames), prim, sc, tmp_path / f"b{m}", BANDS,
                           with_figures=False)
        index_K = result["path"]["index_K"]
        at_K.append(np.array(result["temperatures"][0]["sample_bands_eV"])[:, index_K])
    expected = 1e3 * np.std(at_K, axis=0, ddof=1)  # [4 samples, 4 bands]
    by_name = {r["name"]: r for r in rows}
    for i in range(4):
        row = by_name[f"s{i}"]
        assert row["band_spread_meV"] == pytest.approx(np.sqrt(np.mean(expected[i] ** 2)), rel=1e-6, abs=1e-9)
        assert [row[f"band{b}_K_spread_meV"] for b in range(1, 5)] == pytest.approx(expected[i], abs=1e-6)
    assert by_name["s0"]["band_spread_meV"] == pytest.approx(0.0, abs=1e-9)

    with pytest.raises(active.SelectError, match="fewer than the 5"):
        active.run(tmp_path / "c.h5", tmp_path / "primitive.extxyz", tmp_path / "pristine.extxyz",
                   tmp_path / "x.extxyz", tmp_path / "x.csv", 5, BANDS)
    with pytest.raises(active.SelectError, match="holds no committee"):
        active.run(tmp_path / "m0.h5", tmp_path / "primitive.extxyz", tmp_path / "pristine.extxyz",
                   tmp_path / "x.extxyz", tmp_path / "x.csv", 1, BANDS)


def test_a_member_with_a_spurious_state_at_K_ranks_first():
    values = active.scores([1.0, float("inf"), 3.0], [5.0, 1.0, 5.0])
    assert list(np.argsort(-values, kind="stable")) == [1, 2, 0]
    assert active.scores([0.0, 0.0, 0.0], [0.0, 0.0, 2.0]).tolist() == [0.0, 0.0, 2.0]  # zero medians count as 1
    assert active.scores([1.0, 3.0], [2.0, 4.0]).tolist() == [0.5 + 2 / 3, 1.5 + 4 / 3]
