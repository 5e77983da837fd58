"""Tiny synthetic bilayers with analytic targets for the HedgeNet tests (not a test module).

Energy: a Morse pair potential, strong within a layer and weak between layers, with a smooth cutoff; forces by
autograd of that potential in float64 (an independent route from the model). H and S: Slater-Koster two-centre
s-p blocks with exponentially decaying bond integrals (interlayer hoppings scaled down, like gamma1 vs gamma0)
that vanish at rc_i + rc_j, plus an environment-dependent on-site s energy. Orbital order per atom
(s, py, pz, px) as GPAW's real harmonics.
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms

from mlepi.formats.frames import Frame, write_frames
from mlepi.geometry.neighbors import block_edges, neighbor_edges

TOY_BASIS = {"name": "toy-sp", "orbitals": {"6": [["2s", 0], ["2p", 1]]}, "rcut": {"6": 2.2},
             "valence": {"6": 4}}
# Like the ``dft`` config section that ``mlepi dft`` stores as the frames' parameters.
TOY_DFT = {"xc": "PBE", "basis": "toy-sp", "kpts_primitive": [4, 4, 1], "occupation_width": 0.1}


def bilayer(n: int = 2, *, rattle: float = 0.05, seed: int = 0, a: float = 2.46, d: float = 3.35,
            vacuum: float = 12.0) -> Atoms:
    """AB bilayer graphene, n x n primitive cells, atoms rattled by ``rattle`` Å (Gaussian, seeded)."""
    cell = np.array([[a, 0, 0], [a / 2, a * np.sqrt(3) / 2, 0], [0, 0, d + vacuum]])
    frac = np.array([[0, 0, 0], [1 / 3, 1 / 3, 0], [1 / 3, 1 / 3, d / cell[2, 2]], [2 / 3, 2 / 3, d / cell[2, 2]]])
    atoms = Atoms("C4", scaled_positions=frac, cell=cell, pbc=True)
    atoms.set_array("layer", np.array([0, 0, 1, 1]))
    atoms = atoms.repeat((n, n, 1))
    atoms.positions += rattle * np.random.default_rng(seed).standard_normal(atoms.positions.shape)
    return atoms


def _smooth(x):
    return torch.where(x < 1, (1 - x.clamp(max=1) ** 2) ** 3, torch.zeros_like(x))


def pair_energy_forces(atoms: Atoms, cutoff: float = 4.0) -> tuple[float, np.ndarray]:
    """Morse energy (eV) and autograd forces (eV/Å): intra-layer D=1 eV at 1.42 Å, inter-layer D=0.02 eV at 3.4."""
    edge_index, shift = neighbor_edges(atoms.positions, atoms.cell, atoms.pbc, cutoff)
    layer = atoms.arrays["layer"]
    pos = torch.tensor(atoms.positions, requires_grad=True)
    i, j = torch.as_tensor(edge_index)
    vec = pos[j] - pos[i] + torch.as_tensor(shift @ np.array(atoms.cell), dtype=torch.float64)
    r = vec.norm(dim=1)
    intra = torch.as_tensor(layer[edge_index[0]] == layer[edge_index[1]])
    depth, r0, alpha = (torch.where(intra, 1.0, 0.02), torch.where(intra, 1.42, 3.4), torch.where(intra, 2.0, 1.2))
    morse = depth * ((1 - torch.exp(-alpha * (r - r0))) ** 2 - 1) * _smooth(r / cutoff)
    energy = 0.5 * morse.sum()  # each pair appears twice
    (grad,) = torch.autograd.grad(energy, pos)
    return float(energy.detach()), -grad.numpy()


def slater_koster_blocks(atoms: Atoms, basis: dict = TOY_BASIS):
    """Block edges and analytic H (eV), S blocks [n_edges, 4, 4] on them."""
    edge_index, shift = block_edges(atoms.numbers, atoms.positions, atoms.cell, atoms.pbc, basis)
    layer = atoms.arrays["layer"]
    rc = 2 * float(basis["rcut"]["6"])
    vec = atoms.positions[edge_index[1]] + shift @ np.array(atoms.cell) - atoms.positions[edge_index[0]]
    r = np.linalg.norm(vec, axis=1)
    H = np.zeros((len(r), 4, 4))
    S = np.zeros((len(r), 4, 4))
    onsite = r < 1e-8
    # Environment-dependent on-site s level: a sum over neighbours (within 3 Å) of a decaying shift.
    nbr_i, nbr_j = edge_index[:, ~onsite]
    shift_s = np.zeros(len(atoms))
    np.add.at(shift_s, nbr_i, 0.3 * np.exp(-r[~onsite]) * np.clip(1 - (r[~onsite] / rc) ** 2, 0, None) ** 2)
    for e in np.flatnonzero(onsite):
        H[e] = np.diag([-8.0 + shift_s[edge_index[0, e]], 0.0, 0.0, 0.0])
        S[e] = np.eye(4)
    off = ~onsite
    n = np.zeros_like(vec)
    n[off] = vec[off] / r[off, None]
    n = n[:, [1, 2, 0]]  # p order y, z, x
    cut = np.clip(1 - (r / rc) ** 2, 0, None) ** 2
    inter = layer[edge_index[0]] != layer[edge_index[1]]
    strength = np.where(inter, 0.15, 1.0)
    decay = np.exp(-(r - 1.42) / 0.6) * cut * strength
    for name, (v_ss, v_sp, v_pps, v_ppp), out in (("H", (-5.0, 5.5, 6.0, -2.7), H),
                                                  ("S", (0.20, -0.15, -0.12, 0.10), S)):
        for e in np.flatnonzero(off):
            k, nn = decay[e], n[e]
            out[e, 0, 0] = v_ss * k
            out[e, 0, 1:] = v_sp * k * nn
            out[e, 1:, 0] = -v_sp * k * nn
            out[e, 1:, 1:] = k * (v_pps * np.outer(nn, nn) + v_ppp * (np.eye(3) - np.outer(nn, nn)))
    return edge_index, shift, H, S


def synthetic_frames(n_frames: int, *, n: int = 2, rattle: float = 0.05, seed: int = 0,
                     basis: dict = TOY_BASIS) -> list[Frame]:
    """``n_frames`` rattled bilayers with analytic energy, forces, H and S."""
    frames = []
    for k in range(n_frames):
        atoms = bilayer(n, rattle=rattle, seed=seed + k)
        energy, forces = pair_energy_forces(atoms)
        edge_index, shift, H, S = slater_koster_blocks(atoms, basis)
        frames.append(Frame.from_atoms(f"f{k:03d}", atoms, energy=energy, forces=forces, edge_index=edge_index,
                                       cell_shift=shift, H=H, S=S, fermi_level=0.0,
                                       info={"temperature_K": 300.0, "sample_index": k, "supercell": [n, n]}))
    return frames


def write_dataset(path, n_frames: int = 6, **kwargs) -> None:
    """A synthetic dataset frames file (source 'dft', toy DFT parameters)."""
    basis = kwargs.pop("basis", TOY_BASIS)
    write_frames(path, synthetic_frames(n_frames, basis=basis, **kwargs), basis=basis, source="dft",
                 parameters=TOY_DFT, provenance={"config_hash": "synthetic"})
