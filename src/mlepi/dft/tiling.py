"""The DFT frame of an undisplaced supercell, tiled from its primitive cell's frame.

An undisplaced n1 x n2 supercell is the primitive crystal: with the k mesh and real-space grid that
:mod:`mlepi.dft.scf` scales with the supercell (``kpts_primitive // n``, ``grid_points_primitive * n``), its GPAW
calculation is the primitive cell's, folded. Its energy is N times the primitive energy, each atom carries its
primitive image's force, and each supercell edge (s, t, R) has the block of the primitive edge between the
images of s and t that spans the same vector. So ``mlepi dft --tile-to`` computes the pristine supercell on
4 atoms instead of 4 N (the 3x3 default: 21 s instead of 40 s on one core) and
``tests/test_dft.py`` checks the tiled frame against a direct supercell calculation.
"""

from __future__ import annotations

import numpy as np

from mlepi.formats.frames import Frame
from mlepi.formats.structures import StructureFileError
from mlepi.geometry.neighbors import block_edges
from mlepi.geometry.supercell import SupercellError, map_supercell


class TilingError(StructureFileError):
    """The supercell is not a tiling of the primitive cell, or an edge has no primitive counterpart."""


def supercell_map(primitive, supercell, name: str):
    """:func:`mlepi.geometry.supercell.map_supercell` within 1e-6 Å, or a :class:`TilingError` that names ``name``."""
    try:
        return map_supercell(primitive, supercell, tol=1e-6)
    except SupercellError as err:
        raise TilingError(f"{name}: not an undisplaced supercell of the primitive cell: {err}") from None


def primitive_edge_of(mapping, i, j, R) -> np.ndarray:
    """The primitive lattice vector ``[E, 3]`` of supercell edges (i, j, R): x_j + R @ cell_sc − x_i equals
    x_μ(j) + L @ cell_prim − x_μ(i) with L = r(j) + R @ P − r(i)."""
    return mapping.translation[j] + np.asarray(R) @ mapping.supercell_matrix - mapping.translation[i]


def tile_frame(frame: Frame, basis: dict, supercell, name: str, info: dict | None = None) -> Frame:
    """The frame of the undisplaced ``supercell`` (ase.Atoms with ``layer``) from its primitive cell's ``frame``.

    ``basis``: the frames-file basis of ``frame`` (its ``rcut`` decides the supercell edges:
    :func:`mlepi.geometry.neighbors.block_edges`, as for every frame). ``info`` becomes the new frame's info.

    Raises
    ------
    TilingError
        If the supercell's atoms are not lattice translates of the frame's
        (:func:`mlepi.geometry.supercell.map_supercell`, within 1e-6 Å), or an edge of the supercell has no edge in
        the primitive frame.
    """
    mapping = supercell_map(frame, supercell, name)
    (i, j), R = block_edges(supercell.numbers, supercell.positions, supercell.cell[:], supercell.pbc, basis)
    mu = mapping.primitive_index
    L = primitive_edge_of(mapping, i, j, R)
    index = {(int(a), int(b), *map(int, shift)): e
             for e, (a, b, shift) in enumerate(zip(*frame.edge_index, frame.cell_shift))}
    try:
        source = np.array([index[(int(mu[a]), int(mu[b]), *map(int, shift))] for a, b, shift in zip(i, j, L)],
                          dtype=np.int64)
    except KeyError as err:
        raise TilingError(f"{name}: supercell edge between primitive atoms {err.args[0][:2]} at lattice vector "
                          f"{err.args[0][2:]} is not in the primitive frame {frame.name!r} (a pair at the cutoff "
                          "rc_i + rc_j?)") from None
    return Frame.from_atoms(
        name, supercell, energy=None if frame.energy is None else mapping.n_cells * frame.energy,
        forces=None if frame.forces is None else np.asarray(frame.forces)[mu],
        fermi_level=frame.fermi_level, edge_index=np.stack([i, j]).astype(np.int64), cell_shift=R,
        H=np.asarray(frame.H)[source], S=np.asarray(frame.S)[source], info=dict(info or {}))
