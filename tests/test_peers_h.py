"""Stage ``peers_h``: the e3nn Hamiltonian baseline of DeepH-E3's design (mlepi.evaluation.e3_hamiltonian).

Its blocks must rotate and reflect as GPAW's orbitals do (checked with mlepi's own Wigner matrices, an
independent route from e3nn's), be Hermitian, couple two p shells to a scalar as the identity (true in any
orthonormal real basis: a check of the change of harmonics), learn Slater-Koster blocks read through the DeepH
folders, and resume a killed training to the same result. Accuracy on DFT frames is ``benchmarks/peers.py``'s.
"""

import numpy as np
import pytest
import torch

from mlepi.evaluation import peers_h
from mlepi.evaluation.e3_hamiltonian import E3Hamiltonian, coupling, harmonics_change, reverse_index
from mlepi.formats import deeph
from mlepi.geometry.neighbors import block_edges
from mlepi.ml import wigner

from hedgenet_synthetic import TOY_BASIS, bilayer, synthetic_frames

# s, p and d shells on two species of different layouts (couplings up to L = 4).
SPD_BASIS = {"name": "toy-spd", "orbitals": {"6": [["2s", 0], ["2p", 1], ["3d", 2]], "1": [["1s", 0], ["2p", 1]]},
             "rcut": {"6": 2.2, "1": 1.6}, "valence": {"6": 4, "1": 1}}
CFG = {"h_channels": 4, "h_l_max": 2, "h_layers": 2, "h_n_rbf": 6, "h_epochs": 3, "h_lr": 0.01, "seed": 0}


def blocks_of(model, atoms, basis):
    edge_index, cell_shift = block_edges(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc, basis)
    s = peers_h.sample(atoms.numbers, atoms.positions, atoms.cell.array, edge_index, cell_shift)
    with torch.no_grad():
        return peers_h.predict(model, s).double().numpy(), edge_index, cell_shift


@pytest.mark.parametrize("improper", [False, True], ids=["rotation", "reflection"])
def test_blocks_rotate_as_gpaw_orbitals_and_are_hermitian(improper):
    torch.manual_seed(0)
    model = E3Hamiltonian(peers_h.orbital_types(SPD_BASIS), {6: 2.2, 1: 1.6}, CFG)
    for p in model.parameters():  # away from e3nn's initialisation, so that every path carries weight
        p.data += 0.3 * torch.randn_like(p)
    atoms = bilayer(2, rattle=0.1, seed=3)
    atoms.numbers[[1, 6]] = 1
    H, edge_index, cell_shift = blocks_of(model, atoms, SPD_BASIS)
    rotation = wigner.random_rotation(5)
    if improper:
        rotation = -rotation
    turned, *_ = blocks_of(model, wigner.rotated_atoms(atoms, rotation), SPD_BASIS)
    expected = wigner.rotate_blocks(H, atoms.numbers, edge_index, SPD_BASIS, rotation)
    scale = np.abs(H).max()
    assert scale > 1e-3
    np.testing.assert_allclose(turned, expected, atol=2e-5 * scale)  # float32
    reverse = reverse_index(edge_index, cell_shift)
    np.testing.assert_array_equal(H, H[reverse].transpose(0, 2, 1))


def test_two_p_shells_couple_to_a_scalar_as_the_identity():
    """Σ_m Y_1m(a) Y_1m(b) is invariant in any orthonormal real basis, so the L = 0 coupling of two p shells is
    δ_mn / √3 in GPAW's order too; and the change of harmonics is a signed permutation for l = 1 (x, y, z to
    GPAW's y, z, x)."""
    irreps, t = coupling([1], [1])
    assert str(irreps) == "1x0e+1x1e+1x2e"
    np.testing.assert_allclose(t[0].numpy(), np.eye(3) / np.sqrt(3), atol=1e-7)
    np.testing.assert_allclose(np.abs(harmonics_change(1).numpy()), np.eye(3)[[1, 2, 0]], atol=1e-10)
    q = harmonics_change(2).numpy()
    np.testing.assert_allclose(q @ q.T, np.eye(5), atol=1e-10)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = tmp_path_factory.mktemp("deeph")
    frames = synthetic_frames(4, rattle=0.05, seed=1)
    return frames, [deeph.write_frame(f, TOY_BASIS, out / f.name) for f in frames]


def test_deeph_folders_read_back_in_gpaw_order(folders):
    frames, paths = folders
    s = peers_h.read_deeph_sample(paths[0], TOY_BASIS)
    ref = peers_h.frame_sample(frames[0])
    keys = lambda x: [(int(i), int(j), *map(int, R)) for (i, j), R in zip(x["edge_index"].T, x["cell_shift"])]
    order = {k: e for e, k in enumerate(keys(ref))}
    np.testing.assert_allclose(s["H"].numpy(), ref["H"].numpy()[[order[k] for k in keys(s)]], atol=1e-6)


def test_training_learns_and_a_killed_one_resumes_to_the_same_model(folders, tmp_path, monkeypatch):
    _, paths = folders
    samples = [peers_h.read_deeph_sample(p, TOY_BASIS) for p in paths]
    train, validation = samples[:3], samples[3:]
    cfg = {**CFG, "h_epochs": 15}
    model, info = peers_h.train(train, validation, TOY_BASIS, cfg, tmp_path / "whole")
    rows = (tmp_path / "whole" / "metrics.csv").read_text().splitlines()
    first, last = (float(r.split(",")[2]) for r in (rows[1], rows[-1]))
    assert last < 0.5 * first  # the validation H MAE halves within 15 epochs
    assert info["best_epoch"] > 10

    calls = {"n": 0}
    real = peers_h.mae_meV

    def killed_in_epoch_7(*args):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(peers_h, "mae_meV", killed_in_epoch_7)
    with pytest.raises(KeyboardInterrupt):
        peers_h.train(train, validation, TOY_BASIS, cfg, tmp_path / "killed")
    monkeypatch.setattr(peers_h, "mae_meV", real)
    resumed, _ = peers_h.train(train, validation, TOY_BASIS, cfg, tmp_path / "killed")
    # The same epochs, validation errors and learning rates; training losses to float32 summation order.
    table = lambda d: np.loadtxt(tmp_path / d / "metrics.csv", delimiter=",", skiprows=1)
    whole, killed = table("whole"), table("killed")
    np.testing.assert_array_equal(killed[:, [0, 2, 3]], whole[:, [0, 2, 3]])
    np.testing.assert_allclose(killed[:, 1], whole[:, 1], rtol=1e-6)
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
