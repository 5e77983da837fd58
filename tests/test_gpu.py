"""The CUDA paths of training and inference against the CPU (skipped where torch sees no GPU).

CI has no GPU: these run on a lent GPU machine (``benchmarks/NOTES.md`` says when and what they gave). The
code under test is the same that runs on the CPU everywhere else; only the device differs.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mlepi.evaluation import performance
from mlepi.ml import train
from mlepi.ml.infer import predict_frames
from mlepi.ml.model import HedgeNet

from hedgenet_synthetic import TOY_BASIS, TOY_DFT, bilayer, write_dataset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no GPU")

MODEL = {"hidden": 12, "n_rbf": 5, "num_interactions": 2, "cutoff_intra": 3.0, "cutoff_inter": 3.8}


def test_prediction_on_the_gpu_equals_the_cpu():
    """float64 forces, H and S of a batch of structures, the GPU's (atomic, unordered sums) against the CPU's."""
    torch.manual_seed(0)
    model = HedgeNet.from_config(MODEL, TOY_BASIS)
    model.metadata = {"dft_parameters": TOY_DFT}
    structures = [bilayer(n, rattle=0.05, seed=n) for n in (2, 3)]
    frames = {device: predict_frames(model, structures, ["a", "b"], overlap="model", fermi_level=False,
                                     device=device, dtype=torch.float64) for device in ("cpu", "cuda")}
    for cpu, gpu in zip(frames["cpu"], frames["cuda"]):
        assert gpu.energy == pytest.approx(cpu.energy, rel=1e-12)
        for key in ("forces", "H", "S"):
            np.testing.assert_allclose(getattr(gpu, key), getattr(cpu, key), rtol=0, atol=1e-10, err_msg=key)


def test_one_training_step_on_the_gpu_equals_one_on_the_cpu(tmp_path):
    """torchrun with one process on the GPU (NCCL process group, DistributedDataParallel) and on the CPU (no
    group): the same parameters after one float64 optimizer step, and the GPU run really ran on the GPU."""
    data = tmp_path / "d.h5"
    write_dataset(data, n_frames=5, seed=3, rattle=0.15)
    states = {}
    for device in ("cpu", "cuda"):
        cfg = {"model": MODEL, "train": {"epochs": 1, "batch_size": 4, "val_fraction": 0.2, "dtype": "float64",
                                         "grad_clip": 0.0, "lr": 1e-2, "device": device}}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "-m", "mlepi.cli", "train", "--dataset", str(data), "--params", json.dumps(cfg),
               "--out-dir", str(tmp_path / device)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        grouped = "torch.distributed: nccl backend, 1 process(es), this one on cuda:0" in proc.stderr
        assert grouped == (device == "cuda"), proc.stderr[-2000:]  # one CPU process needs no group
        states[device] = torch.load(tmp_path / device / "checkpoint.pt", weights_only=True, map_location="cpu")
    for key, value in states["cpu"]["model"].items():
        torch.testing.assert_close(states["cuda"]["model"][key], value, rtol=1e-9, atol=1e-11, msg=key)


def test_time_inference_on_the_gpu_reports_its_memory():
    torch.manual_seed(0)
    model = HedgeNet.from_config(MODEL, TOY_BASIS)
    result = performance.time_inference(model, [bilayer(3, rattle=0.05, seed=1)] * 2, repeats=1,
                                        dtype="float32", device="cuda")
    assert result["device"] == "cuda" and result["n_structures"] == 2 and result["peak_gpu_MiB"] > 0


def test_the_training_loop_moves_the_model_to_the_gpu(tmp_path):
    data = tmp_path / "d.h5"
    write_dataset(data, n_frames=4, seed=1)
    cfg = {"model": MODEL, "train": {"epochs": 2, "batch_size": 2, "val_fraction": 0.25, "device": "cuda"}}
    summary = train.run(data, tmp_path / "out", cfg, seed=0)
    assert summary["epochs_run"] == 2 and np.isfinite(summary["best"]["val_H_mae_meV"])
