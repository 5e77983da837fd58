"""Stage ``infer`` and command ``predict``: HedgeNet predictions for structures, written as a frames file.

For every structure: energy (eV), forces (eV/Å), H and S blocks (eV, 1) on the block edges of
:func:`mlepi.graph.block_edges` (the DFT layout of ``docs/data.md``), and the Fermi level from the predicted
bands: :func:`mlepi.tb.fermi_level` over a full (unreduced) k mesh of the structure's own cell, with the valence
electron count of ``basis['valence']`` and the Fermi-Dirac width of the DFT calculations the model was trained
on. Both default to what the model stores (:func:`occupation_settings`): the DFT width, and a k mesh that
scales with the structure's cell as ``mlepi dft`` scales it (``kpts_primitive / multiple`` in plane, one k point
along z), so a different supercell gets its own mesh. ``kpts`` and ``width`` arguments override them.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from ase.dft.kpoints import monkhorst_pack

from . import tb
from .frames import Frame, write_frames
from .graph import block_edges, frame_to_data
from .memory import keep_freed_memory
from .model import HedgeNet
from .provenance import record
from .structure_io import read_structures
from .torch_io import resolve_device


def kpoint_mesh(size, gamma: bool = True) -> np.ndarray:
    """Reduced k points ``[n_k, 3]`` of a Monkhorst-Pack mesh of ``size`` (3 ints), Gamma-centred if ``gamma``."""
    size = np.asarray(size, dtype=int)
    kpts = monkhorst_pack(size)
    if gamma:
        kpts = kpts + np.where(size % 2 == 0, 0.5 / size, 0.0)  # even meshes: shift Gamma onto the mesh
    return kpts


def occupation_settings(metadata: dict, cell) -> tuple[tuple[int, int, int] | None, bool, float | None]:
    """(k mesh size, Gamma-centred, Fermi-Dirac width in eV) for a cell, from a model's metadata; None if absent.

    Width: ``dft_parameters['occupation_width']`` (the ``dft`` config section), or GPAW's
    ``occupations['width']``, or ``width``. k mesh, first found of:

    - ``dft_parameters['kpts']`` in GPAW form, ``[n1, n2, n3]`` or ``{"size": [...], "gamma": bool}``;
    - ``metadata['kpoint_length']`` (Å, per in-plane lattice vector: k points x lattice length of the DFT
      frames, see ``train``): n_c = max(1, round(length_c / |a_c|)) in plane and one k point along z, the
      mesh ``mlepi dft`` uses for a supercell (``kpts_primitive / multiple``), Gamma-centred.
    """
    p = metadata.get("dft_parameters") or {}
    occ = p.get("occupations")
    width = p.get("occupation_width", occ.get("width") if isinstance(occ, dict) else p.get("width"))
    width = None if width is None else float(width)
    kpts, gamma = p.get("kpts"), True
    if isinstance(kpts, dict):
        gamma = bool(kpts.get("gamma", True))
        kpts = kpts.get("size")
    if kpts is not None and len(kpts) == 3:
        return tuple(int(n) for n in kpts), gamma, width
    length = metadata.get("kpoint_length")
    if length is not None:
        lengths = np.linalg.norm(np.asarray(cell, dtype=float), axis=1)
        mesh = tuple(max(1, int(round(k / a))) for k, a in zip(length, lengths[:2])) + (1,)
        return mesh, True, width
    return None, True, width


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


def blocks_on_edges(edge_index, cell_shift, blocks: np.ndarray, frame: Frame, source: str) -> np.ndarray:
    """``blocks`` given on the edges (``edge_index``, ``cell_shift``), reordered onto ``frame``'s block edges.

    ``source`` names where the blocks come from, for the error when the two edge sets differ.
    """
    position = {(int(i), int(j), *map(int, r)): e for e, (i, j, r) in enumerate(zip(*edge_index, cell_shift))}
    try:
        order = [position[(int(i), int(j), *map(int, r))] for i, j, r in zip(*frame.edge_index, frame.cell_shift)]
    except KeyError as err:
        raise ValueError(f"frame {frame.name!r}: block edge {err.args[0]} has no {source} block") from None
    if len(order) != len(position):
        raise ValueError(f"frame {frame.name!r}: {len(position)} {source} blocks but {len(order)} model blocks")
    return blocks[order]


def exact_overlap(frame: Frame, dft_parameters: dict) -> np.ndarray:
    """GPAW's exact S blocks on the frame's block edges (no SCF; S is independent of the grid).

    The overlap of the split-valence bases is nearly singular (smallest eigenvalue of S(k) ~4e-5 for a 300 K
    dz(dzp) sample), so a learned S with errors of ~1e-4 is not positive definite; the exact one costs
    seconds per structure.
    """
    from .dft import overlap_blocks

    edge_index, cell_shift, S, _ = overlap_blocks(frame.to_atoms(), dft_parameters)
    return blocks_on_edges(edge_index, cell_shift, S, frame, "GPAW overlap")


BATCH_ATOMS = 4096  # atoms per forward pass: several small structures share one (GPU throughput)


def predict_frames(model: HedgeNet, atoms_list, names, *, kpts=None, gamma: bool | None = None,
                   width: float | None = None, fermi_level: bool = True, overlap: str = "gpaw", device="cpu",
                   dtype: torch.dtype | None = None, batch_atoms: int = BATCH_ATOMS, progress=None) -> list[Frame]:
    """Model frames for ``atoms_list`` (each with ``arrays['layer']``).

    Parameters
    ----------
    model : a trained HedgeNet (``HedgeNet.load``).
    atoms_list, names : structures and their unique frame names.
    kpts : k mesh size (3 ints) for the Fermi level; default from the model (:func:`occupation_settings`).
    gamma : Gamma-centred mesh; default from the model (True if unstated).
    width : Fermi-Dirac width (eV); default from the model's DFT parameters.
    fermi_level : compute the Fermi level (costs one generalized eigenproblem per k point).
    overlap : 'gpaw' (default): S from GPAW's basis integrals (exact, :func:`exact_overlap`); 'model': the
        model's two-centre S head (no GPAW needed, but not accurate enough for nearly singular overlaps).
    device, dtype : where and in which precision to evaluate. Default: the precision the weights were trained in
        (float32 by default). Against float64 that moves eigenvalues within 2 eV of E_F by <= 3.4e-5 eV, H by
        5e-6 eV and forces by 2e-5 eV/A (default model, three 300 K samples), 200x below the model's own
        error; float64 for finite differences of forces (``phonons_ml``).
    batch_atoms : consecutive structures are predicted together, one forward pass per batch of at most this
        many atoms (a larger structure alone). Each structure's prediction is that of its own graph: the
        graphs of a batch share no edge (:func:`batches`).
    progress : called once per structure after its frame is complete.

    Returns
    -------
    list of :class:`Frame` with energy, forces, block edges, H, S, fermi_level and ``info`` from ``atoms.info``
    (plus ``fermi_kpts`` and ``fermi_width``, the settings the Fermi level was computed with).
    """
    from torch_geometric.data import Batch

    dtype = model.dtype if dtype is None else dtype
    model = model.to(device=device, dtype=dtype).eval()
    frames = []
    for chunk in batches(list(zip(atoms_list, names, strict=True)), batch_atoms):
        staged = [structure_graph(model, atoms, name, _info(atoms.info)) for atoms, name in chunk]
        with torch.no_grad():
            out = model(Batch.from_data_list([data for _, data in staged]).to(device), forces=True,
                        overlap=overlap == "model")
        per_atom = [data.num_nodes for _, data in staged]
        per_block = [data.block_edge_index.shape[1] for _, data in staged]
        parts = {"forces": out["forces"].split(per_atom),
                 **{key: out[key].split(per_block) for key in ("H", "S") if key in out}}
        for g, (frame, _) in enumerate(staged):
            frame.energy = float(out["energy"][g])
            frame.forces, frame.H = (parts[key][g].detach().cpu().double().numpy() for key in ("forces", "H"))
            _complete(frame, model, parts["S"][g] if overlap == "model" else None, fermi_level=fermi_level,
                      kpts=kpts, gamma=gamma, width=width)
            frames.append(frame)
            if progress is not None:
                progress(frame)
    return frames


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


def _complete(frame: Frame, model: HedgeNet, model_overlap, *, fermi_level: bool, kpts, gamma, width) -> None:
    """S (GPAW's exact integrals, or the model's ``model_overlap`` blocks) and the Fermi level of ``frame``."""
    if model_overlap is None:
        frame.S = exact_overlap(frame, model.metadata["dft_parameters"])
        frame.info["overlap"] = "gpaw"
    else:
        frame.S = model_overlap.detach().cpu().double().numpy()
        frame.info["overlap"] = "model"
    if fermi_level:
        size, gamma_k, width_k = occupation_settings(model.metadata, frame.cell)
        size = size if kpts is None else tuple(int(n) for n in kpts)
        gamma_k = gamma_k if gamma is None else gamma
        width_k = width_k if width is None else float(width)
        if size is None or width_k is None:
            raise ValueError("the model stores no DFT k mesh or occupation width (dft_parameters: "
                             f"{model.metadata.get('dft_parameters')}); pass kpts= and width=")
        frame.fermi_level = _fermi_level(frame, model.basis, kpoint_mesh(size, gamma_k), width_k)
        frame.info.update(fermi_kpts=list(size), fermi_width=width_k)


def _fermi_level(frame: Frame, basis: dict, kpts: np.ndarray, width: float) -> float:
    valence = {int(z): float(v) for z, v in basis["valence"].items()}
    n_electrons = sum(valence[int(z)] for z in frame.numbers)
    try:
        bands = tb.eigenvalues(frame, basis, kpts)
    except np.linalg.LinAlgError as err:
        raise ValueError(f"frame {frame.name!r}: S(k) is not positive definite ({err}); with the model's own "
                         "overlap (--overlap model) the model is not trained well enough for this structure") from None
    return tb.fermi_level(bands, n_electrons, width)


def run(model_path, structures_path, out_path, *, kpts=None, width: float | None = None, overlap: str = "gpaw",
        device: str = "auto", dtype: str | None = None) -> None:
    """Predict every structure of an extended-XYZ file (one or many frames) into a frames file.

    Parameters
    ----------
    model_path : ``model.pt`` written by ``mlepi train``.
    structures_path : extended XYZ with a per-atom ``layer`` column; ``atoms.info`` (temperature_K, seed,
        sample_index, name, ...) is carried into each frame's ``info``; frame names are ``info['name']`` or
        ``frame_0000``, ``frame_0001``, ...
    out_path : frames file to write (``source='hedgenet'``).
    kpts, width : k mesh size and Fermi-Dirac width (eV) for the Fermi level; default from the model.
    overlap : 'gpaw' (exact, default) or 'model' (see :func:`predict_frames`).
    device : 'auto' (the GPU when torch sees one), 'cpu' or 'cuda' (:func:`mlepi.torch_io.resolve_device`).
    dtype : 'float32' or 'float64'; default the model's own precision (see :func:`predict_frames`).
    """
    from tqdm import tqdm

    keep_freed_memory()  # one prediction per batch: reuse the memory of the last (mlepi.memory)
    device = resolve_device(device)
    model = HedgeNet.load(model_path, map_location=device)
    atoms_list = read_structures(structures_path)
    names = [str(a.info.get("name", f"frame_{k:04d}")) for k, a in enumerate(atoms_list)]
    precision = model.dtype if dtype is None else getattr(torch, dtype)
    with tqdm(total=len(atoms_list), desc="infer", unit="structure") as bar:
        frames = predict_frames(model, atoms_list, names, kpts=kpts, width=width, overlap=overlap, device=device,
                                dtype=precision, progress=lambda _: bar.update())
    settings = {"model_path": str(model_path), "overlap": overlap, "dtype": str(precision), "device": device.type,
                "kpts": frames[0].info["fermi_kpts"] if frames else None,
                "width": frames[0].info["fermi_width"] if frames else None}
    parameters = {"model": "hedgenet", "model_config": model.config, **settings,
                  "dft_parameters": model.metadata.get("dft_parameters"),
                  "model_provenance": model.metadata.get("provenance")}
    write_frames(out_path, frames, basis=model.basis, source="hedgenet", parameters=parameters,
                 provenance=record(settings, structures=str(structures_path)))
