"""HedgeNet as an ASE calculator (mlepi.ml.calculator): the energy and forces of the model's own forward pass,
forces that are the numerical gradient of the energy, phonopy's finite-difference force constants equal to the
autograd Hessian of the energy, and an NVE run that conserves the total energy."""

import numpy as np
import phonopy
import pytest
import torch
from ase import units
from ase.calculators.fd import calculate_numerical_forces
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from mlepi.formats.frames import Frame
from mlepi.ml.calculator import HedgeNetCalculator
from mlepi.ml.graph import frame_to_data
from mlepi.ml.infer import predict_frames
from mlepi.ml.model import HedgeNet
from mlepi.vibrations.displace import to_ase, to_phonopy

from bilayer_tb import bilayer_primitive
from hedgenet_synthetic import TOY_BASIS, bilayer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = HedgeNet.from_config({"hidden": 16, "n_rbf": 6, "num_interactions": 2}, TOY_BASIS)
    # Untrained weights give a nearly flat energy; scaled, the force constants reach graphene's order
    # (~10 eV/A^2), so the checks below are not passed by tiny numbers.
    net.set_standardisation({"energy_scale": 400.0})
    return net.double().eval()


def test_energy_and_forces_are_those_of_the_models_forward_pass(model):
    atoms = bilayer(2, rattle=0.05, seed=3)
    atoms.calc = HedgeNetCalculator(model)
    frame = predict_frames(model, [atoms], ["a"], fermi_level=False, overlap="model")[0]
    assert atoms.get_potential_energy() == pytest.approx(frame.energy, rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), frame.forces, rtol=1e-10, atol=1e-12)


def test_forces_are_minus_the_numerical_gradient_of_the_energy(model):
    atoms = bilayer(2, rattle=0.08, seed=4)
    calc = HedgeNetCalculator(model)
    atoms.calc = calc
    numeric = calculate_numerical_forces(atoms, eps=1e-4)  # ASE's own central differences
    np.testing.assert_allclose(atoms.get_forces(), numeric, atol=1e-7)


def test_phonopy_force_constants_are_the_hessian_of_the_energy(model):
    phonon = phonopy.Phonopy(to_phonopy(bilayer_primitive()), supercell_matrix=np.diag([2, 2, 1]),
                             primitive_matrix="P")
    phonon.generate_displacements(distance=0.005, is_plusminus=True)
    pristine = to_ase(phonon.supercell, _layers(phonon.supercell))
    calc = HedgeNetCalculator(model)
    forces = []
    for cell in phonon.supercells_with_displacements:
        atoms = to_ase(cell, pristine.arrays["layer"])
        atoms.calc = calc
        forces.append(atoms.get_forces())
    phonon.forces = np.array(forces)
    phonon.produce_force_constants()
    hessian = _autograd_hessian(model, pristine)
    scale = np.abs(hessian).max()
    assert scale > 1.0  # eV/A^2
    assert np.abs(phonon.force_constants - hessian).max() < 3e-4 * scale  # O(d^2) of +-0.005 A differences


def _layers(cell) -> np.ndarray:
    z = cell.positions[:, 2]
    return (z > z.mean()).astype(int)  # two flat layers


def _autograd_hessian(model, atoms) -> np.ndarray:
    """d2E/du_ia du_jb [n, n, 3, 3] by differentiating the autograd forces once more."""
    cfg = model.config
    data = frame_to_data(Frame.from_atoms("h", atoms), model.basis, cfg["cutoff_intra"], cfg["cutoff_inter"],
                         targets=False, blocks=False)
    data.pos = data.pos.clone().requires_grad_(True)
    forces = model(data, forces=True, create_graph=True, blocks=False)["forces"].reshape(-1)
    rows = [torch.autograd.grad(f, data.pos, retain_graph=True)[0].reshape(-1) for f in forces]
    n = len(atoms)
    return (-torch.stack(rows)).detach().numpy().reshape(n, 3, n, 3).transpose(0, 2, 1, 3)


def test_nve_run_conserves_the_total_energy_and_keeps_the_layers(model):
    atoms = bilayer(2, rattle=0.0)
    del atoms.arrays["layer"]  # assigned from z once, then kept as the atoms move
    calc = HedgeNetCalculator(model)
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    e0, k0 = atoms.get_total_energy(), atoms.get_kinetic_energy()
    layers = calc._layers(atoms).copy()
    VelocityVerlet(atoms, timestep=0.25 * units.fs).run(200)
    # The untrained potential is not at a minimum: the atoms gain ~2 eV each of kinetic energy in 50 fs,
    # while the total energy stays put, as it must when the forces are the exact gradient of the energy.
    drift = abs(atoms.get_total_energy() - e0) / len(atoms)
    gained = (atoms.get_kinetic_energy() - k0) / len(atoms)
    assert drift < 1e-4 and gained > 1e3 * drift
    assert np.array_equal(calc._layers(atoms), layers) and set(layers) == {0, 1}
