"""``mlepi.ml.wigner``: rotations of GPAW's real orbitals and of H, S blocks, checked against GPAW itself."""

import numpy as np
import pytest

from mlepi import config
from mlepi.dft import scf
from mlepi.geometry import layers
from mlepi.ml import wigner


def test_p_orbitals_rotate_as_the_vector_y_z_x():
    """l = 1 in GPAW's order (y, z, x): D^1 is R itself with rows and columns permuted."""
    rotation = wigner.random_rotation(3)
    order = [1, 2, 0]
    np.testing.assert_allclose(wigner.wigner_d(1, rotation), rotation[np.ix_(order, order)], atol=1e-12)


@pytest.mark.slow
def test_gpaw_blocks_of_a_rotated_cell_are_the_rotated_blocks():
    """GPAW on a rattled 4-atom bilayer and on the same structure rotated by a general 3D rotation (cell too,
    so the real-space grid moves with the atoms): energies equal, forces rotate as vectors, and every H and S
    block obeys H' = U_i H U_j^T, with d orbitals (dzp) included.

    S (two-centre integrals plus the PAW term) follows to 1e-15. GPAW's grid work is not exactly invariant under
    a rotation of the whole cell: energy, H and forces moved by ~2e-5 eV (eV/Å for forces: 7e-5), also for a
    rotation about z alone, so that is the tolerance; the blocks themselves change by 12-15 eV.
    """
    atoms = layers.build_bilayer("AB")
    atoms.rattle(0.05, seed=4)
    rotation = wigner.random_rotation(5)
    cfg = config.section_config("dft")
    cfg.update(basis="dzp", kpts_primitive=[3, 3], symmetry="off", scf_energy=1e-8, scf_density=1e-7)
    frame, basis, *_ = scf.compute_frame(atoms, cfg, name="original")
    turned, _, *_ = scf.compute_frame(wigner.rotated_atoms(atoms, rotation), cfg, name="rotated")

    assert turned.energy == pytest.approx(frame.energy, abs=5e-5)
    np.testing.assert_allclose(turned.forces, frame.forces @ rotation.T, atol=2e-4)
    key = {(i, j, tuple(r)): e for e, (i, j, r) in enumerate(zip(*frame.edge_index, frame.cell_shift))}
    order = [key[(i, j, tuple(r))] for i, j, r in zip(*turned.edge_index, turned.cell_shift)]
    assert sorted(order) == list(range(len(key)))  # the same edges
    edges = frame.edge_index[:, order]
    for name, tolerance in (("H", 5e-5), ("S", 1e-12)):
        before, after = getattr(frame, name)[order], getattr(turned, name)
        assert np.abs(after - before).max() > 0.3, f"{name}: the rotation should change the blocks"
        expected = wigner.rotate_blocks(before, frame.numbers, edges, basis, rotation)
        np.testing.assert_allclose(after, expected, atol=tolerance, err_msg=name)
