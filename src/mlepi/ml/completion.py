"""What a model frame needs besides the network: GPAW's exact S and the Fermi level of its predicted bands.

Per structure and independent of torch, so that :func:`mlepi.ml.infer.predict_frames` can run them in worker
processes that start in a second (importing torch and PyG takes four). They cost ~0.7 s for a 36-atom
structure, against ~30 ms for the network on a CPU and a few ms on a GPU.
"""

from __future__ import annotations

import numpy as np
from ase.dft.kpoints import monkhorst_pack

from mlepi.electrons import tb
from mlepi.formats.frames import Frame


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
    # GPAW (mlepi.dft) only here: inference with the model's own S (`--overlap model`), the calculator and the
    # workers that only compute Fermi levels run without it.
    from mlepi.dft.matrices import overlap_blocks

    edge_index, cell_shift, S, _ = overlap_blocks(frame.to_atoms(), dft_parameters)
    return blocks_on_edges(edge_index, cell_shift, S, frame, "GPAW overlap")


def complete(frame: Frame, settings: dict) -> Frame:
    """``frame`` with S (GPAW's exact integrals, or the model's S already in it) and the Fermi level, as
    :func:`mlepi.ml.infer.predict_frames` ``settings`` say (keys: metadata, basis, exact_overlap, fermi_level, kpts,
    gamma, width)."""
    metadata = settings["metadata"]
    if settings["exact_overlap"]:
        frame.S = exact_overlap(frame, metadata["dft_parameters"])
    frame.info["overlap"] = "gpaw" if settings["exact_overlap"] else "model"
    if settings["fermi_level"]:
        size, gamma, width = occupation_settings(metadata, frame.cell)
        size = size if settings["kpts"] is None else tuple(int(n) for n in settings["kpts"])
        gamma = gamma if settings["gamma"] is None else settings["gamma"]
        width = width if settings["width"] is None else float(settings["width"])
        if size is None or width is None:
            raise ValueError("the model stores no DFT k mesh or occupation width (dft_parameters: "
                             f"{metadata.get('dft_parameters')}); pass kpts= and width=")
        frame.fermi_level = fermi_level(frame, settings["basis"], kpoint_mesh(size, gamma), width)
        frame.info.update(fermi_kpts=list(size), fermi_width=width)
    return frame


def fermi_level(frame: Frame, basis: dict, kpts: np.ndarray, width: float) -> float:
    """Fermi level (eV) of ``frame``'s H, S: ``basis['valence']`` electrons over the k points ``kpts``."""
    valence = {int(z): float(v) for z, v in basis["valence"].items()}
    n_electrons = sum(valence[int(z)] for z in frame.numbers)
    try:
        bands = tb.eigenvalues(frame, basis, kpts)
    except np.linalg.LinAlgError as err:
        raise ValueError(f"frame {frame.name!r}: S(k) is not positive definite ({err}); with the model's own "
                         "overlap (--overlap model) the model is not trained well enough for this structure") from None
    return tb.fermi_level(bands, n_electrons, width)
