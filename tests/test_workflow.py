"""The whole workflow end to end on the tiny config (real GPAW, phonopy, torch training), then the
incremental-rerun contract: changing a band-analysis parameter reruns only the band analysis.
"""

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlepi import config
from mlepi.config.bands import BandsConfig
from mlepi.electrons import renormalization, tb
from mlepi.formats import deeph, provenance
from mlepi.ml.model import HedgeNet
from mlepi.formats.frames import FramesFile
from mlepi.formats.structures import read_structures
from mlepi.evaluation import testset
from mlepi.evaluation.metrics import point_eigenvalues
from mlepi.evaluation.parity import h_errors
from mlepi.ml.infer import predict_frames

from workflow_helpers import ROOT, SNAKEMAKE, planned_rules, snakemake, subprocess_env


def answer_dir(out, cfg):
    """Where the answer's committee and dataset are: the last active-learning round's (train/, dataset/)."""
    rounds = cfg["active"]["rounds"]
    return out / "active" / f"round_{rounds}" if rounds else out


@pytest.mark.slow
def test_dry_run_lists_every_stage(tmp_path):
    shutil.copytree(ROOT / "config", tmp_path / "config")
    out = snakemake(tmp_path, "-n").stdout
    # displace is a checkpoint: the DFT jobs of its displacements appear once it has run.
    assert {"structure", "displace", "all"} <= planned_rules(out)


@pytest.mark.slow
def test_outputs_of_every_stage(workflow_run):
    workdir, cfg = workflow_run
    out = workdir / "results" / cfg["system"]["name"]
    n_temperatures = len(cfg["thermal"]["temperatures"])
    dataset = FramesFile(out / "dataset" / "dataset.h5")
    # pristine + 4 finite differences (AB bilayer, plus-minus auto) + thermal training samples
    assert len(dataset) == 1 + 4 + n_temperatures * cfg["thermal"]["train_samples"]
    assert dataset.source == "dft"
    for name in ("phonopy_params.yaml", "band.yaml", "FORCE_SETS", "phonon_bands.png"):
        assert (out / "phonons" / name).stat().st_size > 0
    metrics = list(csv.DictReader((out / "train" / "member_0" / "metrics.csv").open()))
    assert metrics, "training wrote no metrics"
    # The committee: independent trainings (seeds train.seed + m) with splits of their own
    n_members = cfg["train"]["committee"]
    members = [HedgeNet.load(out / "train" / f"member_{m}" / "model.pt").metadata for m in range(n_members)]
    assert [m["seed"] for m in members] == [m for m in range(n_members)]
    assert len({tuple(m["validation_frames"]) for m in members}) > 1
    phonons_ml = json.loads((out / "phonons_ml" / "summary.json").read_text())
    assert len(phonons_ml["gamma_frequencies_cm_ml"]) == len(phonons_ml["gamma_frequencies_cm_dft"]) == 12
    assert np.isfinite(phonons_ml["freq_rel_err_mean"])
    parity = json.loads((out / "parity" / "parity.json").read_text())
    assert parity["validation_frames"] and np.isfinite(parity["h_mae_meV"])
    # the held-out MAE is the one the answer's training (the last active-learning round's) reported for its best
    # epoch
    final = list(csv.DictReader((answer_dir(out, cfg) / "train" / "member_0" / "metrics.csv").open()))
    best = min(final, key=lambda row: float(row["val_loss"]))
    assert parity["h_mae_meV"] == pytest.approx(float(best["val_H_mae_meV"]), rel=0.02)
    # O(3) covariance by construction (docs/hedgenet.md): a rotated held-out structure gives the rotated forces
    # and H blocks to float32 rounding (blocks of a few eV: ~1e-6 eV).
    assert parity["force_rotation_mae_meV_per_A"] < 0.1
    assert parity["h_rotation_mae_meV"] < 0.05
    band_frames = set(parity["band_eig_mae_meV"])  # the pristine frame and one held-out frame
    assert "pristine" in band_frames and len(band_frames & set(parity["validation_frames"])) == 1
    assert all(np.isfinite(v) for v in parity["band_eig_mae_meV"].values())
    assert (out / "parity" / "bands_ml_vs_dft.png").stat().st_size > 0
    for T in cfg["thermal"]["temperatures"]:
        frames = FramesFile(out / "infer" / f"T{T:g}.h5")
        assert frames.source == "hedgenet" and len(frames) == cfg["thermal"]["infer_samples"]
    frame = frames[0]  # every member's prediction beside the mean
    assert frame.H_committee.shape == (n_members, *frame.H.shape) and frame.info["committee_size"] == n_members
    np.testing.assert_allclose(frame.H, frame.H_committee.mean(axis=0), atol=1e-12)
    assert frame.info["H_spread_meV"] > 0 and frame.info["forces_spread_meV_per_A"] > 0
    rows = list(csv.DictReader((out / "bands" / "vf.csv").open()))
    assert len(rows) >= n_temperatures
    summary = json.loads((out / "bands" / "bands.json").read_text())
    for row, result in zip(rows, summary["temperatures"]):
        assert 0.3 < float(row["vf_1e6_m_s"]) < 2.0  # graphene's v_F is ~1e6 m/s
        assert len(result["committee"]["vf_members_1e6_m_s"]) == n_members
        assert float(row["vf_model_err_1e6_m_s"]) > 0
        assert float(row["vf_total_err_1e6_m_s"]) >= float(row["vf_err_1e6_m_s"])


@pytest.mark.slow
def test_orders_special_displacement_and_dft_crosscheck(workflow_run):
    """The linearized samples are odd around the model's own pristine prediction (float64 against the float32
    inference), and the renormalization stage writes one row per temperature and one DFT check per sample."""
    workdir, cfg = workflow_run
    out = workdir / "results" / cfg["system"]["name"]
    temperatures = cfg["thermal"]["temperatures"]
    (pristine,) = list(FramesFile(out / "infer" / "pristine.h5"))
    keys0 = _edge_keys(pristine)
    for T in temperatures:
        linear = list(FramesFile(out / "linear" / f"T{T:g}.h5"))
        assert len(linear) == cfg["thermal"]["infer_samples"]
        plus, minus = linear[0], linear[1]  # an antithetic pair
        kp, km = _edge_keys(plus), _edge_keys(minus)
        common = sorted(set(kp) & set(km) & set(keys0))
        assert len(common) > 0.9 * len(keys0)
        total = np.array([plus.H[kp[k]] + minus.H[km[k]] - 2 * pristine.H[keys0[k]] for k in common])
        assert np.abs(total).max() < 1e-3  # eV; H(0) in float64 vs the float32 inference of the pristine cell
        (special,) = list(FramesFile(out / "infer" / f"special_T{T:g}.h5"))
        assert special.info["kind"] == "special_displacement" and special.info["temperature_K"] == T
    rows = list(csv.DictReader((out / "renormalization" / "renormalization.csv").open()))
    assert [float(r["T_K"]) for r in rows] == temperatures
    for row in rows:
        for key in ("vf_full_1e6_m_s", "vf_linear_1e6_m_s", "vf_special_1e6_m_s", "vf_static_dft_1e6_m_s"):
            assert 0.3 < float(row[key]) < 2.0, key
    checks = list(csv.DictReader((out / "renormalization" / "crosscheck.csv").open()))
    assert len(checks) == len(temperatures) * cfg["bands"]["dft_check_samples"]
    for check in checks:
        dft = FramesFile(out / "dft" / f"check_T{float(check['T_K']):g}_s{int(check['sample_index']):03d}.h5")[0]
        assert dft.info["temperature_K"] == float(check["T_K"]) and dft.info["kind"] == "thermal"
        assert abs(float(check["band4_K_dft_eV"]) - float(check["band1_K_dft_eV"])) > 0.3  # about 2 gamma1
    for name in ("vf_orders.png", "crosscheck.png"):
        assert (out / "renormalization" / name).stat().st_size > 0


@pytest.mark.slow
def test_a_committee_of_other_seeds_gives_the_static_vf_within_the_spreads(workflow_run, tmp_path):
    """Reproducibility of the answer: a second committee, trained alike from seeds 10 and 11 (other splits,
    weights and shuffling), predicts the static lattice's v_F within the two committees' spreads of the first's.
    Its members' v_F come from the same analysis the renormalization stage runs, by its own inference."""
    workdir, cfg = workflow_run
    out = workdir / "results" / cfg["system"]["name"]
    full = config.validate(json.loads(json.dumps(cfg)))
    mlepi = str(Path(sys.executable).parent / "mlepi")
    env = {**subprocess_env(), "OMP_NUM_THREADS": "1"}
    n_members = full["train"]["committee"]
    jobs = []
    for m in range(n_members):
        params = {"model": full["model"], "train": {**full["train"], "seed": 10}}
        jobs.append(subprocess.Popen([mlepi, "train", "--params", json.dumps(params), "--dataset",
                                      str(out / "dataset" / "dataset.h5"), "--member", str(m), "--out-dir",
                                      str(tmp_path / f"member_{m}")], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL))
    assert all(job.wait(timeout=1800) == 0 for job in jobs)
    models = [str(tmp_path / f"member_{m}" / "model.pt") for m in range(n_members)]
    subprocess.run([mlepi, "infer", *models, str(out / "displace" / "pristine.extxyz"), "--out",
                    str(tmp_path / "pristine.h5")], check=True, env=env, timeout=600)
    analysis = renormalization.Analysis(out / "structure" / "primitive.extxyz", out / "displace" / "pristine.extxyz",
                                        BandsConfig.from_section(full["bands"]))
    frames = FramesFile(tmp_path / "pristine.h5")
    (frame,) = list(frames)
    dft = FramesFile(out / "dft" / "pristine.h5")[0]
    second = []
    for H in frame.H_committee:
        frame.H = H
        second.append(analysis.single(frame, frames.basis, dft.fermi_level, "second committee")["vf_1e6_m_s"])
    first = json.loads((out / "renormalization" / "renormalization.json").read_text())["static"]
    first_vf = first["ml_members_vf_1e6_m_s"]
    assert HedgeNet.load(models[1]).metadata["seed"] == 11
    assert abs(np.mean(second) - np.mean(first_vf)) <= np.std(first_vf, ddof=1) + np.std(second, ddof=1), (
        first_vf, second)


@pytest.mark.slow
def test_select_ranks_the_inferred_samples_by_the_committees_spread(workflow_run, tmp_path):
    """`mlepi select` on the committee's real inference frames: every sample scored, the best one written with
    its positions and origin, the rest of the ranking in the CSV."""
    workdir, cfg = workflow_run
    out = workdir / "results" / cfg["system"]["name"]
    frames = [out / "infer" / f"T{T:g}.h5" for T in cfg["thermal"]["temperatures"]]
    subprocess.run([str(Path(sys.executable).parent / "mlepi"), "select", "--frames", *map(str, frames),
                    "--primitive", str(out / "structure" / "primitive.extxyz"),
                    "--supercell", str(out / "displace" / "pristine.extxyz"),
                    "--reference", str(out / "dft" / "pristine.h5"), "--per-round", "1", "--round", "1",
                    "--params", json.dumps({"bands": cfg["bands"]}), "--out", str(tmp_path / "selected.extxyz"),
                    "--scores", str(tmp_path / "scores.csv")], check=True, timeout=600)
    rows = list(csv.DictReader((tmp_path / "scores.csv").open()))
    assert len(rows) == len(frames) * cfg["thermal"]["infer_samples"]
    assert [int(r["rank"]) for r in rows] == list(range(len(rows)))
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    (best,) = read_structures(tmp_path / "selected.extxyz")
    assert best.info["candidate"] == rows[0]["name"] and best.info["active_round"] == 1
    source = FramesFile(rows[0]["frames_file"])[rows[0]["name"]]
    np.testing.assert_allclose(best.positions, source.positions, atol=1e-6)
    assert best.info["temperature_K"] == source.info["temperature_K"]


@pytest.mark.slow
def test_an_active_learning_round_adds_the_committees_worst_candidate_and_trains_on(workflow_run):
    """Round 1: candidates at every temperature and beyond the highest, the top-ranked one recomputed by GPAW and
    added to the dataset, every member trained on from its round-0 weights with its validation frames kept; the
    answer's inference uses round 1's committee."""
    workdir, cfg = workflow_run
    out = workdir / "results" / cfg["system"]["name"]
    active = cfg["active"]
    rnd = out / "active" / "round_1"
    temperatures = [*cfg["thermal"]["temperatures"], 1.5 * max(cfg["thermal"]["temperatures"])]
    for T in temperatures:
        candidates = FramesFile(rnd / f"candidates_T{T:g}.h5")
        assert len(candidates) == active["candidates"] and candidates[0].H_committee is not None
        assert candidates.parameters["committee"] == [str(Path("results") / cfg["system"]["name"] / "train" /
                                                          f"member_{m}" / "model.pt")
                                                      for m in range(cfg["train"]["committee"])]
    rows = list(csv.DictReader((rnd / "scores.csv").open()))
    assert len(rows) == len(temperatures) * active["candidates"]
    (selected,) = read_structures(rnd / "selected.extxyz")
    assert selected.info["candidate"] == rows[0]["name"] and selected.info["active_round"] == 1
    dft = FramesFile(rnd / "dft" / "sel_000.h5")[0]
    assert dft.name == "r1_sel_000" and dft.forces is not None and dft.H is not None
    np.testing.assert_allclose(dft.positions, selected.positions, atol=1e-6)

    base, grown = FramesFile(out / "dataset" / "dataset.h5"), FramesFile(rnd / "dataset" / "dataset.h5")
    assert grown.names == base.names + ["r1_sel_000"]
    for m in range(cfg["train"]["committee"]):
        first = HedgeNet.load(out / "train" / f"member_{m}" / "model.pt")
        model = HedgeNet.load(rnd / "train" / f"member_{m}" / "model.pt")
        assert model.metadata["validation_frames"] == first.metadata["validation_frames"]
        assert "r1_sel_000" in model.metadata["training_frames"]
        assert model.metadata["init_model"].endswith(f"train/member_{m}/model.pt")
        assert model.metadata["seed"] == first.metadata["seed"]
        metrics = list(csv.DictReader((rnd / "train" / f"member_{m}" / "metrics.csv").open()))
        assert len(metrics) == active["epochs"]
    answer = FramesFile(out / "infer" / f"T{cfg['thermal']['temperatures'][0]:g}.h5")
    assert all("active/round_1/train" in path for path in answer.parameters["committee"])


@pytest.mark.slow
def test_the_test_set_is_unseen_thermal_dft_and_its_errors_hold_per_member(workflow_run, tmp_path):
    """testset.json of each round: frames at every temperature and beyond, never trained on; member 0's force
    and H errors as that model alone predicts them; the point labelled K image holds the Dirac states."""
    workdir, cfg = workflow_run
    out = workdir / "results" / cfg["system"]["name"]
    temperatures = [*cfg["thermal"]["temperatures"], 1.5 * max(cfg["thermal"]["temperatures"])]
    names = [f"test_T{T:g}_s000" for T in temperatures]
    docs = [json.loads((out / "active" / f"round_{k}" / "testset.json").read_text()) for k in (0, 1)]
    for doc in docs:
        assert doc["frames"] == names and len(doc["members"]) == cfg["train"]["committee"]
        assert [row["T_K"] for row in doc["by_temperature"]] == temperatures
        assert doc["forces_spread_meV_per_A"] > 0 and set(doc["goals"]) == set(testset.GOALS)
    dataset = FramesFile(out / "active" / "round_1" / "dataset" / "dataset.h5")
    assert not set(names) & set(dataset.names)
    tests = [FramesFile(out / "dft" / f"{name}.h5")[0] for name in names]
    assert len({t.info["seed"] for t in tests}) == 1 and tests[0].info["seed"] == cfg["thermal"].get("test_seed", 7)

    model = HedgeNet.load(out / "active" / "round_1" / "train" / "member_0" / "model.pt")
    alone = predict_frames(model, [t.to_atoms() for t in tests], names, fermi_level=False, overlap="model")
    forces = np.concatenate([(a.forces - t.forces).ravel() for a, t in zip(alone, tests)])
    member0 = docs[1]["members"][0]
    assert member0["force_mae_meV_per_A"] == pytest.approx(1e3 * np.abs(forces).mean(), rel=1e-5)
    assert member0["h_mae_meV"] == pytest.approx(h_errors(tests, alone, dataset.basis)[0]["h_mae_meV"], rel=1e-5)

    # The primitive K folds onto the 2x2 supercell's K: there, and not at Gamma, lie states at the Fermi level.
    assert docs[0]["k_image"] == "K"
    pristine = dataset["pristine"]
    near = {p: np.min(np.abs(e - pristine.fermi_level)) for p, (e, _) in
            point_eigenvalues(pristine, pristine, dataset.basis).items()}
    assert near["K"] < 0.1 < near["G"], near

    learning = list(csv.DictReader((out / "active" / "learning.csv").open()))
    assert [int(r["round"]) for r in learning] == [0, 1]
    assert float(learning[1]["mean_force_mae_meV_per_A"]) == pytest.approx(docs[1]["mean"]["force_mae_meV_per_A"])
    assert int(learning[1]["n_train_frames"]) == int(learning[0]["n_train_frames"]) + 1

    # A frame a member trained on is refused as a test frame.
    with pytest.raises(testset.TestSetError, match="trained or validated on"):
        testset.run([out / "train" / "member_0" / "model.pt"], [out / "dft" / "pristine.h5"],
                    out / "dataset" / "dataset.h5", tmp_path / "t.json")


@pytest.mark.slow
def test_supercell_convergence(workflow_run):
    """The workflow's own supercell and the HedgeNet-only larger ones, one row per size and temperature."""
    workdir, cfg = workflow_run
    out = workdir / "results" / cfg["system"]["name"]
    rows = list(csv.DictReader((out / "supercells" / "convergence.csv").open()))
    sizes = [cfg["system"]["supercell"][0], *cfg["thermal"]["ml_supercells"]]
    assert [(int(r["supercell"]), float(r["T_K"])) for r in rows] == [
        (n, float(T)) for n in sizes for T in cfg["thermal"]["temperatures"]]
    for row in rows:
        assert int(row["n_atoms"]) == 4 * int(row["supercell"]) ** 2
        assert 0.3 < float(row["vf_1e6_m_s"]) < 2.0
        assert (row["holds_K"] == "True") == (int(row["supercell"]) % 3 == 0)
        # zero-point and thermal motion: <u_z^2> of carbon is of order 1e-3 A^2, and ZA is a part of it
        assert 1e-4 < float(row["u2_z_A2"]) < 0.1 and 0 < float(row["ZA_share"]) < 1
    largest = max(sizes)
    for row in rows:
        if int(row["supercell"]) == largest:
            assert float(row["vf_minus_largest_1e6_m_s"]) == 0.0 and row["within_error_of_largest"] == "True"
    # The supercell's part of the answer's error budget: r of the largest size minus r of the workflow's own
    vf = {(int(r["supercell"]), float(r["T_K"])): float(r["vf_1e6_m_s"]) for r in rows}
    for r in csv.DictReader((out / "renormalization" / "renormalization.csv").open()):
        T = float(r["T_K"])
        assert int(r["supercell_largest"]) == largest
        assert float(r["renormalization_supercell_percent"]) == pytest.approx(
            100 * (vf[largest, T] - vf[sizes[0], T]) / float(r["vf_static_ml_1e6_m_s"]), rel=1e-6)
    n = cfg["thermal"]["ml_supercells"][0]
    samples = FramesFile(out / "supercells" / f"{n}x{n}" / "T300.h5")
    (frame, *_) = list(samples)
    assert frame.n_atoms == 4 * n * n and frame.info["supercell"] == [n, n]
    # one model across sizes: the answer's committee (its mean H), not one member
    assert samples.parameters["committee"] == FramesFile(out / "infer" / "T300.h5").parameters["committee"]
    assert len(samples.parameters["committee"]) == cfg["train"]["committee"] and frame.H_committee is None
    assert (out / "supercells" / "convergence.png").stat().st_size > 0


def _edge_keys(frame):
    return {(int(i), int(j), *map(int, r)): e for e, (i, j, r) in enumerate(zip(*frame.edge_index, frame.cell_shift))}


@pytest.mark.slow
def test_every_output_that_used_randomness_records_its_seed(workflow_run):
    """Thermal samples (sampler seed), the model (split, initial weights, shuffling) and the band analysis
    (bootstrap) each record the seed of the config section that drew their random numbers."""
    workdir, cfg = workflow_run
    out = workdir / "results" / cfg["system"]["name"]
    full = config.validate(json.loads(json.dumps(cfg)))  # the tiny config with the schema's defaults
    expected = {out / "thermal" / "infer_T300.extxyz": full["thermal"]["seed"],
                out / "thermal" / "train_T0" / "s000.extxyz": full["thermal"]["seed"],
                out / "train" / "member_0" / "model.pt": full["train"]["seed"],
                out / "bands" / "bands.json": full["bands"]["seed"]}
    for path, seed in expected.items():
        assert provenance.read(path)["provenance"]["seed"] == seed, path


@pytest.mark.slow
def test_band_parameter_changes_rerun_only_what_they_touch(workflow_run, tmp_path):
    workdir, cfg = workflow_run
    changed = json.loads(json.dumps(cfg))
    changed["bands"]["broadening_eV"] = 0.05
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(changed))
    assert planned_rules(snakemake(workdir, "-n").stdout) == set(), "an unchanged config reran something"
    planned = planned_rules(snakemake(workdir, "-n", config=path).stdout)
    # testset reads the band keys for the static v_F (cheap); the active-learning round's selection does not
    # read the broadening, so nothing of the round reruns.
    assert planned == {"bands", "bands_linear", "renormalization", "supercell_bands", "supercell_convergence",
                       "testset", "learning", "all"}, planned
    # One more DFT cross-check sample: its GPAW jobs and the renormalization table, not the band analyses.
    changed = json.loads(json.dumps(cfg))
    changed["bands"]["dft_check_samples"] += 1
    path.write_text(yaml.safe_dump(changed))
    planned = planned_rules(snakemake(workdir, "-n", config=path).stdout)
    assert planned == {"dft", "renormalization", "all"}, planned
    # One more committee member: its first training, and what reads every member; not the members already
    # trained. Round 1 of active learning ranks its candidates by the committee: it reruns whole.
    changed = json.loads(json.dumps(cfg))
    changed["train"]["committee"] += 1
    path.write_text(yaml.safe_dump(changed))
    dry = snakemake(workdir, "-n", config=path).stdout
    assert planned_rules(dry) == {"train", "infer", "infer_candidates", "select", "dft_selected", "dataset_round",
                                  "train_round", "testset", "learning", "linearize", "bands", "bands_linear",
                                  "renormalization", "parity", "phonons_ml", "supercell_bands",
                                  "supercell_convergence", "all"}, planned_rules(dry)
    assert re.findall(r"rule train:\n(?:    .*\n)*?    wildcards: member=(\d+)", dry) == [
        str(cfg["train"]["committee"])]


@pytest.mark.slow
def test_one_more_active_learning_round_reruns_only_that_round_and_the_answer(workflow_run, tmp_path):
    """active.rounds 1 -> 2: round 2's jobs and what uses the final committee; nothing of round 0 or 1."""
    workdir, cfg = workflow_run
    changed = json.loads(json.dumps(cfg))
    changed["active"]["rounds"] += 1
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(changed))
    dry = snakemake(workdir, "-n", config=path).stdout
    assert set(re.findall(r"round=(\d+)", dry)) == {"2"}, re.findall(r"round=(\d+)", dry)
    assert {"thermal_candidates", "infer_candidates", "select", "dft_selected", "dataset_round", "train_round",
            "testset", "learning", "infer", "bands"} <= planned_rules(dry)
    assert not {"train", "dft", "dataset", "thermal_train", "thermal_test"} & planned_rules(dry)


@pytest.mark.slow
def test_a_new_key_reruns_only_the_stages_that_read_it(workflow_run, tmp_path):
    """The keys each stage reads are written once, as x-stages in the schema, and feed both the stages and the
    rules' rerun triggers. A developer adds a key to the bands section that only the bands stage reads: on the
    finished workflow, only that stage's jobs (and what depends on them) are planned, not supercell_bands, which
    reads the rest of the section; a key only the Snakefile reads (resources) reruns nothing."""
    workdir, cfg = workflow_run
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "mlepi", src / "mlepi", ignore=shutil.ignore_patterns("__pycache__"))
    schema_path = src / "mlepi" / "config" / "config.schema.yaml"
    schema = yaml.safe_load(schema_path.read_text())
    schema["properties"]["bands"]["properties"]["probe_eV"] = {
        "x-stages": ["bands"], "description": "a new key (test)", "type": "number", "default": 0.5}
    schema["properties"]["resources"]["properties"]["probe_min"] = {
        "x-stages": ["workflow"], "description": "a new key (test)", "type": "integer", "default": 5}
    schema_path.write_text(yaml.safe_dump(schema, sort_keys=False))
    env = {"PYTHONPATH": str(src)}  # the Snakefile imports mlepi from the copy with the new keys
    planned = planned_rules(snakemake(workdir, "-n", env=env).stdout)
    assert planned == {"bands", "bands_linear", "renormalization", "supercell_convergence", "all"}, planned
    changed = json.loads(json.dumps(cfg))
    changed["bands"]["probe_eV"] = 0.7
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(changed))
    planned = planned_rules(snakemake(workdir, "-n", config=path, env=env).stdout)
    assert planned == {"bands", "bands_linear", "renormalization", "supercell_convergence", "all"}, planned
    del schema["properties"]["bands"]["properties"]["probe_eV"]
    schema_path.write_text(yaml.safe_dump(schema, sort_keys=False))
    changed.setdefault("resources", {})["probe_min"] = 7
    del changed["bands"]["probe_eV"]
    path.write_text(yaml.safe_dump(changed))
    assert planned_rules(snakemake(workdir, "-n", config=path, env=env).stdout) == set()


@pytest.mark.slow
def test_user_checks_the_model_on_a_structure(workflow_run, tmp_path):
    """`mlepi predict` + `mlepi compare` on a DFT frame of the run: same schema, errors as JSON."""
    workdir, cfg = workflow_run
    out = workdir / "results" / cfg["system"]["name"]
    mlepi = [str(Path(sys.executable).parent / "mlepi")]
    structure = out / "displace" / "fd_000.extxyz"
    subprocess.run([*mlepi, "predict", str(out / "train" / "member_0" / "model.pt"), str(structure),
                    "--out", str(tmp_path / "B.h5")], check=True, timeout=600)
    result = subprocess.run([*mlepi, "compare", str(out / "dft" / "fd_000.h5"), str(tmp_path / "B.h5"),
                             "--json"], check=True, capture_output=True, text=True, timeout=600)
    errors = json.loads(result.stdout)
    for key in ("h_mae_meV", "force_mae_meV_per_A", "eig_mae_K_meV", "fermi_level_diff_meV"):
        assert np.isfinite(errors[key]), key
    assert errors["blocks_matched"] == errors["blocks_a"]  # the model predicts every DFT block


@pytest.mark.slow
def test_dft_dataset_exports_to_deeph_in_deeph_orbital_order(workflow_run, tmp_path):
    """`mlepi export-deeph` on the real GPAW dataset. Every site of the AB bilayer sits on a C3 axis along z,
    so its on-site p block is diag(e_xy, e_xy, e_z) with s mixing only with p_z: true in DeepH's (x, y, z)
    order, false in GPAW's (y, z, x). (The real-space grid breaks C3 at the meV level: xx - yy = 1.3 meV,
    against zz - xx = 5.4 eV.) And the blocks rebuild the frame's own eigenvalues."""
    workdir, cfg = workflow_run
    dataset = workdir / "results" / cfg["system"]["name"] / "dataset" / "dataset.h5"
    subprocess.run([str(Path(sys.executable).parent / "mlepi"), "export-deeph", str(dataset), "--out-dir",
                    str(tmp_path)], check=True, timeout=600)
    structure, blocks = deeph.read(tmp_path / "pristine")
    assert structure["orbital_types"][0] == [0, 1, 0, 1]  # dz(dzp): 2s, 2p, 2s', 2p'
    for H in (H for i, j, R, H, _ in blocks if i == j and not R.any()):
        p = H[1:4, 1:4]  # first p shell: x, y, z
        assert abs(p[0, 0] - p[1, 1]) < 1e-2 and abs(p[2, 2] - p[0, 0]) > 1.0, p
        assert np.abs(p - np.diag(np.diag(p))).max() < 1e-2 and np.abs(H[0, 1:3]).max() < 1e-2, H
    frame = FramesFile(dataset)["pristine"]
    k_points = np.array([[0.0, 0.0, 0.0], [1 / 3, 1 / 3, 0.0], [0.17, 0.05, 0.0]])
    for k, expected in zip(k_points, tb.eigenvalues(frame, FramesFile(dataset).basis, k_points)):
        H_k, S_k = deeph.bloch_sum(structure, blocks, k)
        np.testing.assert_allclose(tb.eigh_generalized(H_k[None], S_k[None])[0], expected, atol=1e-8)


@pytest.mark.slow
def test_accuracy_benchmark_reports_held_out_errors(workflow_run, tmp_path):
    """`mlepi accuracy` on the tiny run: the issue's keys, H errors the same as the parity stage's (one
    evaluation of the held-out frames), eigenvalue errors from GPAW's S on both sides, learning curves. Test
    frames: the validation frames' own DFT files give the validation errors again (the same frames by another
    route), and the band analysis' DFT cross-check samples give errors of their own."""
    workdir, cfg = workflow_run
    out = workdir / "results" / cfg["system"]["name"]
    parity = json.loads((out / "parity" / "parity.json").read_text())

    def accuracy(name, *test_frames):
        subprocess.run([str(Path(sys.executable).parent / "mlepi"), "accuracy",
                        str(answer_dir(out, cfg) / "train" / "member_0" / "model.pt"),
                        str(answer_dir(out, cfg) / "dataset" / "dataset.h5"), "--phonons-ml",
                        str(out / "phonons_ml" / "summary.json"), "--test-frames", *map(str, test_frames),
                        "--primitive", str(out / "structure" / "primitive.extxyz"),
                        "--params", json.dumps({"bands": cfg["bands"]}), "--out", str(tmp_path / name)],
                       check=True, timeout=600)
        return json.loads((tmp_path / name).read_text())

    result = accuracy("accuracy.json", *(out / "dft" / f"{name}.h5" for name in parity["validation_frames"]))
    for key in ("h_mae_meV", "h_mae_intra_meV", "h_mae_inter_meV", "force_mae_meV_per_A", "h_rotation_mae_meV"):
        assert result[key] == pytest.approx(parity[key], rel=1e-6), key
    for key in ("h_mae_meV", "h_max_err_intra_meV", "h_max_err_inter_meV", "force_mae_meV_per_A", "eig_mae_meV"):
        assert result["test"][key] == pytest.approx(result[key], rel=1e-6), key
    # The static lattice by another route: the renormalization stage reads the inferred pristine frame (GPAW's
    # exact S computed again) where accuracy takes the DFT frame's S. Accuracy judges member 0, the
    # renormalization the committee's mean and each member.
    static = json.loads((out / "renormalization" / "renormalization.json").read_text())["static"]
    assert result["vf_static_dft_1e6_m_s"] == pytest.approx(static["dft"]["vf_1e6_m_s"], rel=1e-9)
    assert result["vf_static_ml_1e6_m_s"] == pytest.approx(static["ml_members_vf_1e6_m_s"][0], rel=1e-4)
    check = sorted((out / "dft").glob("check_*.h5"))
    test = accuracy("check.json", *check)["test"]
    assert test["frames"] == [p.stem for p in check] and check
    assert test["force_mae_meV_per_A"] > 0 and test["h_mae_inter_meV"] > 0
    assert result["eig_mae_meV"] > 0  # at the points of the supercell that have states within 1 eV of E_F
    assert 0 <= result["phonon_freq_mean_rel_err"] <= result["phonon_freq_max_rel_err"]
    assert result["data"]["validation_frames"] == parity["validation_frames"]
    assert (tmp_path / "accuracy.png").stat().st_size > 0


@pytest.mark.slow
def test_performance_benchmark_runs_from_the_workflow(workflow_run):
    """`snakemake performance`: ML against GPAW on the same structure, scaling, sparse against dense."""
    workdir, cfg = workflow_run
    snakemake(workdir, "performance")
    result = json.loads((workdir / "results" / cfg["system"]["name"] / "performance" / "performance.json")
                        .read_text())
    for key in ("speedup_vs_dft", "scaling_exponent", "time_per_atom_ratio_1e4_vs_1e2"):
        assert np.isfinite(result[key]) and result[key] > 0, key
    assert result["speedup_vs_dft"] > 1  # even on 4 atoms a forward pass beats a GPAW SCF
    assert [r["n_atoms"] for r in result["scaling"]] == [4, 16, 36]
    assert all(r["max_abs_diff_eV"] < 1e-8 for r in result["band_solver"])  # sparse = dense near E_F
    assert result["machine"]["cpus"] >= 1 and result["provenance"]["git_revision"]
    assert (workdir / "results" / cfg["system"]["name"] / "performance" / "performance.png").stat().st_size > 0


@pytest.mark.slow
def test_peers_benchmark_runs_from_the_workflow(workflow_run):
    """`snakemake peers`: MACE on HedgeNet's training frames; both on the same frames and finite differences."""
    workdir, cfg = workflow_run
    snakemake(workdir, "peers")
    out = workdir / "results" / cfg["system"]["name"]
    result = json.loads((out / "peers" / "peers.json").read_text())
    member_0 = HedgeNet.load(out / "train" / "member_0" / "model.pt")
    assert result["frames"]["validation"] == member_0.metadata["validation_frames"]
    assert result["frames"]["test"] == sorted(p.stem for p in (out / "dft").glob("check_*.h5"))
    phonons_ml = json.loads((out / "phonons_ml" / "summary.json").read_text())
    for name, m in result["models"].items():
        assert m["test"]["force_mae_meV_per_A"] > 0 and m["time_per_structure_s"] > 0, name
        # the same DFT force constants as the phonons stage
        assert m["phonons"]["gamma_frequencies_cm_dft"] == phonons_ml["gamma_frequencies_cm_dft"]
    assert result["models"]["HedgeNet"]["phonons"]["gamma_frequencies_cm_ml"] == phonons_ml["gamma_frequencies_cm_ml"]
    assert (out / "peers" / "peers_phonons.png").stat().st_size > 0


@pytest.mark.slow
def test_hamiltonian_baseline_runs_from_the_workflow(workflow_run):
    """`snakemake peers_h`: the baseline trains on the DeepH export of HedgeNet's training frames; HedgeNet's
    errors on its validation frames are those of the parity stage (one function, two stages)."""
    workdir, cfg = workflow_run
    snakemake(workdir, "peers_h")
    out = workdir / "results" / cfg["system"]["name"]
    result = json.loads((out / "peers" / "hamiltonian.json").read_text())
    validation = HedgeNet.load(out / "train" / "member_0" / "model.pt").metadata["validation_frames"]
    assert result["frames"]["validation"] == validation
    assert result["frames"]["test"] == sorted(p.stem for p in (out / "dft").glob("check_*.h5"))
    assert sorted(p.name for p in (out / "peers" / "deeph").iterdir()) == sorted(FramesFile(
        answer_dir(out, cfg) / "dataset" / "dataset.h5").names)  # every frame, as `mlepi export-deeph` writes it
    parity = json.loads((out / "parity" / "parity.json").read_text())
    models = result["models"]
    assert models["HedgeNet"]["validation"]["h_mae_meV"] == pytest.approx(parity["h_mae_meV"], rel=1e-9)
    assert models["E3 baseline"]["vf_static_dft_1e6_m_s"] == models["HedgeNet"]["vf_static_dft_1e6_m_s"]
    baseline = models["E3 baseline"]  # after 2 epochs its bands near K may not be two: then it says why
    assert (baseline["vf_static_ml_1e6_m_s"] is None) == ("vf_static_failed" in baseline)
    for m in models.values():
        assert m["test"]["h_mae_meV"] > 0 and m["time_per_structure_s"] > 0
    assert result["baseline"]["epochs"] == 2 and (out / "peers" / "e3h" / "metrics.csv").is_file()
    assert (out / "peers" / "hamiltonian_bands.png").stat().st_size > 0


@pytest.mark.slow
def test_report_collects_figures(workflow_run):
    workdir, _ = workflow_run
    snakemake(workdir, "--report", str(workdir / "report.zip"))
    import zipfile

    # The report stores each figure under a hash of its path: count the file names.
    names = [Path(name).name for name in zipfile.ZipFile(workdir / "report.zip").namelist()]
    for figure in ("spectral_function.png", "vf.png", "vf_orders.png", "crosscheck.png", "parity.png",
                   "phonon_bands.png", "phonons_ml_vs_dft.png", "bands_ml_vs_dft.png"):
        assert figure in names, (figure, names)
    assert names.count("convergence.png") == 2, names  # with the number of samples, with supercell size


def test_lint_has_no_errors():
    result = subprocess.run([*SNAKEMAKE, "--lint", "--snakefile", str(ROOT / "Snakefile"), "--cores", "1"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not re.search(r"^Lints for rule", result.stdout + result.stderr, re.MULTILINE), result.stdout
