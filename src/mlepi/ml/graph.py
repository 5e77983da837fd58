"""Neighbour lists, block edges and the graph of one frame for HedgeNet.

Two edge sets live on every graph:

- **message-passing edges** ``edge_index`` (i, j) with integer ``edge_cell_shift`` R: atom j sits at
  ``pos[j] + R @ cell``. Intra-layer pairs (same ``layer``) are kept within ``cutoff_intra``, inter-layer pairs
  within ``cutoff_inter``; ``edge_type`` is 0 (intra) or 1 (inter). No on-site (i, i, 0) edges.
- **block edges** ``block_edge_index`` with ``block_cell_shift``: the H/S blocks of ``docs/data.md``, every
  ordered (i, j, R) with |x_j + R cell - x_i| < rc_i + rc_j, the on-site (i, i, 0) included.

Neighbour lists come from :func:`mlepi.geometry.neighbors.neighbor_edges` (k-d tree, O(N log N)); R is relative to the
positions as given, so un-wrapped positions are fine. Edges are sorted by (i, j, R) so the graph of a frame is the same
on every machine.

The graph holds topology only (indices, integer shifts, species, layers); bond vectors are computed by the model
in ``forward`` from ``pos``, ``cell`` and the shifts, so forces are -dE/dx by autograd.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data

from mlepi.formats.frames import Frame, orbital_counts
from mlepi.geometry.neighbors import block_edges, neighbor_edges

INTRA, INTER = 0, 1  # edge types; more may follow, these two stay


def edge_type(layer, edge_index) -> np.ndarray:
    """Type of each edge, ``[n_edges]``: 0 (``INTRA``) for a same-layer pair, 1 (``INTER``) otherwise."""
    layer = np.asarray(layer)
    i, j = np.asarray(edge_index)
    return np.where(layer[i] == layer[j], INTRA, INTER).astype(np.int64)


def message_edges(positions, cell, pbc, layer, cutoff_intra: float, cutoff_inter: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Message-passing edges: intra-layer pairs within ``cutoff_intra``, inter-layer within ``cutoff_inter`` (Å).

    Returns ``edge_index`` [2, n_edges], ``cell_shift`` [n_edges, 3] and ``edge_type`` [n_edges]; no on-site edges.
    """
    edge_index, shift = neighbor_edges(positions, cell, pbc, max(cutoff_intra, cutoff_inter))
    kind = edge_type(layer, edge_index)
    i, j = edge_index
    d = np.linalg.norm(np.asarray(positions)[j] + shift @ np.asarray(cell) - np.asarray(positions)[i], axis=1)
    keep = d < np.where(kind == INTRA, cutoff_intra, cutoff_inter)
    return edge_index[:, keep], shift[keep], kind[keep]


def frame_to_data(frame: Frame, basis: dict, cutoff_intra: float, cutoff_inter: float, *,
                  targets: bool = True, blocks: bool = True) -> Data:
    """The graph of one frame as a ``torch_geometric.data.Data``.

    Block edges are the frame's own (``frame.edge_index``, ``frame.cell_shift``) when it has them, so that the
    targets ``H``, ``S`` line up; otherwise they are computed with :func:`block_edges`. ``blocks=False`` leaves
    them empty (energy and forces only: the ASE calculator, Hessians).

    Attributes (float64 geometry; the model casts to its own dtype):

    ==================== ======================== ======================================================
    ``pos``              [n_atoms, 3] Å           Cartesian positions (as in the frame, not wrapped)
    ``cell``             [1, 3, 3] Å              lattice vectors as rows (one per graph when batched)
    ``numbers``          [n_atoms]                atomic numbers
    ``layer``            [n_atoms]                layer index
    ``edge_index``       [2, n_edges]             message-passing edges (i, j)
    ``edge_cell_shift``  [n_edges, 3] int         R of atom j
    ``edge_type``        [n_edges]                0 intra-layer, 1 inter-layer
    ``block_edge_index`` [2, n_blocks]            H/S block edges (i, j), on-site included
    ``block_cell_shift`` [n_blocks, 3] int        R of atom j
    ``energy``           [1] eV                   target (if present and ``targets``)
    ``forces``           [n_atoms, 3] eV/Å        target
    ``H``, ``S``         [n_blocks, n, n] eV, 1   targets, zero-padded blocks
    ==================== ======================== ======================================================
    """
    pos = np.asarray(frame.positions, dtype=float)
    cell = np.asarray(frame.cell, dtype=float)
    edge_index, edge_shift, kind = message_edges(pos, cell, frame.pbc, frame.layer, cutoff_intra, cutoff_inter)
    if not blocks:
        block_index, block_shift = np.zeros((2, 0), dtype=np.int64), np.zeros((0, 3), dtype=np.int64)
    elif frame.edge_index is not None and frame.cell_shift is not None:
        block_index, block_shift = np.asarray(frame.edge_index), np.asarray(frame.cell_shift)
    else:
        block_index, block_shift = block_edges(frame.numbers, pos, cell, frame.pbc, basis)
    data = Data(
        pos=torch.as_tensor(pos, dtype=torch.float64),  # [n_atoms, 3]
        cell=torch.as_tensor(cell, dtype=torch.float64).unsqueeze(0),  # [1, 3, 3]
        numbers=torch.as_tensor(np.asarray(frame.numbers), dtype=torch.long),  # [n_atoms]
        layer=torch.as_tensor(np.asarray(frame.layer), dtype=torch.long),  # [n_atoms]
        edge_index=torch.as_tensor(edge_index, dtype=torch.long),  # [2, n_edges]
        edge_cell_shift=torch.as_tensor(edge_shift, dtype=torch.long),  # [n_edges, 3]
        edge_type=torch.as_tensor(kind, dtype=torch.long),  # [n_edges]
        block_edge_index=torch.as_tensor(block_index, dtype=torch.long),  # [2, n_blocks]
        block_cell_shift=torch.as_tensor(block_shift, dtype=torch.long),  # [n_blocks, 3]
        num_nodes=frame.n_atoms,
    )
    if targets:
        if frame.energy is not None:
            data.energy = torch.tensor([frame.energy], dtype=torch.float64)  # [1]
        if frame.forces is not None:
            data.forces = torch.as_tensor(frame.forces, dtype=torch.float64)  # [n_atoms, 3]
        n_orb = n_orb_max(basis)
        for key in ("H", "S"):
            value = getattr(frame, key)
            if value is not None:
                data[key] = torch.as_tensor(_pad_blocks(value, n_orb), dtype=torch.float64)  # [n_blocks, n, n]
    return data


def n_orb_max(basis: dict) -> int:
    """Largest orbital count of any element of the basis: the padded block size."""
    return int(max(orbital_counts([int(z) for z in basis["orbitals"]], basis)))


def _pad_blocks(blocks, n: int) -> np.ndarray:
    """Zero-pad blocks [n_blocks, m, m] to [n_blocks, n, n] (a file may pad only to its own largest atom)."""
    blocks = np.asarray(blocks, dtype=float)
    if blocks.shape[1] > n:
        raise ValueError(f"blocks of size {blocks.shape[1]} exceed the basis's largest orbital count {n}")
    out = np.zeros((len(blocks), n, n))
    out[:, : blocks.shape[1], : blocks.shape[2]] = blocks
    return out
