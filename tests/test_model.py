"""Physics HedgeNet must respect by construction (mlepi.model): symmetries, forces, Hermiticity, the split."""

import numpy as np
import pytest
import torch
from ase import Atoms
from hedgenet_synthetic import TOY_BASIS, bilayer

from mlepi.frames import Frame
from mlepi.graph import frame_to_data
from mlepi.model import HedgeNet, reverse_edges

torch.set_num_threads(1)

SMALL = {"hidden": 8, "n_rbf": 4, "num_interactions": 2, "cutoff_intra": 3.0, "cutoff_inter": 3.8}
# Two species with different orbital counts exercise the zero-padded layout (C: s, p = 4; H: s = 1).
MIXED_BASIS = {"name": "toy", "orbitals": {"6": [["2s", 0], ["2p", 1]], "1": [["1s", 0]]},
               "rcut": {"6": 2.2, "1": 1.6}, "valence": {"6": 4, "1": 1}}


def make_model(basis=MIXED_BASIS, seed=0, **config):
    torch.manual_seed(seed)
    model = HedgeNet.from_config({**SMALL, **config}, basis).double()
    # Non-trivial standardisation so that shifts and scales are exercised.
    model.set_standardisation({"energy_shift": [-3.0, -9.0][: len(model.species)],
                               "H_onsite_mean": torch.randn(len(model.species), model.n_orb, model.n_orb),
                               "H_scale": 0.7, "S_scale": 0.2, "avg_neighbors": [6.0, 3.0, 9.0]})
    return model


def structure(seed=0, hydrogens=(3, 9)):
    atoms = bilayer(2, rattle=0.08, seed=seed)
    atoms.numbers[list(hydrogens)] = 1
    return atoms


def predict(model, atoms, **kwargs):
    """Outputs as numpy, with blocks keyed by (i, j, R)."""
    data = frame_to_data(Frame.from_atoms("x", atoms), model.basis, model.config["cutoff_intra"],
                         model.config["cutoff_inter"], targets=False)
    out = model(data, **kwargs)
    keys = [(int(i), int(j), *map(int, R)) for (i, j), R in zip(data.block_edge_index.T, data.block_cell_shift)]
    return {"energy": float(out["energy"][0].detach()), "forces": out["forces"].detach().numpy(),
            "H": dict(zip(keys, out["H"].detach().numpy())), "S": dict(zip(keys, out["S"].detach().numpy())),
            "data": data}


def test_permutation_permutes_outputs():
    model, atoms = make_model(), structure()
    perm = np.random.default_rng(1).permutation(len(atoms))
    ref, out = predict(model, atoms), predict(model, atoms[perm])
    assert out["energy"] == pytest.approx(ref["energy"], abs=1e-10)
    np.testing.assert_allclose(out["forces"], ref["forces"][perm], atol=1e-10)
    # new atom a is old atom perm[a]
    for (a, b, *R), block in out["H"].items():
        np.testing.assert_allclose(block, ref["H"][(perm[a], perm[b], *R)], atol=1e-10)
        np.testing.assert_allclose(out["S"][(a, b, *R)], ref["S"][(perm[a], perm[b], *R)], atol=1e-10)


def test_lattice_translation_and_rewrapping_leave_outputs_unchanged():
    model, atoms = make_model(), structure()
    ref = predict(model, atoms)
    shifted = atoms.copy()
    shifted.positions += np.array([0.37, -1.21, 0.55])
    out = predict(model, shifted)
    assert out["energy"] == pytest.approx(ref["energy"], abs=1e-10)
    np.testing.assert_allclose(out["forces"], ref["forces"], atol=1e-10)
    assert out["H"].keys() == ref["H"].keys()
    for key in ref["H"]:
        np.testing.assert_allclose(out["H"][key], ref["H"][key], atol=1e-10)

    # Re-wrap atom k into another image x_k -> x_k + L cell: bonds keep their blocks under new labels.
    k, L = 6, np.array([2, -1, 0])
    wrapped = atoms.copy()
    wrapped.positions[k] += L @ np.array(atoms.cell)
    out = predict(model, wrapped)
    assert out["energy"] == pytest.approx(ref["energy"], abs=1e-10)
    np.testing.assert_allclose(out["forces"], ref["forces"], atol=1e-10)
    for (i, j, *R), block in ref["H"].items():
        new_R = tuple(np.array(R) + (L if i == k else 0) - (L if j == k else 0))
        np.testing.assert_allclose(out["H"][(i, j, *new_R)], block, atol=1e-10)
        np.testing.assert_allclose(out["S"][(i, j, *new_R)], ref["S"][(i, j, *R)], atol=1e-10)


def test_rotation_leaves_energy_invariant_and_rotates_forces():
    """Guaranteed for E and F (messages see distances only); H covariance is learned, not tested here."""
    model, atoms = make_model(), structure()
    ref = predict(model, atoms)
    q, _ = np.linalg.qr(np.random.default_rng(4).standard_normal((3, 3)))
    rotated = Atoms(numbers=atoms.numbers, positions=atoms.positions @ q.T, cell=np.array(atoms.cell) @ q.T,
                    pbc=True)
    rotated.set_array("layer", atoms.arrays["layer"])
    out = predict(model, rotated)
    assert out["energy"] == pytest.approx(ref["energy"], abs=1e-9)
    np.testing.assert_allclose(out["forces"], ref["forces"] @ q.T, atol=1e-9)


def test_forces_are_minus_the_finite_difference_gradient_of_the_energy():
    model, atoms = make_model(), structure()
    data = predict(model, atoms)["data"]
    forces = model(data)["forces"].detach().numpy()
    h = 1e-5
    for atom, axis in [(0, 0), (3, 2), (7, 1), (12, 2)]:
        energies = []
        for sign in (1, -1):
            displaced = data.clone()
            displaced.pos = data.pos.clone()
            displaced.pos[atom, axis] += sign * h
            energies.append(float(model(displaced, forces=False, blocks=False)["energy"][0].detach()))
        assert forces[atom, axis] == pytest.approx(-(energies[0] - energies[1]) / (2 * h), abs=1e-7)


def test_blocks_are_hermitian_and_zero_padded():
    model, atoms = make_model(), structure()
    out = predict(model, atoms)
    n_orb = {6: 4, 1: 1}
    for key in ("H", "S"):
        blocks = out[key]
        for (i, j, *R), block in blocks.items():
            np.testing.assert_allclose(block, blocks[(j, i, *(-np.array(R)))].T, atol=1e-12)
            ni, nj = n_orb[atoms.numbers[i]], n_orb[atoms.numbers[j]]
            assert not block[ni:, :].any() and not block[:, nj:].any()
    # the pairing shortcut and the direct evaluation of g(j, i, -r) agree
    data = out["data"]
    i, j = data.block_edge_index
    rev = reverse_edges(i, j, data.block_cell_shift, len(atoms))
    assert rev is not None and torch.equal(i[rev], j) and torch.equal(data.block_cell_shift[rev],
                                                                       -data.block_cell_shift)
    keep = torch.ones(len(i), dtype=torch.bool)
    keep[rev[(i != j).nonzero()[0]]] = False  # drop one reverse edge: the model must evaluate it directly
    partial = data.clone()
    partial.block_edge_index, partial.block_cell_shift = data.block_edge_index[:, keep], data.block_cell_shift[keep]
    np.testing.assert_allclose(model(partial, forces=False)["H"].detach().numpy(),
                               model(data, forces=False)["H"].detach().numpy()[keep.numpy()], atol=1e-12)


def test_onsite_overlap_is_the_species_constant():
    model, atoms = make_model(), structure()
    out = predict(model, atoms)
    for i, z in enumerate(atoms.numbers):
        s = model.species.index(int(z))
        np.testing.assert_allclose(out["S"][(i, i, 0, 0, 0)], model.S_onsite[s].numpy(), atol=1e-14)


def loss_and_grads(model, atoms):
    model.zero_grad()
    out = predict_tensors(model, atoms)
    (out["energy"].sum() + out["forces"].pow(2).sum() + out["H"].pow(2).sum() + out["S"].pow(2).sum()).backward()
    return {name: (None if p.grad is None else float(p.grad.abs().max())) for name, p in model.named_parameters()}


def predict_tensors(model, atoms):
    data = frame_to_data(Frame.from_atoms("x", atoms), model.basis, model.config["cutoff_intra"],
                         model.config["cutoff_inter"], targets=False)
    return model(data, create_graph=True)


def test_intra_and_inter_modules_are_separate():
    model = make_model(basis=TOY_BASIS)
    inter_names = [n for n, _ in model.named_parameters() if ".inter." in n]
    intra_names = [n for n, _ in model.named_parameters() if ".intra." in n]
    assert inter_names and len(inter_names) == len(intra_names)
    # One layer label for all atoms: no inter-layer edges, so the inter modules get no gradient at all.
    single = bilayer(2, rattle=0.05)
    single.set_array("layer", np.zeros(len(single), dtype=int))
    grads = loss_and_grads(model, single)
    assert all(grads[n] in (None, 0.0) for n in inter_names)
    assert all(grads[n] for n in intra_names)
    # With two layers both sets learn.
    grads = loss_and_grads(model, bilayer(2, rattle=0.05))
    assert all(grads[n] for n in inter_names + intra_names)


def test_homogeneous_ablation_shares_one_edge_module():
    model = make_model(basis=TOY_BASIS, heterogeneous=False)
    names = [n for n, _ in model.named_parameters()]
    assert not any(".inter." in n or ".intra." in n for n in names)
    assert any(".shared." in n for n in names)
    hetero = make_model(basis=TOY_BASIS)
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n_params(model) < n_params(hetero)
    predict(model, bilayer(2))  # runs on both edge kinds


def test_save_and_load_round_trip(tmp_path):
    model, atoms = make_model(), structure()
    model.save(tmp_path / "model.pt", dft_parameters={"kpts": [2, 2, 1]})
    loaded = HedgeNet.load(tmp_path / "model.pt")
    assert loaded.config == model.config and loaded.basis == model.basis
    assert loaded.metadata["dft_parameters"] == {"kpts": [2, 2, 1]}
    ref, out = predict(model, atoms), predict(loaded.double(), atoms)
    assert out["energy"] == pytest.approx(ref["energy"], abs=1e-12)
    for key in ref["H"]:
        np.testing.assert_array_equal(out["H"][key], ref["H"][key])
    with pytest.raises(ValueError, match="unknown key"):
        HedgeNet.from_config({"hiden": 3}, TOY_BASIS)
    with pytest.raises(ValueError, match="no cutoff radius|only has"):
        predict(make_model(basis=TOY_BASIS), structure())  # H atoms, carbon-only basis


def test_chunked_block_readout_and_skipped_overlap_change_nothing(monkeypatch):
    """Edge chunks bound the readout's memory at 10^4 atoms; ``overlap=False`` skips S; neither changes H."""
    import mlepi.model

    model, atoms = make_model(), structure()
    ref = predict(model, atoms)
    monkeypatch.setattr(mlepi.model, "PAIR_CHUNK", 7)  # many chunks, the last one partial
    monkeypatch.setattr(mlepi.model, "EDGE_CHUNK", 5)  # the on-site moments too
    chunked = predict(model, atoms)
    for key, block in ref["H"].items():
        np.testing.assert_allclose(chunked["H"][key], block, atol=1e-12)
        np.testing.assert_allclose(chunked["S"][key], ref["S"][key], atol=1e-12)
    out = model(ref["data"], overlap=False)
    assert "S" not in out
    np.testing.assert_allclose(out["H"].detach().numpy(), np.array(list(ref["H"].values())), atol=1e-12)


@pytest.mark.parametrize("hidden", [8, 32])  # block 4x4 = 16 entries: below and above the width
def test_bond_block_contraction_orders_agree_and_accept_empty_chunks(hidden):
    """Both contraction orders of BondBlock give the defining sum g = Σ_k A_k z W_k, and a chunk with no edges of
    a kind (common in a large structure's inter-layer chunks) gives an empty block array."""
    from mlepi.model import BondBlock

    torch.manual_seed(0)
    n_ang, n_orb, n_rbf = 5, 4, 3
    block = BondBlock(6, hidden, n_rbf, n_ang, n_orb).double()
    atoms = block.project(torch.randn(7, 6, dtype=torch.float64))
    src, dst = torch.tensor([0, 3, 5]), torch.tensor([1, 2, 6])
    rbf, ang = torch.randn(3, n_rbf, dtype=torch.float64), torch.randn(3, n_ang, dtype=torch.float64)
    out = block(atoms, src, dst, rbf, ang)
    z = block.mlp(atoms[0][src] + atoms[1][dst] + block.radial(rbf))
    W = block.weight.view(n_ang, hidden, n_orb * n_orb)
    direct = torch.einsum("ek,eh,kha->ea", ang, z, W).view(-1, n_orb, n_orb)
    torch.testing.assert_close(out, direct, atol=1e-12, rtol=0)
    empty = block(atoms, src[:0], dst[:0], rbf[:0], ang[:0])
    assert empty.shape == (0, n_orb, n_orb)
