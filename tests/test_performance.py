"""The performance benchmark's own machinery (mlepi.evaluation.performance): tiling, solver comparison, timing, fit."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mlepi.electrons import tb
from mlepi.evaluation import performance
from mlepi.geometry.neighbors import block_edges
from mlepi.ml.model import HedgeNet

from bilayer_tb import BASIS_SPZ, bilayer_primitive, supercell, tb_frame
from hedgenet_synthetic import TOY_BASIS, bilayer


def test_tiled_frame_has_the_bands_of_the_directly_built_supercell():
    """Tiling the blocks of a 2x2 supercell onto 3x3 copies gives the 6x6 supercell's H(k), S(k): its bands at
    a general k equal those of the tight-binding model evaluated directly on the 6x6 geometry."""
    small = tb_frame(supercell(bilayer_primitive(), np.diag([2, 2, 1])), "small", with_s=True)
    tiled = performance.tiled(small, BASIS_SPZ, 3)
    direct = tb_frame(supercell(bilayer_primitive(), np.diag([6, 6, 1])), "direct", with_s=True)
    assert tiled.n_atoms == direct.n_atoms and tiled.cell_shift.shape == direct.cell_shift.shape
    np.testing.assert_allclose(tiled.cell, direct.cell, atol=1e-12)
    k = [0.17, 0.41, 0.0]
    np.testing.assert_allclose(tb.eigenvalues(tiled, BASIS_SPZ, [k]), tb.eigenvalues(direct, BASIS_SPZ, [k]),
                               atol=1e-10)
    # and the small cell's bands at k / 3 fold into the tiled cell's at k
    folded = tb.eigenvalues(small, BASIS_SPZ, [np.array(k) / 3])[0]
    tiled_bands = tb.eigenvalues(tiled, BASIS_SPZ, [k])[0]
    assert all(np.min(np.abs(tiled_bands - e)) < 1e-10 for e in folded)


def test_eigensolver_scaling_compares_sparse_with_dense():
    frame = tb_frame(supercell(bilayer_primitive(), np.diag([2, 2, 1])), "small", with_s=True)
    frame.fermi_level = 0.0
    rows = performance.eigensolver_scaling(frame, BASIS_SPZ, [1, 2], k=[0.1, 0.2, 0.0], n_states=6,
                                           dense_max_orbitals=40)
    assert [r["n_orbitals"] for r in rows] == [32, 128]
    assert rows[0]["max_abs_diff_eV"] < 1e-10  # dense ran only where it was allowed to
    assert "dense_s" not in rows[1] and rows[1]["sparse_s"] > 0


def test_time_inference_counts_the_graph_it_timed():
    torch.manual_seed(0)
    model = HedgeNet.from_config({"hidden": 8, "n_rbf": 4, "num_interactions": 1, "cutoff_intra": 3.0,
                                  "cutoff_inter": 3.8}, TOY_BASIS)
    atoms = bilayer(2, rattle=0.05)
    result = performance.time_inference(model, atoms, repeats=1, threads=1)
    n_blocks = block_edges(atoms.numbers, atoms.positions, atoms.cell, atoms.pbc, TOY_BASIS)[0].shape[1]
    assert result["n_atoms"] == len(atoms) and result["n_block_edges"] == n_blocks
    assert result["total_s"] == pytest.approx(result["neighbours_s"] + result["model_s"])
    assert result["device"] == "cpu" and result["dtype"] == "float64"


def test_power_law_fit_uses_only_the_sizes_asked_for():
    n = np.array([36, 100, 1000, 10000])
    t = np.array([5.0, 0.1, 1.0, 10.0])  # linear from 100 atoms on; a fixed overhead dominates at 36
    assert performance.fit_power_law(n, t, min_atoms=100) == pytest.approx(1.0, abs=1e-9)
    assert performance.fit_power_law(n, t) < 0.5


def test_batched_throughput_times_one_batch_of_different_structures():
    torch.manual_seed(0)
    model = HedgeNet.from_config({"hidden": 8, "n_rbf": 4, "num_interactions": 1, "cutoff_intra": 3.0,
                                  "cutoff_inter": 3.8}, TOY_BASIS)
    rows = performance.batched_throughput(model, bilayer(1), 2, [1, 3], repeats=1)
    one = bilayer(2)
    single = block_edges(one.numbers, one.positions, one.cell, one.pbc, TOY_BASIS)[0]
    assert [(r["n_structures"], r["n_atoms"]) for r in rows] == [(1, 16), (3, 48)]
    assert rows[1]["n_block_edges"] == pytest.approx(3 * single.shape[1], rel=0.1)  # displaced: a few more/less
    assert rows[1]["per_structure_s"] == pytest.approx(rows[1]["total_s"] / 3)
    assert performance.batch_counts(36) == [1, 8, 113, 452]  # one, a few, one infer batch (4096 atoms), four


def test_gpu_benchmark_writes_its_results_and_figure(tmp_path):
    """The GPU half of the benchmark (benchmarks/performance_gpu.py), run on the CPU: JSON with the scaling
    summary, the batched throughput and the speedup over the CPU benchmark's GPAW time, and the figure."""
    import json

    import ase.io

    torch.manual_seed(0)
    model = HedgeNet.from_config({"hidden": 8, "n_rbf": 4, "num_interactions": 1, "cutoff_intra": 3.0,
                                  "cutoff_inter": 3.8}, TOY_BASIS)
    model.save(tmp_path / "model.pt")
    ase.io.write(tmp_path / "primitive.extxyz", bilayer(1), format="extxyz")
    cpu = {"dft": [{"supercell": [2, 2], "n_atoms": 16, "scf_forces_s": 10.0}], "machine": {"cpus": 2},
           "scaling": [{"n_atoms": 16, "total_s": 0.01}], "ml_batched": []}
    (tmp_path / "cpu.json").write_text(json.dumps(cpu))
    result = performance.run_gpu(tmp_path / "model.pt", tmp_path / "primitive.extxyz", tmp_path / "gpu.json",
                                 tmp_path / "gpu.png", sizes=[2, 3, 5], cpu_results_path=tmp_path / "cpu.json",
                                 device="cpu")
    written = json.loads((tmp_path / "gpu.json").read_text())
    assert [r["n_atoms"] for r in written["scaling"]] == [16, 36, 100]
    assert written["dft_reference"]["scf_forces_s"] == 10.0 and (tmp_path / "gpu.png").stat().st_size > 0
    assert result["speedup_vs_dft"] == pytest.approx(10.0 / written["batched"][0]["total_s"])
    assert result["speedup_vs_dft_batched"] == pytest.approx(10.0 / min(b["per_structure_s"]
                                                                        for b in written["batched"]))


def test_workflow_benchmark_places_each_job_on_the_run_clock(tmp_path):
    """benchmarks/workflow.py: a job's end is its benchmark file's time, its start that less its wall time, both
    from the first job's start; the timeline figure is drawn from them."""
    import importlib.util
    import os

    spec = importlib.util.spec_from_file_location("workflow_benchmark",
                                                  Path(__file__).parents[1] / "benchmarks" / "workflow.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    folder = tmp_path / "results" / "toy" / "benchmarks"
    (folder / "dft").mkdir(parents=True)
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for name, wall, end in (("structure", 30.0, 1000.0), ("dft/fd_000", 50.0, 1080.0), ("train", 300.0, 1400.0)):
        path = folder / f"{name}.tsv"
        path.write_text(header + f"{wall}\t0:00:00\t100.0\t0\t0\t0\t0\t0\t100\t{wall * 0.9}\n")
        os.utime(path, (end, end))
    rules = bench.rule_benchmarks(tmp_path, "toy")
    assert {k: (v["start_s"], v["end_s"]) for k, v in rules.items()} == {
        "structure": (0.0, 30.0), "dft/fd_000": (60.0, 110.0), "train": (130.0, 430.0)}
    assert rules["train"]["cpu_s"] == pytest.approx(270.0)
    result = {"rules": rules, "default_workflow_wall_s": 431.0, "default_workflow_peak_gib": 1.0,
              "machine": {"cores_used": 2}, "rss_samples_s_bytes": [[0.0, 1e8], [400.0, 2e8]]}
    bench.plot_timeline(result, tmp_path / "workflow.png")
    assert (tmp_path / "workflow.png").stat().st_size > 0


def test_alternating_time_per_atom_is_per_atom_and_summarises_the_rounds(monkeypatch):
    """On a clock that advances 1 ms per atom and call, a structure and one four times its size both take 1 ms
    per atom in every round, so every ratio is exactly 1: the estimator's bookkeeping, free of the machine's
    noise (how it behaves on a real, noisy clock is the benchmark's business, benchmarks/NOTES.md §19). Then
    one real timing of the two sizes."""
    torch.manual_seed(0)
    model = HedgeNet.from_config({"hidden": 8, "n_rbf": 4, "num_interactions": 1, "cutoff_intra": 3.0,
                                  "cutoff_inter": 3.8}, TOY_BASIS)
    atoms, large = bilayer(2, rattle=0.05), bilayer(4, rattle=0.05)
    real_steps, now = performance._inference_steps, [0.0]

    def steps_on_the_clock(model, structures, **kwargs):
        graph, predict, model = real_steps(model, structures, **kwargs)
        n_atoms = sum(len(a) for a in structures)

        def predict_and_tick(data):
            now[0] += 1e-3 * n_atoms
            return predict(data)
        return graph, predict_and_tick, model

    with monkeypatch.context() as patch:
        patch.setattr(performance, "_inference_steps", steps_on_the_clock)
        patch.setattr(performance, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: now[0])}))
        result = performance.alternating_time_per_atom(model, [atoms, large], rounds=3, min_s=0.05, threads=1)
    assert result["n_atoms"] == [len(atoms), 4 * len(atoms)] and len(result["ratios"]) == 3
    np.testing.assert_allclose(result["per_atom_s"], 1e-3, rtol=1e-9)
    assert result["ratios"] == pytest.approx([1.0] * 3) and result["ratio"] == pytest.approx(1.0)
    big = performance.alternating_time_per_atom(model, [atoms, large], rounds=1, min_s=0.0, threads=1)
    assert big["n_atoms"] == [len(atoms), 4 * len(atoms)] and big["per_atom_s"][1][0] > 0
