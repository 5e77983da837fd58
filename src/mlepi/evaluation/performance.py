"""What HedgeNet inference costs, against GPAW and against system size (``benchmarks/performance.py``).

Timed per structure, best of ``repeats`` after one warm-up:

- ``neighbours_s``: the H/S block edges and the message-passing edges (:mod:`mlepi.geometry.neighbors`) and the graph;
- ``model_s``: one HedgeNet forward pass with forces (autograd) and every H block, in the precision
  ``mlepi infer`` uses (the model's training precision) unless stated. S is not predicted: the workflow takes
  GPAW's exact S (:func:`mlepi.ml.completion.exact_overlap`), whose cost is reported apart;
- GPAW: the SCF and forces of ``mlepi dft`` (:func:`mlepi.dft.scf.compute_frame`), and the H(R)/S(R) extraction.

Peak memory is the resident set of a fresh process that imports, builds and predicts one structure: every size
runs in its own process, so the peak of one size does not hide that of the next. The time per atom near 10^4
atoms over that near 10^2 is timed again with the two sizes in alternation (:func:`alternating_time_per_atom`).

Band stage at scale: H(k), S(k) of large supercells are tiled exactly from the DFT blocks of the pristine 3x3
supercell (:func:`tiled`), and the states nearest E_F from the sparse shift-invert solver
(:func:`mlepi.electrons.tb.eigenvalues_near`) are checked against dense diagonalisation where that still runs.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import make_supercell
from torch_geometric.data import Batch
from tqdm import tqdm

from mlepi.config import ConfigError, stage_config
from mlepi.dft.tiling import tile_frame
from mlepi.electrons import tb
from mlepi.figures import plot_performance, plot_performance_gpu
from mlepi.formats.frames import Frame, FramesFile
from mlepi.formats.provenance import record, write_json
from mlepi.formats.structures import read_structure
from mlepi.ml.completion import exact_overlap
from mlepi.ml.infer import BATCH_ATOMS, structure_graph
from mlepi.ml.memory import keep_freed_memory
from mlepi.ml.model import HedgeNet


def displaced_supercell(primitive, n: int, sigma: float, seed: int):
    """The ``n x n`` in-plane supercell of ``primitive`` (with its ``layer`` array), every atom displaced by a
    Gaussian of ``sigma`` Å per Cartesian component (seeded): the geometry of a thermal sample, for timing."""
    atoms = primitive.repeat((n, n, 1))
    atoms.positions += np.random.default_rng(seed).normal(scale=sigma, size=atoms.positions.shape)
    atoms.info = {"supercell": [n, n], "seed": seed, "sigma_A": sigma}
    return atoms


def _best(fn, repeats: int) -> tuple[float, object]:
    """(shortest wall time in s of ``repeats`` calls after one warm-up, last result)."""
    result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def _inference_steps(model, structures: list, *, dtype: str, device: str):
    """(graph, predict, model): building the batched graph of ``structures`` and one forward pass with forces and
    H on it, as ``mlepi infer`` does (:func:`mlepi.ml.infer.predict_frames`); on a GPU both wait for the device."""
    model = model.to(device=device, dtype=getattr(torch, dtype)).eval()
    gpu = torch.device(device).type == "cuda"

    def graph():
        data = Batch.from_data_list([structure_graph(model, s)[1] for s in structures]).to(device)
        if gpu:
            torch.cuda.synchronize()
        return data

    def predict(data):
        with torch.no_grad():
            out = model(data, forces=True, overlap=False)
        if gpu:
            torch.cuda.synchronize()
        return out["forces"], out["H"]

    return graph, predict, model


def time_inference(model, atoms, *, repeats: int = 3, dtype: str = "float64", threads: int | None = None,
                   device: str = "cpu") -> dict:
    """Seconds for the graph and for one forward pass (forces and H) of ``model`` on ``atoms``.

    ``atoms`` is one structure or a list of them, predicted together in one batch as ``mlepi infer`` does
    (:func:`mlepi.ml.infer.predict_frames`); ``n_structures`` says how many. On a GPU the graph is built on the
    CPU and moved (its time includes the copy), and every timing waits for the device to finish;
    ``peak_gpu_MiB`` is the largest allocation of the forward pass.
    """
    structures = atoms if isinstance(atoms, list) else [atoms]
    if threads is not None:
        torch.set_num_threads(threads)
    graph, predict, model = _inference_steps(model, structures, dtype=dtype, device=device)
    gpu = torch.device(device).type == "cuda"
    graph_s, data = _best(graph, repeats)
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    model_s, _ = _best(lambda: predict(data), repeats)
    result = {"n_atoms": int(data.num_nodes), "n_structures": len(structures),
              "n_block_edges": int(data.block_edge_index.shape[1]),
              "n_message_edges": int(data.edge_index.shape[1]), "neighbours_s": graph_s, "model_s": model_s,
              "total_s": graph_s + model_s, "dtype": dtype, "device": str(device),
              "torch_threads": torch.get_num_threads()}
    if gpu:
        result["peak_gpu_MiB"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def alternating_time_per_atom(model, structures: list, *, rounds: int = 5, min_s: float = 1.0,
                              dtype: str = "float64", threads: int | None = None) -> dict:
    """Time per atom (graph + forward pass with forces and H) of each structure, measured in alternation.

    ``rounds`` rounds time every structure in turn, each for at least ``min_s`` s of repeated calls (at least
    one call; the median call counts), after one warm-up call each. Timing the sizes next to each other in
    every round, rather than one after another in a sweep, cancels the drift of a shared machine's speed
    (sizes of a sweep scatter by ±20 % here); ``ratios[r]`` is round r's time per atom of the last structure
    over the first's, and ``ratio`` their median.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    calls, n_atoms = [], []
    for atoms in structures:
        graph, predict, model = _inference_steps(model, [atoms], dtype=dtype, device="cpu")
        calls.append(lambda graph=graph, predict=predict: predict(graph()))
        n_atoms.append(len(atoms))
    for call in calls:
        call()  # warm-up: first-touch page faults, allocator pools
    per_atom_s = [[] for _ in calls]
    for _ in range(rounds):
        for call, n, times in zip(calls, n_atoms, per_atom_s):
            seconds, start = [], time.perf_counter()
            while not seconds or time.perf_counter() - start < min_s:
                t0 = time.perf_counter()
                call()
                seconds.append(time.perf_counter() - t0)
            times.append(float(np.median(seconds)) / n)
    ratios = [last / first for first, last in zip(per_atom_s[0], per_atom_s[-1])]
    return {"n_atoms": n_atoms, "per_atom_s": per_atom_s, "ratios": ratios, "ratio": float(np.median(ratios)),
            "rounds": rounds, "min_s": min_s, "dtype": dtype, "torch_threads": torch.get_num_threads()}


def batched_throughput(model, primitive, n: int, counts, *, sigma: float = 0.05, seed: int = 0,
                       dtype: str = "float32", device: str = "cpu", repeats: int = 3) -> list:
    """:func:`time_inference` of ``count`` different displaced ``n x n`` supercells in one batch, for each of
    ``counts``, with ``per_structure_s`` = total over count: the cost of one thermal sample when ``mlepi
    infer`` predicts many together (its batches hold up to :data:`mlepi.ml.infer.BATCH_ATOMS` atoms)."""
    rows = []
    for count in counts:
        structures = [displaced_supercell(primitive, n, sigma, seed + k) for k in range(int(count))]
        row = time_inference(model, structures, repeats=repeats, dtype=dtype, device=device)
        rows.append({**row, "supercell": n, "per_structure_s": row["total_s"] / int(count)})
    return rows


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: peak of this process image) in MiB.

    Not ``ru_maxrss``: Linux carries it over ``exec``, so a spawned child would report its parent's peak.
    """
    with open("/proc/self/status") as f:
        return next(float(line.split()[1]) / 1024 for line in f if line.startswith(field + ":"))


def _inference_job(model_path, primitive_path, n, sigma, seed, repeats, dtype, threads, device) -> dict:
    """One size in a fresh process: timings plus its peak resident memory, and the baseline after imports."""
    keep_freed_memory()  # as in mlepi infer: the warm-up's memory is reused by the timed calls
    baseline = _status_mib("VmRSS")
    model = HedgeNet.load(model_path)
    atoms = displaced_supercell(read_structure(primitive_path), n, sigma, seed)
    repeats = repeats if len(atoms) < 4000 else 1  # large sizes: one timed call after the warm-up
    result = time_inference(model, atoms, repeats=repeats, dtype=dtype, threads=threads, device=device)
    return {**result, "supercell": n, "peak_rss_MiB": _status_mib("VmHWM"), "baseline_rss_MiB": baseline}


def _alternating_job(model_path, primitive_path, sizes, sigma, seed, dtype) -> dict:
    """:func:`alternating_time_per_atom` of ``n x n`` supercells for n in ``sizes`` (run it in a fresh process)."""
    keep_freed_memory()
    primitive = read_structure(primitive_path)
    structures = [displaced_supercell(primitive, int(n), sigma, seed) for n in sizes]
    return alternating_time_per_atom(HedgeNet.load(model_path), structures, dtype=dtype)


def _fresh_process(fn, *args):
    """``fn(*args)`` in a fresh (spawned) process: its own peak memory, no state left by earlier measurements."""
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def inference_scaling(model_path, primitive_path, sizes, *, sigma: float = 0.05, seed: int = 0,
                      repeats: int = 3, dtype: str = "float64", threads: int | None = None, device: str = "cpu",
                      progress=None) -> list:
    """:func:`time_inference` for ``n x n`` supercells, each size in a fresh process (peak memory per size)."""
    results = []
    for n in sizes:
        results.append(_fresh_process(_inference_job, str(model_path), str(primitive_path), int(n), sigma, seed,
                                      repeats, dtype, threads, device))
        if progress is not None:
            progress(results[-1])
    return results


def batch_counts(n_atoms: int) -> list:
    """How many structures of ``n_atoms`` to time together: one, a few, as many as one batch of ``mlepi infer``
    holds (:data:`mlepi.ml.infer.BATCH_ATOMS`), and four times that (does a GPU want larger batches?)."""
    full = max(1, BATCH_ATOMS // n_atoms)
    return sorted({1, min(8, full), full, 4 * full})


def gpu_measurements(model_path, primitive_path, sizes, n: int, *, sigma: float = 0.05, seed: int = 0,
                     dft_s: float | None = None, device: str = "cuda", progress=None) -> dict:
    """The inference scaling and the batched throughput of ``n x n`` supercells on the GPU, in the precision
    ``mlepi infer`` runs the model in (its training precision), with the speedups over ``dft_s`` (seconds of
    GPAW's SCF and forces for the ``n x n`` supercell) when given. (``device``: 'cpu' runs the same
    measurement without a GPU, for tests.)"""
    model = HedgeNet.load(model_path)
    dtype = str(model.dtype).removeprefix("torch.")
    scaling = inference_scaling(model_path, primitive_path, sizes, sigma=sigma, seed=seed, dtype=dtype,
                                device=device, progress=progress)
    primitive = read_structure(primitive_path)
    batched = batched_throughput(model, primitive, n, batch_counts(4 * n * n), sigma=sigma, seed=seed,
                                 dtype=dtype, device=device)
    name = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else machine()["cpu"]
    result = {"device": name, "dtype": dtype, "scaling": scaling,
              **_scaling_summary(scaling), "batched": batched}
    if dft_s is not None:
        result.update(speedup_vs_dft=dft_s / batched[0]["total_s"],
                      speedup_vs_dft_batched=dft_s / min(b["per_structure_s"] for b in batched))
    return result


def run_gpu(model_path, primitive_path, out_path, figure_path, *, sizes, sigma: float = 0.05, seed: int = 0,
            cpu_results_path=None, device: str = "cuda", progress=None) -> dict:
    """:func:`gpu_measurements` on a machine without GPAW: the GPU half of :func:`run`.

    ``cpu_results_path``: the ``performance.json`` of :func:`run` on the CPU machine. Its GPAW time of the
    first ``dft_sizes`` supercell gives the speedups (GPAW on that machine, HedgeNet on this GPU: the
    result says both), and its CPU scaling is drawn beside the GPU's.
    """
    cpu = json.loads(Path(cpu_results_path).read_text()) if cpu_results_path is not None else None
    dft = cpu["dft"][0] if cpu is not None else None
    n = dft["supercell"][0] if dft is not None else 3
    gpu = gpu_measurements(model_path, primitive_path, sizes, n, sigma=sigma, seed=seed,
                           dft_s=dft["scf_forces_s"] if dft is not None else None, device=device,
                           progress=progress)
    result = {**gpu, "machine": machine(),
              "dft_reference": None if cpu is None else {"scf_forces_s": dft["scf_forces_s"],
                                                         "n_atoms": dft["n_atoms"], "machine": cpu["machine"]},
              "settings": {"sigma_A": sigma, "seed": seed, "sizes": list(sizes), "model": str(model_path)}}
    result["provenance"] = record({}, seed=seed, model=str(model_path))
    write_json(out_path, result)
    plot_performance_gpu(result, cpu, figure_path)
    return result


def fit_power_law(n_atoms, seconds, min_atoms: float = 0) -> float:
    """Exponent b of t = a N^b, least squares in log-log over the sizes with at least ``min_atoms`` atoms
    (over all sizes if fewer than two have that many)."""
    n, t = np.asarray(n_atoms, dtype=float), np.asarray(seconds, dtype=float)
    keep = n >= min_atoms
    keep = keep if keep.sum() >= 2 else np.ones_like(keep)
    return float(np.polyfit(np.log(n[keep]), np.log(t[keep]), 1)[0])


def time_dft(atoms, dft_cfg: dict, supercell) -> dict:
    """Seconds of ``mlepi dft``'s work on ``atoms``: SCF + forces, and the H(R)/S(R) extraction."""
    # GPAW (mlepi.dft) only here: the inference measurements run in fresh processes that import this module,
    # and their baseline memory should not carry GPAW, which inference does not load.
    from mlepi.dft.scf import compute_frame

    atoms = atoms.copy()
    t0 = time.perf_counter()
    _, _, _, timings = compute_frame(atoms, dft_cfg, supercell, name="bench")
    total = time.perf_counter() - t0
    return {"n_atoms": len(atoms), "supercell": list(supercell), "scf_forces_s": timings["scf_forces"],
            "blocks_s": timings["blocks"], "total_s": total}


# ------------------------------------------------------------------------------------------- band stage
def tiled(frame: Frame, basis: dict, m: int) -> Frame:
    """``frame`` (a pristine periodic supercell) tiled onto its ``m x m`` in-plane supercell
    (:func:`mlepi.dft.tiling.tile_frame`, exact for an undisplaced crystal)."""
    big = make_supercell(frame.to_atoms(), np.diag([m, m, 1]))
    return tile_frame(frame, basis, big, f"{frame.name}_x{m}")


def eigensolver_scaling(frame: Frame, basis: dict, multiples, *, k, n_states: int = 16,
                        dense_max_orbitals: int = 5000, progress=None) -> list:
    """Sparse shift-invert (``n_states`` nearest E_F) against dense diagonalisation on tiled supercells.

    ``k`` is a reduced k point of the small cell's reciprocal lattice; in the m x m supercell it is m k (the
    same Bloch phase per small cell), so every size solves the same physical problem. Dense runs only up to
    ``dense_max_orbitals``; where both run, ``max_abs_diff_eV`` compares their states near E_F.
    """
    results = []
    for m in multiples:
        big = tiled(frame, basis, int(m))
        k_big = np.asarray(k, dtype=float) * m
        n_orb = int(tb.orbital_offsets(big.numbers, basis)[-1])
        t0 = time.perf_counter()
        sparse = tb.eigenvalues_near(big, basis, k_big, big.fermi_level, n_states)
        row = {"multiple": int(m), "n_atoms": big.n_atoms, "n_orbitals": n_orb,
               "sparse_s": time.perf_counter() - t0}
        if n_orb <= dense_max_orbitals:
            t0 = time.perf_counter()
            dense = tb.eigenvalues(big, basis, [k_big])[0]
            row["dense_s"] = time.perf_counter() - t0
            nearest = np.sort(dense[np.argsort(np.abs(dense - big.fermi_level))[:n_states]])
            row["max_abs_diff_eV"] = float(np.abs(nearest - sparse).max())
        results.append(row)
        if progress is not None:
            progress(row)
    return results


# ------------------------------------------------------------------------------------------------ run
def machine() -> dict:
    """The machine the numbers were measured on."""
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                   platform.processor())
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch_threads": torch.get_num_threads(), "memory_gib": os.sysconf("SC_PAGE_SIZE")
            * os.sysconf("SC_PHYS_PAGES") / 2**30,
            "blas_threads_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}


def _scaling_summary(rows: list) -> dict:
    """Fitted exponents (total, network alone) and the time per atom near 10^4 atoms over that near 10^2."""
    n = [r["n_atoms"] for r in rows]
    by_n = {r["n_atoms"]: r for r in rows}
    small, large = (min(by_n, key=lambda k: abs(np.log(k / target))) for target in (1e2, 1e4))
    return {"scaling_exponent": fit_power_law(n, [r["total_s"] for r in rows], 100),
            "scaling_exponent_model": fit_power_law(n, [r["model_s"] for r in rows], 100),
            "time_per_atom_ratio_1e4_vs_1e2": (by_n[large]["total_s"] / large) / (by_n[small]["total_s"] / small),
            "time_per_atom_sizes": [small, large]}


def _read_workflow_benchmark(path) -> dict:
    """The JSON of ``benchmarks/workflow.py``, checked for the keys ``run`` merges in."""
    try:
        workflow = json.loads(Path(path).read_text())
        missing = [k for k in ("default_workflow_wall_s", "default_workflow_peak_gib", "rules") if k not in workflow]
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"--workflow {path}: not a readable workflow benchmark JSON ({err})") from None
    if missing:
        raise ConfigError(f"--workflow {path}: lacks {missing}; give the workflow.json of benchmarks/workflow.py")
    return workflow


def run(model_path, primitive_path, pristine_path, out_path, figure_path, config: dict | None = None, *,
        workflow_path=None) -> dict:
    """Measure what the module docstring lists; write the JSON results and the figure.

    Parameters
    ----------
    model_path : ``model.pt`` (``mlepi train``); primitive_path : the relaxed primitive cell (``mlepi structure``);
    pristine_path : the DFT frames file of the pristine supercell (``mlepi dft``), tiled for the band stage.
    config : config sections (:func:`mlepi.config.stage_config`); the stage reads the ``performance`` section:
        ``sizes`` (in-plane supercell multiples n for the inference scaling, 4 n^2 atoms), ``dft_sizes`` (those
        for GPAW), ``band_multiples`` (m for the band-stage solver on m x m copies of the pristine supercell),
        ``displacement_A`` (the Gaussian displacements of the timed structures) and ``seed``.
    workflow_path : optional ``benchmarks/results/workflow.json`` (``benchmarks/workflow.py``) to merge in.
    """
    cfg = stage_config("performance", config)["performance"]
    sizes, dft_sizes, band_multiples = cfg["sizes"], cfg["dft_sizes"], cfg["band_multiples"]
    sigma, seed = cfg["displacement_A"], cfg["seed"]
    keep_freed_memory()  # for GPAW and HedgeNet alike in this process (mlepi.ml.memory)
    # Every input is read before the first timing, so a bad one fails in seconds, not after the benchmark.
    primitive = read_structure(primitive_path)
    model = HedgeNet.load(model_path)
    pristine = FramesFile(pristine_path)
    pristine_frame = pristine[0]
    workflow = _read_workflow_benchmark(workflow_path) if workflow_path is not None else None
    dft_cfg = model.metadata["dft_parameters"]  # GPAW as the model's training data were computed
    native = str(model.dtype).removeprefix("torch.")  # the precision `mlepi infer` runs in
    sweeps = [native] + (["float64"] if native != "float64" else [])
    bar = tqdm(total=3 + len(dft_sizes) + len(sweeps) * len(sizes) + len(band_multiples), desc="performance",
               unit="step")

    def step(label):
        bar.set_postfix_str(label)
        bar.update()

    # ML vs DFT on the same displaced 3x3 supercell (the default config's), one process, same threads.
    n0 = int(dft_sizes[0])
    same = displaced_supercell(primitive, n0, sigma, seed)
    ml = {dtype: time_inference(model, same, dtype=dtype) for dtype in ("float64", "float32")}
    batched = batched_throughput(model, primitive, n0, batch_counts(len(same)), sigma=sigma, seed=seed,
                                 dtype=native)
    step("ML")
    frame, _ = structure_graph(model, same)
    overlap_s, _ = _best(lambda: exact_overlap(frame, dft_cfg), 1)
    step("GPAW S")
    dft = []
    for n in dft_sizes:
        dft.append(time_dft(displaced_supercell(primitive, int(n), sigma, seed), dft_cfg, (int(n), int(n))))
        step(f"GPAW {n}x{n}")
    scaling = {dtype: inference_scaling(model_path, primitive_path, sizes, sigma=sigma, seed=seed, dtype=dtype,
                                        progress=lambda r: step(f"{r['n_atoms']} atoms, {r['dtype']}"))
               for dtype in sweeps}
    # The time-per-atom goal compares two sizes whose sweep points scatter with the machine's speed: timed
    # again in alternation, in one fresh process (docs/performance.md).
    summary = _scaling_summary(scaling[native])
    size_of = {row["n_atoms"]: int(n) for n, row in zip(sizes, scaling[native])}
    alternating = _fresh_process(_alternating_job, str(model_path), str(primitive_path),
                                 [size_of[a] for a in summary["time_per_atom_sizes"]], sigma, seed, native)
    step("time per atom, alternating")
    gpu = None
    if torch.cuda.is_available():  # the same on the GPU; the CPU numbers above stay the reference
        gpu = gpu_measurements(model_path, primitive_path, sizes, n0, sigma=sigma, seed=seed,
                               dft_s=dft[0]["scf_forces_s"])
    k = np.array([0.11, 0.23, 0.0])  # a general k point: complex H(k), no symmetry to exploit
    bands = eigensolver_scaling(pristine_frame, pristine.basis, band_multiples, k=k,
                                progress=lambda r: step(f"eig {r['n_orbitals']} orbitals"))
    bar.close()

    result = {
        "inference_dtype": native,
        "speedup_vs_dft": dft[0]["scf_forces_s"] / ml[native]["total_s"],
        **{f"speedup_vs_dft_{dtype}": dft[0]["scf_forces_s"] / ml[dtype]["total_s"] for dtype in ml},
        "speedup_vs_dft_incl_blocks": dft[0]["total_s"] / ml[native]["total_s"],
        "speedup_vs_dft_batched": dft[0]["scf_forces_s"] / min(b["per_structure_s"] for b in batched),
        "ml_same_structure": ml, "ml_batched": batched, "gpaw_overlap_s": overlap_s, "dft": dft,
        "scaling": scaling[native], **summary,
        "time_per_atom_ratio_1e4_vs_1e2": alternating["ratio"],
        "time_per_atom_ratio_1e4_vs_1e2_sweep": summary["time_per_atom_ratio_1e4_vs_1e2"],
        "time_per_atom_alternating": alternating,
        "scaling_float64": scaling["float64"],
        **{f"{key}_float64": value for key, value in _scaling_summary(scaling["float64"]).items()},
        "band_solver": bands,
        "band_solver_k_reduced": k.tolist(), "gpu": gpu,
        "machine": machine(),
        "settings": {"sigma_A": sigma, "seed": seed, "sizes": list(sizes), "dft_sizes": list(dft_sizes),
                     "band_multiples": list(band_multiples), "model": str(model_path),
                     "model_config": model.config, "dft": dft_cfg},
    }
    if workflow is not None:
        result.update({k: workflow[k] for k in ("default_workflow_wall_s", "default_workflow_peak_gib")},
                      workflow_rules=workflow["rules"])
    result["provenance"] = record({"dft": dft_cfg}, seed=seed, model=str(model_path))
    write_json(out_path, result)
    plot_performance(result, figure_path)
    return result
