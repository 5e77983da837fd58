"""Stage ``displace``: phonopy finite-difference displacements of the supercell.

Writes into ``out_dir``:

- ``phonopy_disp.yaml`` — phonopy's own displacement dataset (open it with phonopy);
- ``pristine.extxyz`` — the undisplaced supercell, whose DFT forces are the residual forces subtracted from
  every displaced supercell's forces in :mod:`mlepi.vibrations.phonons` (the structure is also relaxed beforehand);
- ``fd_000.extxyz``, ``fd_001.extxyz``, ... — one displaced supercell each, in phonopy's order.

Each structure carries the per-atom ``layer`` array (inherited from the unit cell through phonopy's
supercell-to-unit-cell map) and info keys ``kind``, ``displacement_index``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from phonopy import Phonopy
from phonopy.structure.atoms import PhonopyAtoms

from mlepi.config import stage_config
from mlepi.formats import provenance
from mlepi.formats.structures import read_structure, write_structure


def to_phonopy(atoms: Atoms) -> PhonopyAtoms:
    return PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=np.array(atoms.cell),
                        scaled_positions=atoms.get_scaled_positions(), masses=atoms.get_masses())


def to_ase(cell: PhonopyAtoms, layer: np.ndarray) -> Atoms:
    atoms = Atoms(numbers=cell.numbers, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)
    atoms.set_array("layer", np.asarray(layer, dtype=int))
    return atoms


def make_phonopy(unitcell: Atoms, supercell: list[int], phonons_cfg: dict) -> Phonopy:
    """A Phonopy object for the in-plane supercell, with its symmetry-reduced displacements generated."""
    n1, n2 = supercell
    phonon = Phonopy(to_phonopy(unitcell), supercell_matrix=np.diag([n1, n2, 1]), primitive_matrix="P")
    plusminus = phonons_cfg["plusminus"]
    phonon.generate_displacements(distance=phonons_cfg["displacement"], is_plusminus=plusminus)
    return phonon


def supercell_layers(phonon: Phonopy, unitcell: Atoms) -> np.ndarray:
    """Layer index of each supercell atom, carried over from its unit-cell atom."""
    sc = phonon.supercell
    # s2u_map gives the supercell index of each atom's unit-cell representative; u2u_map turns that
    # into the unit-cell index.
    return unitcell.arrays["layer"][[sc.u2u_map[s] for s in sc.s2u_map]]


def run(structure_path, out_dir, config: dict | None = None) -> list[Path]:
    """Generate displacements of the relaxed primitive cell ``structure_path``; return the written structure
    paths (pristine first). ``config``: config sections (:func:`mlepi.config.stage_config`); the stage reads
    ``system.supercell``, ``phonons.displacement`` and ``phonons.plusminus``."""
    config = stage_config("displace", config)
    out_dir = Path(out_dir)
    unitcell = read_structure(structure_path)
    phonon = make_phonopy(unitcell, config["system"]["supercell"], config["phonons"])
    layer = supercell_layers(phonon, unitcell)
    prov = provenance.record(config)
    with provenance.atomic_path(out_dir / "phonopy_disp.yaml") as tmp:
        phonon.save(tmp)
    written = [out_dir / "pristine.extxyz"]
    write_structure(written[0], to_ase(phonon.supercell, layer), kind="pristine", provenance=prov)
    for index, cell in enumerate(phonon.supercells_with_displacements):
        path = out_dir / f"fd_{index:03d}.extxyz"
        write_structure(path, to_ase(cell, layer), kind="finite_difference", displacement_index=index,
                        provenance=prov)
        written.append(path)
    return written
