"""Physics HedgeNet must respect by construction (mlepi.ml.model): symmetries, forces, Hermiticity, the split."""

import numpy as np
import pytest
import torch

from mlepi.formats.frames import Frame
from mlepi.ml.graph import frame_to_data
from mlepi.ml.model import HedgeNet, reverse_edges

from hedgenet_synthetic import TOY_BASIS, bilayer

torch.set_num_threads(1)

SMALL = {"hidden": 8, "n_rbf": 4, "num_interactions": 2, "cutoff_intra": 3.0, "cutoff_inter": 3.8}
# Two species with different orbital counts exercise the zero-padded layout (C: s, p = 4; H: s = 1).
MIXED_BASIS = {"name": "toy", "orbitals": {"6": [["2s", 0], ["2p", 1]], "1": [["1s", 0]]},
               "rcut": {"6": 2.2, "1": 1.6}, "valence": {"6": 4, "1": 1}}
# s, p and d shells (couplings up to L = 4, axial features of L = 1..3) on two species of different layouts.
SPD_BASIS = {"name": "toy-spd", "orbitals": {"6": [["2s", 0], ["2s'", 0], ["2p", 1], ["3d", 2]],
                                             "1": [["1s", 0], ["2p", 1]]},
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


@pytest.mark.parametrize("improper", [False, True], ids=["rotation", "reflection"])
def test_rotations_and_reflections_transform_every_output(improper):
    """O(3) covariance by construction: E invariant, F rotates as a vector, every H and S block as its orbitals,
    H'_ij = U_i H_ij U_j^T (mlepi.ml.wigner), for a general rotation and for a reflection (R = I - 2 v v^T) of the
    whole structure, cell included; with s, p, d shells and two species, so every coupling path is exercised."""
    from mlepi.ml import wigner

    model, atoms = make_model(basis=SPD_BASIS), structure()
    ref = predict(model, atoms)
    rotation = wigner.random_rotation(4)
    if improper:
        v = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
        rotation = np.eye(3) - 2 * np.outer(v, v)
    out = predict(model, wigner.rotated_atoms(atoms, rotation))
    assert out["energy"] == pytest.approx(ref["energy"], abs=1e-9)
    np.testing.assert_allclose(out["forces"], ref["forces"] @ rotation.T, atol=1e-9)
    assert out["H"].keys() == ref["H"].keys()
    keys = list(ref["H"])
    edges = np.array([k[:2] for k in keys]).T
    for name in ("H", "S"):
        before = np.array([ref[name][k] for k in keys])
        expected = wigner.rotate_blocks(before, atoms.numbers, edges, SPD_BASIS, rotation)
        after = np.array([out[name][k] for k in keys])
        assert np.abs(after - before).max() > 0.01, f"{name}: the rotation should change the blocks"
        np.testing.assert_allclose(after, expected, atol=1e-10, err_msg=name)


def assert_forces_are_minus_gradient(model, data, forces, sites, h=1e-5):
    """Each force component of ``sites`` (atom, axis) against a central difference of the energy."""
    for atom, axis in sites:
        energies = []
        for sign in (1, -1):
            displaced = data.clone()
            displaced.pos = data.pos.clone()
            displaced.pos[atom, axis] += sign * h
            energies.append(float(model(displaced, forces=False, blocks=False)["energy"][0].detach()))
        assert forces[atom, axis] == pytest.approx(-(energies[0] - energies[1]) / (2 * h), abs=1e-7)


def test_forces_are_minus_the_finite_difference_gradient_of_the_energy():
    model, atoms = make_model(), structure()
    data = predict(model, atoms)["data"]
    assert_forces_are_minus_gradient(model, data, model(data)["forces"].detach().numpy(),
                                     [(0, 0), (3, 2), (7, 1), (12, 2)])


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


@pytest.mark.parametrize("vectors", [0, 4], ids=["scalar", "vectors"])
def test_intra_and_inter_modules_are_separate(vectors):
    model = make_model(basis=TOY_BASIS, energy_vectors=vectors)
    assert any(".vectors.inter." in n for n, _ in model.named_parameters()) == bool(vectors)
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
    with pytest.raises(ValueError, match="'hiden' was unexpected"):  # a ConfigError
        HedgeNet.from_config({"hiden": 3}, TOY_BASIS)
    with pytest.raises(ValueError, match="no cutoff radius|only has"):
        predict(make_model(basis=TOY_BASIS), structure())  # H atoms, carbon-only basis


def test_a_model_file_of_the_schema_before_vector_features_still_loads(tmp_path):
    """Version 4 files predate model.energy_vectors: they load as the scalar model they were (whatever the
    key's default), predict as before, and a file of an unknown version is refused with what to do."""
    model, atoms = make_model(), structure()
    model.save(tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt", weights_only=False)
    state["schema_version"] = 4
    state["config"].pop("energy_vectors")
    torch.save(state, tmp_path / "v4.pt")
    loaded = HedgeNet.load(tmp_path / "v4.pt")
    assert loaded.config["energy_vectors"] == 0
    assert predict(loaded.double(), atoms)["energy"] == pytest.approx(predict(model, atoms)["energy"], abs=1e-12)
    state["schema_version"] = 3
    torch.save(state, tmp_path / "v3.pt")
    with pytest.raises(ValueError, match="schema_version 3.*retrain"):
        HedgeNet.load(tmp_path / "v3.pt")


def test_chunked_block_readout_and_skipped_overlap_change_nothing(monkeypatch):
    """Edge chunks bound the readout's memory at 10^4 atoms; ``overlap=False`` skips S; neither changes H."""
    import mlepi.ml.model

    model, atoms = make_model(), structure()
    ref = predict(model, atoms)
    monkeypatch.setattr(mlepi.ml.model, "PAIR_CHUNK", 7)  # many chunks, the last one partial
    monkeypatch.setattr(mlepi.ml.model, "EDGE_CHUNK", 5)  # the on-site moments too
    chunked = predict(model, atoms)
    for key, block in ref["H"].items():
        np.testing.assert_allclose(chunked["H"][key], block, atol=1e-12)
        np.testing.assert_allclose(chunked["S"][key], ref["S"][key], atol=1e-12)
    out = model(ref["data"], overlap=False)
    assert "S" not in out
    np.testing.assert_allclose(out["H"].detach().numpy(), np.array(list(ref["H"].values())), atol=1e-12)


@pytest.mark.parametrize("basis", [SPD_BASIS, TOY_BASIS])
def test_reverse_edges_share_their_bond_features_exactly(monkeypatch, basis):
    """The blocks of a pair of reverse edges (i, j, R), (j, i, -R) take the bond features of the first alone:
    the second's are the same channels up to sign (``readout.BondFeatures.reverse_mixing``). Evaluated edge by
    edge instead (the path taken when a reverse edge is missing), every block is the same. With s, p, d shells
    and two species, C-H and H-C pairs (different couplings) and both parities of every degree are covered; one
    species takes the elemental path."""
    import mlepi.ml.model

    model = make_model(basis)
    atoms = structure(hydrogens=() if basis is TOY_BASIS else (3, 9))
    paired = predict(model, atoms)
    monkeypatch.setattr(mlepi.ml.model, "reverse_edges", lambda *args: None)
    direct = predict(model, atoms)
    for key, block in direct["H"].items():
        np.testing.assert_allclose(paired["H"][key], block, rtol=0, atol=1e-12)
    assert max(np.abs(b).max() for b in direct["H"].values()) > 0.1


def test_coupled_basis_reaches_every_block_component():
    """Off-site blocks: over all shell pairs of two atoms, the paths (l_a, l_b, L) span every block element (the
    coupling matrix is orthogonal), so covariance costs no expressiveness; without axial features (S, on-site)
    exactly the components odd under inversion relative to their orbitals are left out."""
    from mlepi.ml.block_readout import Coupling, orbital_shells

    c, h = (orbital_shells(SPD_BASIS["orbitals"][z]) for z in ("6", "1"))
    full = Coupling(c, h, 10, axial=True)
    nonzero = full.matrix[:, np.abs(full.matrix).sum(axis=0) > 0]  # the 10 x 4 real elements of a C-H block
    assert nonzero.shape == (40, 40)
    np.testing.assert_allclose(nonzero @ nonzero.T, np.eye(40), atol=1e-12)
    polar = Coupling(c, c, 10, axial=False).matrix
    np.testing.assert_allclose(polar @ polar.T, np.eye(len(polar)), atol=1e-12)
    # C shells s, s', p, d; per ordered shell pair: s-s 1 (x4), s-p 3 (x4), s-d 5 (x4), p-p (L = 0, 2) 6,
    # p-d (L = 1, 3) 10 (x2), d-d (L = 0, 2, 4) 15; the axial rest: p-p L = 1, p-d L = 2 (x2), d-d L = 1, 3
    assert len(polar) == 4 + 12 + 20 + 6 + 20 + 15 == 100 - (3 + 10 + 10)


@pytest.mark.parametrize("element", ["p-p antisymmetric", "s-p perpendicular"])
def test_second_neighbour_blocks_can_tell_the_sublattices_apart(element):
    """In pristine graphene two elements of a second-neighbour block are zero in the Slater-Koster form and differ
    in sign between the A and B sublattices: the antisymmetric part of the p-p block (±0.26 eV in the bilayer's
    DFT data; axial) and the s-p element perpendicular to the bond in the plane (±0.13 eV; polar). By symmetry a
    site's dipole and in-plane quadrupole vanish; only its octupole carries them (the products [Y_3(n) ⊗ M_3]_1
    and [Y_2(n) ⊗ M_3]_1 of mlepi.ml.block_readout.product_terms). So: nonzero, and of opposite sign on the two
    sublattices for one bond vector."""
    model, atoms = make_model(basis=TOY_BASIS), bilayer(2, rattle=0.0)
    out = predict(model, atoms)
    cell = np.array(atoms.cell)
    values = {}
    for (i, j, *R), block in out["H"].items():
        v = atoms.positions[j] - atoms.positions[i] + np.array(R) @ cell
        if abs(np.linalg.norm(v) - 2.46) < 1e-6 and i in (0, 1):  # from the A and the B site of layer 0
            p = block[1:4, 1:4]  # (y, z, x)
            unit = v / np.linalg.norm(v)
            perpendicular = np.array([unit[0], unit[2], -unit[1]])  # (y, z, x) components of z × n
            values[(i, *np.round(v, 3))] = (p[0, 2] - p[2, 0] if element == "p-p antisymmetric"
                                            else block[0, 1:4] @ perpendicular)
    a_sites = [val for (sub, *_), val in values.items() if sub == 0]
    assert a_sites and len(values) > len(a_sites)
    assert max(map(abs, a_sites)) > 1e-4
    for (sub, *v), val in values.items():
        if sub == 0 and (1, *v) in values:
            assert values[(1, *v)] * val < 0  # not exactly -val: in AB stacking A is a dimer site, B is not


def test_an_edge_kind_without_edges_gives_no_blocks():
    """A chunk with no edges of a kind (common in a large structure's inter-layer chunks) gives an empty array."""
    model, atoms = make_model(), structure()
    data = predict(model, atoms)["data"]
    far = data.clone()
    far.layer = torch.zeros_like(data.layer)  # one layer: no inter-layer block edges, the inter module idle
    out = model(far, forces=False)
    assert torch.isfinite(out["H"]).all()


def three_atoms(angle_deg: float):
    """Atom 0 bonded to atoms 1 and 2 at 1.42 Å, ``angle_deg`` between the bonds, one layer, in a large cell."""
    from ase import Atoms

    t = np.radians(angle_deg)
    atoms = Atoms("C3", positions=[[0, 0, 0], [1.42, 0, 0], [1.42 * np.cos(t), 1.42 * np.sin(t), 0]],
                  cell=[20.0, 20.0, 20.0], pbc=True)
    atoms.positions += 10.0
    atoms.set_array("layer", np.zeros(3, dtype=int))
    return atoms


def test_only_angular_invariants_see_the_angle_between_two_bonds():
    """At 120° and 150° the two outer atoms are 2.46 and 2.74 Å apart, beyond the 2.4 Å cutoff: every atom has
    the same bond lengths, and a model of distances alone gives both the same energy however many interactions
    it has. With the power spectrum of degree 2 the energy and the forces depend on the angle."""
    cut = {"cutoff_intra": 2.4, "cutoff_inter": 2.4}
    invariant, angular = make_model(**cut, energy_degree=0), make_model(**cut, energy_degree=2)
    assert invariant.interactions[0].angular is None
    energies = {name: [predict(model, three_atoms(a))["energy"] for a in (120.0, 150.0)]
                for name, model in (("invariant", invariant), ("angular", angular))}
    assert energies["invariant"][0] == pytest.approx(energies["invariant"][1], abs=1e-12)
    assert abs(energies["angular"][0] - energies["angular"][1]) > 1e-8  # ~1e-6 eV at initialisation, seeded
    # Atom 1 (on the x axis) feels a force across its bond only from a bond-angle term.
    def across_bond(model):
        forces = predict(model, three_atoms(120.0))["forces"]
        return forces, np.linalg.norm(forces[1] - forces[1, 0] * np.array([1.0, 0.0, 0.0]))

    assert across_bond(invariant)[1] < 1e-12
    forces, across = across_bond(angular)
    assert across > 1e-8
    bisector = np.array([np.cos(np.radians(60)), np.sin(np.radians(60)), 0.0])
    assert np.linalg.norm(forces.sum(axis=0)) < 1e-10  # translation invariance: no net force
    assert abs(np.cross(forces[0], bisector)[2]) < 1e-10  # mirror symmetry through the bisector


def four_atoms(dihedral_deg: float):
    """A chain 0-1-2-3 of 1.4 Å bonds at 120°, twisted about the 1-2 bond by ``dihedral_deg`` (0: cis), in a
    large cell: pairs beyond the chain's bonds are at least 2.42 Å apart."""
    from ase import Atoms

    bond, phi = 1.4, np.radians(dihedral_deg)
    positions = np.array([[-0.5 * bond, np.sqrt(0.75) * bond, 0.0], [0.0, 0.0, 0.0], [bond, 0.0, 0.0],
                          [1.5 * bond, np.sqrt(0.75) * bond * np.cos(phi), np.sqrt(0.75) * bond * np.sin(phi)]])
    atoms = Atoms("C4", positions=positions + 10.0, cell=[20.0, 20.0, 20.0], pbc=True)
    atoms.set_array("layer", np.zeros(4, dtype=int))
    return atoms


def test_only_vector_features_see_the_dihedral_angle():
    """With a 2.0 Å cutoff each atom sees its chain neighbours alone: bond lengths and both bond angles are the
    same at every dihedral φ, so the power spectrum (three-body), however many interactions pass it on, gives one
    energy for every φ and no torque about the 1-2 bond. Vector messages carry atom 2's bond directions to atom
    1, whose <v, v> then holds n_10 . n_23 = 1/4 + 3/4 cos φ: to first order E = A + B cos φ, so the torque on
    atom 3 is B sin φ, half of E(0) - E(180°) at 90° and half that at 30° (forces against energies)."""
    cut = {"cutoff_intra": 2.0, "cutoff_inter": 2.0}

    def energy_and_torque(model, dihedral):
        atoms = four_atoms(dihedral)
        out = predict(model, atoms)
        arm = atoms.positions[3] - atoms.positions[1]  # from the 1-2 axis (the x axis through atom 1)
        return out["energy"], arm[1] * out["forces"][3, 2] - arm[2] * out["forces"][3, 1]

    for vectors in (0, 4):
        model = make_model(**cut, energy_degree=2, energy_vectors=vectors)
        model.set_standardisation({"energy_scale": 1000.0})  # an energy scale of a trained model: ΔE ≫ rounding
        (e_cis, _), (_, t30), (_, t90), (e_trans, _) = (energy_and_torque(model, a) for a in (0, 30, 90, 180))
        if not vectors:
            assert e_cis == pytest.approx(e_trans, abs=1e-10) and abs(t90) < 1e-12
            continue
        assert abs(e_cis - e_trans) > 1e-8  # ~5e-7 eV at initialisation, seeded
        assert t90 == pytest.approx((e_cis - e_trans) / 2, rel=1e-3)
        assert t30 == pytest.approx(t90 / 2, rel=1e-3)


@pytest.mark.parametrize("improper", [False, True], ids=["rotation", "reflection"])
@pytest.mark.parametrize("energy", [{"energy_degree": 3}, {"energy_vectors": 4},
                                    {"energy_vectors": 4, "heterogeneous": False}],
                         ids=["degree3", "vectors", "vectors-shared"])
def test_angular_energy_branch_is_invariant_and_conservative(improper, energy):
    """energy_degree = 3 (odd and even degrees), and vector features (with either edge split): E invariant and F
    covariant under a rotation and a reflection, F = -dE/dx against central differences, H blocks still
    covariant (the readout is untouched)."""
    from mlepi.ml import wigner

    model, atoms = make_model(**energy), structure()
    ref = predict(model, atoms)
    rotation = wigner.random_rotation(7)
    if improper:
        v = np.array([0.6, 0.1, -0.4]) / np.linalg.norm([0.6, 0.1, -0.4])
        rotation = np.eye(3) - 2 * np.outer(v, v)
    out = predict(model, wigner.rotated_atoms(atoms, rotation))
    assert out["energy"] == pytest.approx(ref["energy"], abs=1e-9)
    np.testing.assert_allclose(out["forces"], ref["forces"] @ rotation.T, atol=1e-9)
    keys = list(ref["H"])
    edges = np.array([k[:2] for k in keys]).T
    expected = wigner.rotate_blocks(np.array([ref["H"][k] for k in keys]), atoms.numbers, edges, MIXED_BASIS,
                                    rotation)
    np.testing.assert_allclose(np.array([out["H"][k] for k in keys]), expected, atol=1e-10)

    assert_forces_are_minus_gradient(model, ref["data"], ref["forces"], [(0, 2), (5, 0), (11, 1)])
