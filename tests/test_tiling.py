"""The frame of an undisplaced supercell tiled from its primitive cell's (mlepi.dft.tiling), against the supercell's
own Slater–Koster frame: the model evaluated on the supercell's pairs, an independent route. The GPAW check
(tiled against a direct supercell calculation) is in tests/test_dft.py."""

import numpy as np
import pytest

from mlepi.dft.tiling import TilingError, tile_frame

import bilayer_tb as bt

SQRT3 = np.array([[2, 1, 0], [-1, 1, 0], [0, 0, 1]])


def _blocks_by_edge(frame):
    return {(int(i), int(j), *map(int, R)): (h, s)
            for i, j, R, h, s in zip(*frame.edge_index, frame.cell_shift, frame.H, frame.S)}


@pytest.mark.parametrize("P", [np.diag([3, 3, 1]), SQRT3])
def test_tiled_frame_is_the_supercells_own(P):
    prim = bt.bilayer_primitive()
    sc = bt.supercell(prim, P, seed=3, wrap_some=True)  # shuffled order, atoms wrapped (also across vacuum)
    frame = bt.tb_frame(prim, "prim", with_s=True)
    frame.energy, frame.fermi_level = -7.25, -0.31
    frame.forces = np.random.default_rng(0).normal(size=(4, 3))
    tiled = tile_frame(frame, bt.BASIS_SPZ, sc, "pristine", {"kind": "pristine"})

    n_cells = round(abs(np.linalg.det(P)))
    assert tiled.name == "pristine" and tiled.info == {"kind": "pristine"}
    assert tiled.energy == pytest.approx(n_cells * frame.energy) and tiled.fermi_level == frame.fermi_level
    np.testing.assert_array_equal(tiled.positions, sc.positions)
    # Each atom carries the force of its primitive image: the one at the same place in the primitive cell.
    inv = np.linalg.inv(prim.cell.array)
    for x, f in zip(sc.positions, tiled.forces):
        frac = (x - prim.positions) @ inv
        (mu,) = np.flatnonzero(np.abs(frac - np.rint(frac)).max(axis=1) < 1e-9)
        np.testing.assert_array_equal(f, frame.forces[mu])
    direct = _blocks_by_edge(bt.tb_frame(sc, "direct", with_s=True))
    mine = _blocks_by_edge(tiled)
    assert mine.keys() == direct.keys()
    for key, (h, s) in mine.items():
        np.testing.assert_allclose(h, direct[key][0], atol=1e-12)
        np.testing.assert_allclose(s, direct[key][1], atol=1e-12)


def test_a_displaced_supercell_is_refused():
    prim = bt.bilayer_primitive()
    sc = bt.displaced(bt.supercell(prim, np.diag([3, 3, 1])), 0.01, 0.01, seed=1)
    with pytest.raises(TilingError, match="sample: not an undisplaced supercell"):
        tile_frame(bt.tb_frame(prim, "prim"), bt.BASIS_PZ, sc, "sample")
