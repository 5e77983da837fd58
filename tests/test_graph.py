"""Neighbour lists, block edges and the frame -> graph conversion (mlepi.ml.graph)."""

import itertools

import numpy as np
import pytest
import torch

from mlepi.formats.frames import Frame
from mlepi.geometry.neighbors import block_edges
from mlepi.ml.graph import INTER, INTRA, edge_type, frame_to_data, message_edges

from hedgenet_synthetic import TOY_BASIS, bilayer

torch.set_num_threads(1)


def brute_force_pairs(positions, cell, radii, n_images=3):
    """All (i, j, R) with |x_j + R cell - x_i| < r_i + r_j by explicit enumeration of images."""
    pairs = set()
    for i, j in itertools.product(range(len(positions)), repeat=2):
        for shift in itertools.product(range(-n_images, n_images + 1), repeat=2):
            R = np.array([shift[0], shift[1], 0])
            d = np.linalg.norm(positions[j] + R @ cell - positions[i])
            if d < radii[i] + radii[j]:
                pairs.add((i, j, *R))
    return pairs


def as_set(edge_index, shift):
    return {(int(i), int(j), *map(int, R)) for (i, j), R in zip(edge_index.T, shift)}


def test_block_edges_follow_the_basis_range_rule():
    atoms = bilayer(2, rattle=0.1, seed=3)
    edge_index, shift = block_edges(atoms.numbers, atoms.positions, atoms.cell, atoms.pbc, TOY_BASIS)
    radii = np.full(len(atoms), TOY_BASIS["rcut"]["6"])
    assert as_set(edge_index, shift) == brute_force_pairs(atoms.positions, np.array(atoms.cell), radii)
    assert len(as_set(edge_index, shift)) == edge_index.shape[1]  # no duplicates
    # on-site blocks present, and every edge has its reverse (j, i, -R)
    edges = as_set(edge_index, shift)
    assert all((i, i, 0, 0, 0) in edges for i in range(len(atoms)))
    assert all((j, i, -a, -b, -c) in edges for i, j, a, b, c in edges)


def test_edge_types_and_per_type_cutoffs():
    atoms = bilayer(2, rattle=0.0)
    layer = atoms.arrays["layer"]
    edge_index, shift, kind = message_edges(atoms.positions, atoms.cell, atoms.pbc, layer, 2.0, 3.5)
    assert np.array_equal(kind, edge_type(layer, edge_index))
    d = np.linalg.norm(atoms.positions[edge_index[1]] + shift @ np.array(atoms.cell)
                       - atoms.positions[edge_index[0]], axis=1)
    assert d[kind == INTRA].max() < 2.0 and d[kind == INTER].max() < 3.5
    assert np.all(layer[edge_index[0, kind == INTER]] != layer[edge_index[1, kind == INTER]])
    # the AB dimer (3.35 Å) is an inter edge; the intra cutoff keeps only first neighbours (1.42 Å)
    assert np.isclose(d[kind == INTER].min(), 3.35)
    assert np.allclose(d[kind == INTRA], 2.46 / np.sqrt(3))


def test_frame_to_data_uses_the_frames_block_edges_and_pads_blocks():
    atoms = bilayer(2, rattle=0.02)
    edge_index, shift = block_edges(atoms.numbers, atoms.positions, atoms.cell, atoms.pbc, TOY_BASIS)
    basis = {**TOY_BASIS, "orbitals": {"6": [["2s", 0], ["2p", 1]], "1": [["1s", 0], ["2p", 1], ["3s", 0]]},
             "rcut": {"6": 2.2, "1": 1.0}}
    H = np.random.default_rng(0).standard_normal((edge_index.shape[1], 4, 4))
    frame = Frame.from_atoms("x", atoms, edge_index=edge_index[:, ::-1].copy(), cell_shift=shift[::-1].copy(),
                             H=H, energy=1.0)
    data = frame_to_data(frame, basis, 2.0, 3.5)
    assert torch.equal(data.block_edge_index, torch.as_tensor(edge_index[:, ::-1].copy()))
    assert data.H.shape == (len(H), 5, 5) and torch.equal(data.H[:, :4, :4], torch.as_tensor(H))
    assert float(data.H[:, 4].abs().sum()) == 0.0
    assert data.edge_cell_shift.dtype == torch.long and data.cell.shape == (1, 3, 3)
    with pytest.raises(ValueError, match="no cutoff radius"):
        block_edges([7], np.zeros((1, 3)), np.eye(3) * 10, [True] * 3, TOY_BASIS)
