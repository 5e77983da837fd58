"""Periodic neighbour lists (mlepi.geometry.neighbors), checked pair for pair against ASE's cell list."""

import numpy as np
import pytest
from ase.neighborlist import primitive_neighbor_list

from mlepi.geometry.neighbors import neighbor_edges

from hedgenet_synthetic import bilayer


def as_set(edge_index, shift):
    return {(int(i), int(j), *map(int, R)) for (i, j), R in zip(edge_index.T, shift)}


def ase_pairs(positions, cell, pbc, cutoff, self_edges):
    i, j, S = primitive_neighbor_list("ijS", np.asarray(pbc), np.asarray(cell), positions, cutoff,
                                      self_interaction=self_edges)
    return {(int(a), int(b), *map(int, r)) for a, b, r in zip(i, j, S)}


@pytest.mark.parametrize("repeat", [1, 2])
@pytest.mark.parametrize("pbc", [(True, True, False), (True, True, True)])
@pytest.mark.parametrize("cutoff", [1.5, 4.5, "per_atom", 12.0])  # 12 Å spans several images of a 2x2 cell
@pytest.mark.parametrize("self_edges", [False, True])
def test_same_pairs_as_ase(repeat, pbc, cutoff, self_edges):
    rng = np.random.default_rng(repeat)
    atoms = bilayer(2, rattle=0.3, seed=repeat).repeat((repeat, 1, 1))
    cell = np.array(atoms.cell)
    positions = atoms.positions.copy()
    positions[:3] += np.array([1, -2, 0]) @ cell  # un-wrapped atoms keep their own R labels
    if cutoff == "per_atom":
        cutoff = rng.uniform(2.0, 2.6, len(atoms))  # pairs within r_i + r_j
    edge_index, shift = neighbor_edges(positions, cell, pbc, cutoff, self_edges=self_edges)
    got = as_set(edge_index, shift)
    assert len(got) == edge_index.shape[1]  # no duplicates
    assert got == ase_pairs(positions, cell, pbc, cutoff, self_edges)
    keys = [(int(i), int(j), *map(int, R)) for (i, j), R in zip(edge_index.T, shift)]
    assert keys == sorted(keys)  # sorted by (i, j, R): the graph of a frame is the same on every machine


def test_no_atoms_and_no_neighbours():
    cell = np.diag([10.0, 10.0, 20.0])
    edge_index, shift = neighbor_edges(np.zeros((0, 3)), cell, (True, True, False), 3.0)
    assert edge_index.shape == (2, 0) and shift.shape == (0, 3)
    edge_index, _ = neighbor_edges(np.zeros((1, 3)), cell, (True, True, False), 3.0)
    assert edge_index.shape == (2, 0)


def test_self_edges_flag_and_unwrapped_positions():
    atoms = bilayer(2, rattle=0.05, seed=1)
    cell = np.array(atoms.cell)
    with_self = as_set(*neighbor_edges(atoms.positions, cell, atoms.pbc, 3.0, self_edges=True))
    without = as_set(*neighbor_edges(atoms.positions, cell, atoms.pbc, 3.0))
    assert with_self - without == {(i, i, 0, 0, 0) for i in range(len(atoms))}
    # moving atom 5 to x_5 - L cell relabels its bonds: (5, j, R) -> (5, j, R - L), (i, 5, R) -> (i, 5, R + L)
    L = np.array([1, -2, 0])
    moved = atoms.positions.copy()
    moved[5] -= L @ cell
    relabelled = set()
    for i, j, *R in without:
        R = np.array(R) - (L if i == 5 else 0) + (L if j == 5 else 0)
        relabelled.add((i, j, *map(int, R)))
    assert as_set(*neighbor_edges(moved, cell, atoms.pbc, 3.0)) == relabelled
