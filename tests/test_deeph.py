"""DeepH export (mlepi.formats.deeph, `mlepi export-deeph`): read back, the blocks rebuild the same H(k) eigenvalues,
and the orbitals come out in DeepH's order, checked against the Slater-Koster form of a bond along x."""

import json

import numpy as np
import pytest
import scipy.linalg

from mlepi import cli
from mlepi.electrons import tb
from mlepi.formats import deeph
from mlepi.formats.frames import write_frames

from hedgenet_synthetic import TOY_BASIS, synthetic_frames

K_POINTS = np.array([[0.0, 0.0, 0.0], [1 / 3, 1 / 3, 0.0], [0.5, 0.0, 0.0], [0.11, 0.23, 0.0]])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("deeph")
    frames = synthetic_frames(2, rattle=0.05) + [synthetic_frames(1, rattle=0.0)[0]]
    frames[-1].name = "flat"
    write_frames(d / "frames.h5", frames, basis=TOY_BASIS, source="dft", parameters={}, provenance={})
    assert cli.main(["export-deeph", str(d / "frames.h5"), "--out-dir", str(d / "deeph")]) == 0
    return {f.name: f for f in frames}, d / "deeph"


def test_every_file_of_the_layout_is_written(exported):
    frames, out = exported
    assert sorted(p.name for p in out.iterdir()) == sorted(frames)
    folder = out / "f000"
    assert {p.name for p in folder.iterdir()} == {"lat.dat", "rlat.dat", "site_positions.dat", "element.dat",
                                                   "orbital_types.dat", "info.json", "hamiltonians.h5",
                                                   "overlaps.h5"}
    info = json.loads((folder / "info.json").read_text())
    f = frames["f000"]
    assert info == {"nsites": f.n_atoms, "isorthogonal": False, "isspinful": False, "norbits": 4 * f.n_atoms,
                    "fermi_level": 0.0}
    lat, rlat = np.loadtxt(folder / "lat.dat"), np.loadtxt(folder / "rlat.dat")
    np.testing.assert_allclose(lat.T @ rlat, 2 * np.pi * np.eye(3), atol=1e-12)  # a_i . b_j = 2 pi delta_ij
    assert (folder / "orbital_types.dat").read_text().splitlines() == ["0  1"] * f.n_atoms


@pytest.mark.parametrize("name", ["f000", "f001", "flat"])
def test_read_back_rebuilds_the_same_eigenvalues(exported, name):
    frames, out = exported
    structure, blocks = deeph.read(out / name)
    frame = frames[name]
    np.testing.assert_allclose(structure["cell"], frame.cell, atol=1e-12)
    np.testing.assert_allclose(structure["positions"], frame.positions, atol=1e-12)
    assert len(blocks) == len(frame.H)
    expected = tb.eigenvalues(frame, TOY_BASIS, K_POINTS)
    for k, e in zip(K_POINTS, expected):
        H_k, S_k = deeph.bloch_sum(structure, blocks, k)
        np.testing.assert_allclose(scipy.linalg.eigh(H_k, S_k, eigvals_only=True), e, atol=1e-10)


def test_p_orbitals_are_in_deeph_order_x_y_z(exported):
    """Bonds along x (second neighbours in a flat layer, a = 2.46 A apart): Slater-Koster gives
    p-p = diag(V_pp_sigma, V_pp_pi, V_pp_pi) in (x, y, z). GPAW's order (y, z, x) would put sigma last."""
    _, out = exported
    structure, blocks = deeph.read(out / "flat")
    pos, cell = structure["positions"], structure["cell"]
    bonds = [(pos[j] + R @ cell - pos[i], H) for i, j, R, H, _ in blocks]
    along_x = [H for bond, H in bonds if abs(bond[0]) > 1.0 and np.abs(bond[1:]).max() < 1e-9]
    assert len(along_x) >= 2 * len(pos)  # +x and -x for every atom
    for H in along_x:
        pp = H[1:, 1:]
        assert abs(pp[1, 1] - pp[2, 2]) < 1e-12 and abs(pp[0, 0] - pp[1, 1]) > 1e-3  # sigma first, pi twice
        assert np.abs(pp - np.diag(np.diag(pp))).max() < 1e-12
        assert abs(H[0, 2]) < 1e-12 and abs(H[0, 3]) < 1e-12 and abs(H[0, 1]) > 1e-3  # s couples to p_x only


def test_export_again_replaces_the_folder(exported, tmp_path):
    frames, out = exported
    before = (out / "f000" / "hamiltonians.h5").read_bytes()
    assert cli.main(["export-deeph", str(out.parent / "frames.h5"), "--out-dir", str(out)]) == 0
    assert (out / "f000" / "hamiltonians.h5").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
