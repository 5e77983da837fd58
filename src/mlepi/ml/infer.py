"""Stage ``infer`` and command ``predict``: HedgeNet predictions for structures, written as a frames file.

For every structure: energy (eV), forces (eV/Å), H and S blocks (eV, 1) on the block edges of
:func:`mlepi.geometry.neighbors.block_edges` (the DFT layout of ``docs/data.md``), and the Fermi level from the
predicted bands: :func:`mlepi.electrons.tb.fermi_level` over a full (unreduced) k mesh of the structure's own cell,
with the valence electron count of ``basis['valence']`` and the Fermi-Dirac width of the DFT calculations the model
was trained on. Both default to what the model stores (:func:`mlepi.ml.completion.occupation_settings`): the DFT
width, and a k mesh that scales with the structure's cell as ``mlepi dft`` scales it (``kpts_primitive / multiple``
in plane, one k point along z), so a different supercell gets its own mesh. ``kpts`` and ``width`` arguments
override them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import multiprocessing
import os

import numpy as np
import torch
from torch_geometric.data import Batch
from tqdm import tqdm

from mlepi.dft import mpi
from mlepi.errors import MlepiError
from mlepi.formats.frames import Frame, write_frames
from mlepi.formats.provenance import record
from mlepi.formats.structures import read_structures
from mlepi.formats.torch_files import resolve_device
from mlepi.geometry.neighbors import block_edges
from mlepi.ml.completion import complete
from mlepi.ml.graph import frame_to_data
from mlepi.ml.memory import keep_freed_memory
from mlepi.ml.model import HedgeNet


def _info(atoms_info: dict) -> dict:
    """The JSON-serialisable entries of ``atoms.info`` (temperature_K, seed, sample_index, ...)."""
    info = {}
    for key, value in atoms_info.items():
        value = value.item() if isinstance(value, np.generic) else value
        value = value.tolist() if isinstance(value, np.ndarray) else value
        try:
            json.dumps(value)
        except TypeError:
            continue
        info[key] = value
    return info


BATCH_ATOMS = 4096  # atoms per forward pass: several small structures share one (GPU throughput)


class CommitteeError(MlepiError, ValueError):
    """The models given as a committee were not trained alike (basis, cutoffs, network)."""


def check_committee(models: list[HedgeNet], paths=None) -> None:
    """Members of one committee predict on one graph and average their blocks: the same basis and model config
    (the seeds differ, nothing else). ``paths`` name them in the error."""
    names = [str(p) for p in paths] if paths is not None else [f"member {m}" for m in range(len(models))]
    for name, other in zip(names[1:], models[1:]):
        for what in ("basis", "config"):
            if getattr(other, what) != getattr(models[0], what):
                raise CommitteeError(f"{name}: its {what} differs from {names[0]}'s; a committee's members are "
                                     "trained with one model section and dataset (train.committee), retrain them")


def committee_spread(frame: Frame) -> dict:
    """Spread of a committee's predictions of one structure (``frame`` with the ``*_committee`` arrays): the
    standard deviation over members (ddof 1), as RMS over the atoms' force components and over the H blocks'
    elements (zero padding left out), and of the energy per atom (``docs/data.md``)."""
    return {"committee_size": int(len(frame.H_committee)),
            "energy_spread_meV_per_atom": 1e3 * float(np.std(frame.energy_committee, ddof=1)) / frame.n_atoms,
            "forces_spread_meV_per_A": 1e3 * float(np.sqrt(np.mean(np.var(frame.forces_committee, axis=0,
                                                                            ddof=1)))),
            "H_spread_meV": h_spread_meV(frame.H_committee)}


def h_spread_meV(H_committee: np.ndarray) -> float:
    """RMS over the block elements (the zero padding left out) of the members' standard deviation (meV)."""
    used = np.any(H_committee != 0, axis=0)
    return 1e3 * float(np.sqrt(np.mean(np.var(H_committee, axis=0, ddof=1)[used])))


def predict_frames(model: HedgeNet | list[HedgeNet], atoms_list, names, *, kpts=None, gamma: bool | None = None,
                   width: float | None = None, fermi_level: bool = True, overlap: str = "gpaw", device="cpu",
                   dtype: torch.dtype | None = None, batch_atoms: int = BATCH_ATOMS, workers: int = 1,
                   progress=None) -> list[Frame]:
    """Model frames for ``atoms_list`` (each with ``arrays['layer']``).

    Parameters
    ----------
    model : a trained HedgeNet (``HedgeNet.load``), or a committee: a list of HedgeNets trained alike
        (``train.committee``, :func:`check_committee`). A committee's frame holds the members' mean energy,
        forces and H (S and the Fermi level follow from them), each member's in ``energy_committee``,
        ``forces_committee`` and ``H_committee``, and their spread in ``info`` (:func:`committee_spread`).
    atoms_list, names : structures and their unique frame names.
    kpts : k mesh size (3 ints) for the Fermi level; default from the model
        (:func:`mlepi.ml.completion.occupation_settings`).
    gamma : Gamma-centred mesh; default from the model (True if unstated).
    width : Fermi-Dirac width (eV); default from the model's DFT parameters.
    fermi_level : compute the Fermi level (costs one generalized eigenproblem per k point).
    overlap : 'gpaw' (default): S from GPAW's basis integrals (exact, :func:`mlepi.ml.completion.exact_overlap`);
        'model': the model's two-centre S head (no GPAW needed, but not accurate enough for nearly singular
        overlaps).
    device, dtype : where and in which precision to evaluate. Default: the precision the weights were trained in
        (float32 by default). Against float64 that moves eigenvalues within 2 eV of E_F by <= 3.4e-5 eV, H by
        5e-6 eV and forces by 2e-5 eV/A (default model, three 300 K samples), 200x below the model's own
        error; float64 for finite differences of forces (``phonons_ml``).
    batch_atoms : consecutive structures are predicted together, one forward pass per batch of at most this
        many atoms (a larger structure alone). Each structure's prediction is that of its own graph: the
        graphs of a batch share no edge (:func:`batches`).
    workers : processes for what follows the network, per structure: GPAW's exact S and the Fermi level. They
        cost ~0.7 s for a 36-atom structure against ~30 ms for the network on a CPU (a few ms on a GPU), so
        several workers are what makes a GPU node's inference fast (``docs/performance.md``).
    progress : called once per structure after its frame is complete.

    Returns
    -------
    list of :class:`Frame` with energy, forces, block edges, H, S, fermi_level and ``info`` from ``atoms.info``
    (plus ``fermi_kpts`` and ``fermi_width``, the settings the Fermi level was computed with).
    """
    members = list(model) if isinstance(model, (list, tuple)) else [model]
    check_committee(members)
    lead = members[0]
    dtype = lead.dtype if dtype is None else dtype
    members = [member.to(device=device, dtype=dtype).eval() for member in members]
    settings = {"metadata": lead.metadata, "basis": lead.basis, "exact_overlap": overlap == "gpaw",
                "fermi_level": fermi_level, "kpts": kpts, "gamma": gamma, "width": width}
    frames = []
    with worker_pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
        for chunk in batches(list(zip(atoms_list, names, strict=True)), batch_atoms):
            staged = [structure_graph(lead, atoms, name, _info(atoms.info)) for atoms, name in chunk]
            batch = Batch.from_data_list([data for _, data in staged]).to(device)
            per_atom = [data.num_nodes for _, data in staged]
            per_block = [data.block_edge_index.shape[1] for _, data in staged]
            # Each member's outputs, [n_members, ...] per key, split per structure
            outs = []
            for member in members:
                with torch.no_grad():
                    out = member(batch, forces=True, overlap=overlap == "model")
                outs.append({key: out[key].detach().cpu().double() for key in ("energy", "forces", "H", "S")
                             if key in out})
            stacked = {key: torch.stack([out[key] for out in outs]) for key in outs[0]}
            parts = {key: values.split(per_atom if key == "forces" else per_block, dim=1)
                     for key, values in stacked.items() if key != "energy"}
            for g, (frame, _) in enumerate(staged):
                frame.energy = float(stacked["energy"][:, g].mean())
                for key, values in parts.items():
                    setattr(frame, key, values[g].mean(dim=0).numpy())
                if len(members) > 1:
                    frame.energy_committee = stacked["energy"][:, g].numpy()
                    frame.forces_committee = parts["forces"][g].numpy()
                    frame.H_committee = parts["H"][g].numpy()
                    frame.info.update(committee_spread(frame))
            done = (pool.map(complete, [frame for frame, _ in staged], [settings] * len(staged)) if pool
                    else (complete(frame, settings) for frame, _ in staged))
            for frame in done:
                frames.append(frame)
                if progress is not None:
                    progress(frame)
    return frames


@contextlib.contextmanager
def worker_pool(workers: int):
    """A pool of ``workers`` processes for :func:`mlepi.ml.completion.complete` (GPAW, LAPACK).

    One BLAS thread per worker: with two each, two workers on two cores were slower than one process (17.2
    against 15.0 s for 12 samples; 12.1 s with one each, benchmarks/NOTES.md §14); the variables reach only the
    workers started here, this process loaded its BLAS long ago. Spawn, not fork: a forked child of a process
    that holds a CUDA context or threads can hang. GPAW stays serial in the workers
    (:func:`mlepi.dft.mpi.serial_worker`): under srun or mpiexec they would otherwise start MPI as their parent's
    rank, and die.
    """
    with _environment(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1"), \
            concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                   initializer=mpi.serial_worker) as pool:
        yield pool


@contextlib.contextmanager
def _environment(**variables):
    """``os.environ`` with ``variables`` set, restored on exit."""
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def structure_graph(model: HedgeNet, atoms, name: str = "structure", info: dict | None = None):
    """(frame with the block edges of ``docs/data.md``, the graph ``model`` predicts from) for ``atoms``."""
    frame = Frame.from_atoms(name, atoms, info=info)
    frame.edge_index, frame.cell_shift = block_edges(frame.numbers, frame.positions, frame.cell, frame.pbc,
                                                     model.basis)
    cfg = model.config
    return frame, frame_to_data(frame, model.basis, cfg["cutoff_intra"], cfg["cutoff_inter"], targets=False)


def batches(items: list, max_atoms: int) -> list[list]:
    """Consecutive runs of ``(atoms, name)`` items with at most ``max_atoms`` atoms together (at least one item
    each). Order is kept, so the frames come out in the order of the structures."""
    runs, run, count = [], [], 0
    for item in items:
        if run and count + len(item[0]) > max_atoms:
            runs.append(run)
            run, count = [], 0
        run.append(item)
        count += len(item[0])
    return runs + ([run] if run else [])


def run(model_path, structures_path, out_path, *, kpts=None, width: float | None = None, overlap: str = "gpaw",
        device: str = "auto", dtype: str | None = None, workers: int = 1) -> None:
    """Predict every structure of an extended-XYZ file (one or many frames) into a frames file.

    Parameters
    ----------
    model_path : ``model.pt`` written by ``mlepi train``, or a list of them: a committee (``train.committee``),
        whose mean, members and spread the frames hold (:func:`predict_frames`).
    structures_path : extended XYZ with a per-atom ``layer`` column; ``atoms.info`` (temperature_K, seed,
        sample_index, name, ...) is carried into each frame's ``info``; frame names are ``info['name']`` or
        ``frame_0000``, ``frame_0001``, ...
    out_path : frames file to write (``source='hedgenet'``).
    kpts, width : k mesh size and Fermi-Dirac width (eV) for the Fermi level; default from the model.
    overlap : 'gpaw' (exact, default) or 'model' (see :func:`predict_frames`).
    device : 'auto' (the GPU when torch sees one), 'cpu' or 'cuda' (:func:`mlepi.formats.torch_files.resolve_device`).
    dtype : 'float32' or 'float64'; default the model's own precision (see :func:`predict_frames`).
    workers : processes for the exact S and the Fermi level (see :func:`predict_frames`).
    """
    keep_freed_memory()  # one prediction per batch: reuse the memory of the last (mlepi.ml.memory)
    device = resolve_device(device)
    paths = [model_path] if isinstance(model_path, (str, os.PathLike)) else list(model_path)
    members = [HedgeNet.load(path, map_location=device) for path in paths]
    check_committee(members, paths)
    model = members[0]
    atoms_list = read_structures(structures_path)
    names = [str(a.info.get("name", f"frame_{k:04d}")) for k, a in enumerate(atoms_list)]
    precision = model.dtype if dtype is None else getattr(torch, dtype)
    with tqdm(total=len(atoms_list), desc="infer", unit="structure") as bar:
        frames = predict_frames(members, atoms_list, names, kpts=kpts, width=width, overlap=overlap,
                                device=device, dtype=precision, workers=workers, progress=lambda _: bar.update())
    settings = {"model_path": str(paths[0]), "committee": [str(path) for path in paths], "overlap": overlap,
                "dtype": str(precision), "device": device.type,
                "kpts": frames[0].info["fermi_kpts"] if frames else None,
                "width": frames[0].info["fermi_width"] if frames else None}
    parameters = {"model": "hedgenet", "model_config": model.config, **settings,
                  "dft_parameters": model.metadata.get("dft_parameters"),
                  "model_provenance": model.metadata.get("provenance")}
    write_frames(out_path, frames, basis=model.basis, source="hedgenet", parameters=parameters,
                 provenance=record(settings, structures=str(structures_path)))
