"""Stage train (mlepi.ml.train): learning, metrics, checkpoints and resume, early stopping, torchrun."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mlepi import config
from mlepi.ml import train
from mlepi.ml.graph import frame_to_data
from mlepi.ml.model import HedgeNet

from mlepi.formats.frames import write_frames

from hedgenet_synthetic import TOY_BASIS, TOY_DFT, bilayer, synthetic_frames, write_dataset

torch.set_num_threads(1)

TINY = {"model": {"hidden": 12, "n_rbf": 5, "num_interactions": 1, "cutoff_intra": 3.0, "cutoff_inter": 3.8},
        "train": {"epochs": 10, "batch_size": 2, "lr": 1e-2, "patience": 100, "val_fraction": 0.25}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "dataset.h5"
    write_dataset(path, n_frames=6, seed=11)
    return path


def read_metrics(out_dir):
    with open(Path(out_dir) / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def with_train(**keys):
    return {"model": TINY["model"], "train": {**TINY["train"], **keys}}


def test_split_is_seeded_and_disjoint():
    a_train, a_val = train.split_indices(range(10), 0.2, seed=3)
    b_train, b_val = train.split_indices(range(10), 0.2, seed=3)
    assert np.array_equal(a_train, b_train) and np.array_equal(a_val, b_val)
    assert len(a_val) == 2 and set(a_train) | set(a_val) == set(range(10)) and not set(a_train) & set(a_val)
    assert len(train.split_indices(range(1), 0.5, seed=0)[1]) == 0  # one frame: train only


def test_split_keeps_antithetic_pairs_together():
    from mlepi.formats.frames import Frame

    def thermal(k):
        return Frame(name=f"mc_T300_s{k:03d}", numbers=np.array([6]), positions=np.zeros((1, 3)),
                     cell=np.eye(3), pbc=np.array([True, True, False]), layer=np.array([0]),
                     info={"kind": "thermal", "purpose": "train", "temperature_K": 300.0, "sample_index": k,
                           "antithetic": True})

    frames = [thermal(k) for k in range(8)]
    groups = [train.split_group(f) for f in frames]
    for seed in range(10):
        _, val = train.split_indices(groups, 0.25, seed)
        assert len(val) == 2 and val[0] // 2 == val[1] // 2, val  # u and −u, never one without the other


def test_training_reduces_the_loss_and_writes_outputs(dataset, tmp_path):
    summary = train.run(dataset, tmp_path, TINY, seed=0)
    rows = read_metrics(tmp_path)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11))
    for column in ("val_energy_mae_meV_per_atom", "val_forces_mae_meV_per_A", "val_H_mae_meV", "val_S_mae"):
        assert np.isfinite(float(rows[-1][column]))
    assert float(rows[-1]["train_loss"]) < 0.85 * float(rows[0]["train_loss"])
    assert min(float(r["val_loss"]) for r in rows) < float(rows[0]["val_loss"])
    model = HedgeNet.load(tmp_path / "model.pt")
    assert model.metadata["dft_parameters"]["occupation_width"] == 0.1
    assert model.metadata["kpoint_length"] == pytest.approx([4 * 2.46, 4 * 2.46])  # 2x2 cells with 2x2 k
    assert model.metadata["epoch"] == summary["best_epoch"]
    assert model.config["hidden"] == TINY["model"]["hidden"]


def interrupt_after(epoch, monkeypatch):
    """Make the run die right after writing the checkpoint of ``epoch``, as a kill would."""
    original = train._save_checkpoint

    def save_then_die(path, state):
        original(path, state)
        if state["epoch"] == epoch:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(train, "_save_checkpoint", save_then_die)


def test_resume_after_a_kill_continues_the_epoch_count_and_matches_an_uninterrupted_run(
        dataset, tmp_path, monkeypatch):
    config = with_train(epochs=4)
    train.run(dataset, tmp_path / "whole", config, seed=1)

    with monkeypatch.context() as patch:
        interrupt_after(2, patch)
        with pytest.raises(KeyboardInterrupt):
            train.run(dataset, tmp_path / "killed", config, seed=1)
    assert [int(r["epoch"]) for r in read_metrics(tmp_path / "killed")] == [1, 2]
    train.run(dataset, tmp_path / "killed", config, seed=1)

    whole, resumed = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "killed")
    assert [int(r["epoch"]) for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(whole, resumed):
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=1e-5)
    state_a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["model"]
    state_b = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["model"]
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=1e-5, atol=1e-6)

    # A finished run found again does nothing more; a different config is a new run, started afresh.
    train.run(dataset, tmp_path / "killed", config, seed=1)
    assert len(read_metrics(tmp_path / "killed")) == 4
    with pytest.warns(UserWarning, match="different config"):
        train.run(dataset, tmp_path / "killed", with_train(epochs=3, lr=1e-3), seed=1)
    assert [int(r["epoch"]) for r in read_metrics(tmp_path / "killed")] == [1, 2, 3]
    train.run(dataset, tmp_path / "killed", with_train(epochs=2, lr=1e-3), seed=1, resume=False)  # afresh
    assert [int(r["epoch"]) for r in read_metrics(tmp_path / "killed")] == [1, 2]


def test_early_stopping_after_patience_epochs_without_improvement(dataset, tmp_path):
    # lr 1e-30: every float32 step rounds to no change (the schema refuses lr = 0), so no epoch improves
    summary = train.run(dataset, tmp_path, with_train(epochs=20, lr=1e-30, patience=2), seed=0)
    assert summary["stopped_early"] and summary["best_epoch"] == 1
    assert len(read_metrics(tmp_path)) == 3  # the best epoch, then two without improvement


def test_unknown_config_key_is_an_error(dataset, tmp_path):
    with pytest.raises(config.ConfigError, match="'epoch' was unexpected"):
        train.run(dataset, tmp_path, with_train(epoch=3), seed=0)


def test_torchrun_with_two_gloo_ranks(dataset, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mlepi.cli", "train", "--dataset", str(dataset), "--params", json.dumps(with_train(epochs=2)),
           "--out-dir", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch.distributed: gloo backend, 2 process(es), this one on cpu" in proc.stderr
    rows = read_metrics(tmp_path / "out")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert np.isfinite(float(rows[-1]["val_H_mae_meV"]))
    assert (tmp_path / "out" / "model.pt").exists() and (tmp_path / "out" / "checkpoint.pt").exists()


def test_one_step_on_two_ranks_equals_one_step_on_one_rank_with_the_whole_batch(tmp_path):
    """DistributedDataParallel: the 4 training frames as one batch on 1 rank, or as 2 + 2 on 2 gloo ranks,
    give the same parameters after the (single) optimizer step, in float64 to 1e-12. Frames are rattled
    differently, so the ranks' shards hold different numbers of H blocks: the loss is normalised globally."""
    data = tmp_path / "d.h5"
    write_dataset(data, n_frames=5, seed=3, rattle=0.15)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    states = []
    for ranks in (1, 2):
        cfg = with_train(epochs=1, batch_size=4 // ranks, val_fraction=0.2, dtype="float64", grad_clip=0.0)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
               "-m", "mlepi.cli", "train", "--dataset", str(data), "--params", json.dumps(cfg),
               "--out-dir", str(tmp_path / f"r{ranks}")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        states.append(torch.load(tmp_path / f"r{ranks}" / "checkpoint.pt", weights_only=True)["model"])
    for key, value in states[0].items():
        torch.testing.assert_close(states[1][key], value, rtol=1e-12, atol=1e-12, msg=key)
    torch.manual_seed(0)  # the initial weights, as train builds them (seed 0)
    init = dict(HedgeNet.from_config(TINY["model"], TOY_BASIS).double().named_parameters())
    assert max(float((states[0][k] - v.detach()).abs().max()) for k, v in init.items()) > 1e-4  # it moved


def test_checkpoint_fingerprint_sees_the_data_not_only_its_names():
    """Recomputed DFT with other numbers under the same frame names and config must not resume a checkpoint."""
    from mlepi.formats.frames import Frame
    from mlepi.ml.train import content_hash

    atoms = bilayer(2, rattle=0.05)
    frames = [Frame.from_atoms(f"f{k}", atoms, energy=-1.0 * k, forces=np.zeros((len(atoms), 3))) for k in range(2)]
    same = [Frame.from_atoms(f"f{k}", atoms, energy=-1.0 * k, forces=np.zeros((len(atoms), 3))) for k in range(2)]
    assert content_hash(frames) == content_hash(same)
    same[1].forces[3, 2] = 1e-9
    assert content_hash(frames) != content_hash(same)


@pytest.mark.parametrize("heterogeneous", [True, False])
def test_decay_fit_recovers_an_exponential_fall_of_the_blocks_with_distance(heterogeneous):
    """Off-site blocks whose RMS is A exp(-r / λ) (intra) and B exp(-r / μ) (inter): the fitted log-polynomial is
    that straight line per edge kind (one line over both with one edge type), on the range of the data, and the
    model's decay times H_scale gives the RMS back at any length of that range."""
    model = HedgeNet.from_config({**TINY["model"], "heterogeneous": heterogeneous}, TOY_BASIS)
    graphs, lengths = [], []
    for frame in synthetic_frames(3, rattle=0.1):
        g = frame_to_data(frame, TOY_BASIS, 3.0, 3.8)
        i, j = g.block_edge_index
        r = (g.pos[j] - g.pos[i] + g.block_cell_shift.double() @ g.cell[0]).norm(dim=1)
        inter = g.layer[i] != g.layer[j]
        law = torch.where(inter & heterogeneous, 0.3 * torch.exp(-r / 0.7), 2.0 * torch.exp(-r / 0.5))
        g.H = law.view(-1, 1, 1) * model.block_mask(g.numbers, g.block_edge_index)  # every element: RMS = law
        graphs.append(g)
        lengths.append(r[(i != j) | (g.block_cell_shift != 0).any(dim=1)])
    h_scale = 0.1
    coef, span = train.decay_fit(graphs, model, h_scale)
    lines = [(2.0, 0.5), (0.3, 0.7)] if heterogeneous else [(2.0, 0.5)]
    for k, (amplitude, length) in enumerate(lines):
        np.testing.assert_allclose(coef[k], [0, 0, -1 / length, np.log(amplitude / h_scale)], atol=1e-8)
    r = torch.cat(lengths)
    assert span[:, 0].min() == pytest.approx(float(r.min())) and span[:, 1].max() == pytest.approx(float(r.max()))
    model.set_standardisation({"H_scale": h_scale, "H_decay": coef, "H_decay_range": span})
    x = torch.tensor([2.0, 2.5], dtype=torch.float64)
    same = torch.tensor([True, True])
    np.testing.assert_allclose((h_scale * model.decay(x, same)).numpy(), 2.0 * np.exp(-x.numpy() / 0.5),
                               rtol=1e-6)  # float32 buffers


def test_training_on_two_threads_is_bit_reproducible(tmp_path):
    """The workflow trains on `resources.train_threads` threads; with two, torch's parallel accumulation summed
    in a varying order (float32 forces 1e-7 apart from run to run, so no resume could match an uninterrupted
    run). Training runs torch's deterministic kernels on the CPU: two runs give the same weights, bit for bit."""
    path = tmp_path / "dataset.h5"
    write_dataset(path, n_frames=4, n=4, seed=5)  # 64 atoms: large enough for the parallel kernels
    config = {"model": {**TINY["model"], "hidden": 32}, "train": {**TINY["train"], "epochs": 2}}
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for run in ("a", "b"):
            train.run(path, tmp_path / run, config, seed=3)
    finally:
        torch.set_num_threads(threads)
    assert not torch.are_deterministic_algorithms_enabled()  # restored for the rest of the process
    state_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    state_b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


@pytest.mark.parametrize("numbers", [[6, 6, 6], [6, 1, 6]])
def test_block_residuals_are_every_real_orbital_pair_and_nothing_else(numbers):
    """One species fills the padded blocks (the residuals are then the flattened blocks, without a selection);
    with H next to C the padding is left out. Both: exactly the elements block_mask selects, in its order."""
    from torch_geometric.data import Data

    basis = {"name": "toy", "orbitals": {"6": [["2s", 0], ["2p", 1]], "1": [["1s", 0]]},
             "rcut": {"6": 2.2, "1": 1.6}, "valence": {"6": 4, "1": 1}}
    torch.manual_seed(0)
    model = HedgeNet.from_config({"hidden": 8, "n_rbf": 4, "num_interactions": 1}, basis)
    batch = Data(numbers=torch.tensor(numbers), block_edge_index=torch.tensor([[0, 1, 2, 0], [0, 2, 1, 1]]),
                 H=torch.randn(4, 4, 4))
    out = {"H": torch.randn(4, 4, 4)}
    mask = model.block_mask(batch.numbers, batch.block_edge_index)
    assert model.fills_padding(batch.numbers) == bool(mask.all()) == (1 not in numbers)
    res = train.residuals(out, batch, model, ("H",))["H"]
    assert torch.equal(res, (out["H"] - batch.H)[mask])


def test_a_round_trains_on_from_the_previous_model_and_keeps_its_validation_frames(dataset, tmp_path):
    """mlepi train --init (active learning): the previous model's weights and validation frames, every new
    frame in training, active.epochs epochs at train.lr * active.lr_factor."""
    train.run(dataset, tmp_path / "first", TINY, seed=0)
    first = HedgeNet.load(tmp_path / "first" / "model.pt")
    frames = synthetic_frames(6, seed=11) + synthetic_frames(2, seed=40)
    for k, frame in enumerate(frames[6:]):
        frame.name = f"r1_sel_{k:03d}"
    bigger = tmp_path / "bigger.h5"
    write_frames(bigger, frames, basis=TOY_BASIS, source="dft", parameters=TOY_DFT, provenance={})
    # lr 1e-30: no float32 step changes a weight, so the round's first epoch shows the weights it started from
    config = {**TINY, "active": {"epochs": 2, "lr_factor": 1e-28}}
    train.run(bigger, tmp_path / "round", config, seed=0, init=tmp_path / "first" / "model.pt")
    round_model = HedgeNet.load(tmp_path / "round" / "model.pt")
    assert round_model.metadata["validation_frames"] == first.metadata["validation_frames"]
    assert set(round_model.metadata["training_frames"]) == set(first.metadata["training_frames"]) | {
        "r1_sel_000", "r1_sel_001"}
    assert round_model.metadata["init_model"] == str(tmp_path / "first" / "model.pt")
    rows = read_metrics(tmp_path / "round")
    assert len(rows) == 2 and float(rows[0]["lr"]) == pytest.approx(1e-28 * TINY["train"]["lr"])
    # The same weights on the same validation frames: the first training's best epoch's errors, exactly.
    best = next(r for r in read_metrics(tmp_path / "first") if int(r["epoch"]) == first.metadata["epoch"])
    for column in ("val_H_mae_meV", "val_forces_mae_meV_per_A", "val_energy_mae_meV_per_atom"):
        assert float(rows[0][column]) == pytest.approx(float(best[column]), rel=1e-5), column

    other = {"model": {**TINY["model"], "hidden": 8}, "train": TINY["train"]}
    with pytest.raises(ValueError, match=r"differs from the config's in \['hidden'\]"):
        train.run(bigger, tmp_path / "other", other, seed=0, init=tmp_path / "first" / "model.pt")
