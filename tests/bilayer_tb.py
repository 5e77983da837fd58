"""Test helper: a Slater–Koster p_z tight-binding model of (displaced) AB bilayer graphene, as frames.

Distance-dependent hoppings in the form of Moon & Koshino, PRB 85, 195458 (2012),

    t(d) = V_ppπ(d) (1 − n_z²) + V_ppσ(d) n_z²,
    V_ppπ(d) = −2.7 eV exp(−(d − a_cc)/δ0),   V_ppσ(d) = 0.48 eV exp(−(d − d_int)/δ0),   δ0 = 0.184 a,

with a smooth cutoff, and a non-trivial overlap of the same form (s_π = 0.1, s_σ = −0.02). Because the rule
depends only on positions, the same function builds primitive cells, supercells and displaced supercells,
the ingredients of the unfolding and band-analysis tests. ``with_s`` adds a deep s band to exercise
more than one orbital per atom.
"""

from __future__ import annotations

import copy

import numpy as np
from ase import Atoms
from ase.build import make_supercell
from ase.neighborlist import neighbor_list

from mlepi.formats.frames import Frame

A = 2.46  # Å
D_INT = 3.35  # Å
A_CC = A / np.sqrt(3.0)
DELTA0 = 0.184 * A
R_SMOOTH, L_SMOOTH, R_CUT = 4.0, 0.05, 4.6  # Å: smooth cutoff centre and width, neighbour-list cutoff

BASIS_PZ = {"name": "pz-tb", "orbitals": {"6": [["pz", 0]]}, "rcut": {"6": R_CUT / 2}, "valence": {"6": 1}}
BASIS_SPZ = {"name": "s+pz-tb", "orbitals": {"6": [["s", 0], ["pz", 0]]}, "rcut": {"6": R_CUT / 2},
             "valence": {"6": 3}}


def bilayer_primitive(a: float = A, d: float = D_INT, c: float = 20.0) -> Atoms:
    """AB bilayer, 4 atoms (A1, B1, A2, B2; B1 under A2), ASE hexagonal cell, vacuum along z."""
    cell = [[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, c]]
    frac = [[0, 0, 0], [1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, d / c], [2 / 3, 1 / 3, d / c]]
    atoms = Atoms("C4", scaled_positions=frac, cell=cell, pbc=True)
    atoms.positions[:, 2] += 0.5 * (c - d)
    atoms.set_array("layer", np.array([0, 0, 1, 1]))
    return atoms


def supercell(primitive: Atoms, P, seed: int | None = None, wrap_some: bool = False) -> Atoms:
    """Supercell ``P @ primitive.cell``; ``seed`` shuffles the atom order, ``wrap_some`` moves a few atoms
    by supercell vectors (a harder test of the mapping and of the stored cell shifts)."""
    sc = make_supercell(primitive, np.asarray(P))
    if seed is not None:
        sc = sc[np.random.default_rng(seed).permutation(len(sc))]
    if wrap_some:
        pos = sc.get_positions()
        pos[0] += sc.cell[0]
        pos[1] -= sc.cell[1]
        pos[2] += sc.cell[2]  # across the vacuum boundary
        sc.set_positions(pos)
    return sc


def displaced(atoms: Atoms, sigma_xy: float, sigma_z: float, seed: int) -> Atoms:
    """Copy of ``atoms`` with Gaussian random displacements (Å), a stand-in for thermal samples."""
    rng = np.random.default_rng(seed)
    out = atoms.copy()
    u = rng.normal(size=(len(atoms), 3)) * np.array([sigma_xy, sigma_xy, sigma_z])
    out.set_positions(atoms.get_positions() + u)
    return out


def _smooth(d):
    return 1.0 / (1.0 + np.exp((d - R_SMOOTH) / L_SMOOTH))


def _sk(d, nz, v_pi, v_sigma):
    f = _smooth(d)
    return (v_pi * np.exp(-(d - A_CC) / DELTA0) * (1 - nz ** 2)
            + v_sigma * np.exp(-(d - D_INT) / DELTA0) * nz ** 2) * f


def tb_frame(atoms: Atoms, name: str, with_s: bool = False, scale_pi: float = 1.0, **info) -> Frame:
    """Frame with H (eV) and S blocks of the p_z (optionally s + p_z) model; ``scale_pi`` scales V_ppπ."""
    i, j, D, shift = neighbor_list("ijDS", atoms, R_CUT)
    n = len(atoms)
    i = np.concatenate([np.arange(n), i])
    j = np.concatenate([np.arange(n), j])
    D = np.concatenate([np.zeros((n, 3)), D])
    shift = np.concatenate([np.zeros((n, 3), int), shift])
    d = np.linalg.norm(D, axis=1)
    onsite = d < 1e-8
    d_safe = np.where(onsite, 1.0, d)
    nz = np.where(onsite, 0.0, D[:, 2] / d_safe)
    n_orb = 2 if with_s else 1
    H = np.zeros((len(d), n_orb, n_orb))
    S = np.zeros_like(H)
    pz = n_orb - 1
    H[:, pz, pz] = np.where(onsite, 0.0, _sk(d_safe, nz, -2.7 * scale_pi, 0.48))
    S[:, pz, pz] = np.where(onsite, 1.0, _sk(d_safe, nz, 0.1, -0.02))
    if with_s:
        radial = np.where(onsite, 0.0, np.exp(-(d_safe - A_CC) / DELTA0) * _smooth(d_safe))
        H[:, 0, 0] = np.where(onsite, -12.0, -1.5 * radial)
        S[:, 0, 0] = np.where(onsite, 1.0, 0.05 * radial)
        # Slater–Koster s–p_z: <s_i|H|pz_j> = n_z V_spσ with n the unit vector from i to j.
        H[:, 0, 1], H[:, 1, 0] = 1.0 * nz * radial, -1.0 * nz * radial
        S[:, 0, 1], S[:, 1, 0] = -0.05 * nz * radial, 0.05 * nz * radial
    return Frame.from_atoms(name, _with_layer(atoms), edge_index=np.stack([i, j]), cell_shift=shift, H=H, S=S,
                            info=info)


def _with_layer(atoms: Atoms) -> Atoms:
    if "layer" in atoms.arrays:
        return atoms
    atoms = atoms.copy()
    z = atoms.positions[:, 2] % atoms.cell[2, 2]
    atoms.set_array("layer", (z > np.median(z)).astype(int))
    return atoms


def committee_frames(members: list[list[Frame]]) -> list[Frame]:
    """The frames a committee's inference writes from each member's frames of the same samples: the mean H,
    each member's in ``H_committee``."""
    frames = []
    for per_sample in zip(*members):
        frame = copy.copy(per_sample[0])
        frame.H_committee = np.array([f.H for f in per_sample])
        frame.H = frame.H_committee.mean(axis=0)
        frames.append(frame)
    return frames
