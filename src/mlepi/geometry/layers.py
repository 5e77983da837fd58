"""Stage ``structure``: build the bilayer primitive cell, label its layers, relax it with the DFT settings.

Cell convention (the one spglib/phonopy standardise a hexagonal lattice to, and the one ASE's band paths
assume): in-plane lattice vectors at 120 degrees,

    a1 = a (1, 0, 0),   a2 = a (-1/2, sqrt(3)/2, 0),   a3 = (0, 0, c),   c = interlayer distance + vacuum,

so that in reduced reciprocal coordinates M = (1/2, 0, 0) and K = (1/3, 1/3, 0) and the path is
Gamma-M-K-Gamma. Atoms in reduced coordinates (layer 0 bottom, layer 1 top, layers centred in z):

    bottom:  A1 (0, 0),        B1 (1/3, 2/3)
    top AB:  A2 (1/3, 2/3)  on top of B1,   B2 (2/3, 1/3) above the hexagon centre of the bottom layer
    top AA:  A2 (0, 0),        B2 (1/3, 2/3)

AB (Bernal) stacking has space group P-3m1 (164), AA has P6/mmm (191).

The relaxation keeps the cell fixed (the in-plane lattice constant is a parameter of the system, the
vacuum is not physical) and moves the atoms under the crystal symmetry of the start structure, so for
AB and AA bilayers only the interlayer distance relaxes. The relaxed structure is what the phonon stage
displaces: its residual forces are below ``dft.relax_fmax`` (the phonon stage also subtracts the residual
forces of the pristine supercell, see :mod:`mlepi.vibrations.displace`).

Basis: the interlayer distance needs at least a double-zeta basis. With ``sz(dzp)`` (and ``szp(dzp)``)
plain PBE binds the bilayer by ~0.2 eV per cell through basis-set superposition error and PBE + D3
relaxes it to 2.66 A; ``dz(dzp)`` gives 3.31 A and ``dzp`` 3.32 A (6x6 k, 12 grid points per a).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import numpy as np

from mlepi.formats import provenance

# Initial Hessian guess of BFGS (eV/A^2). ASE's 70 suits covalent bonds; the interlayer coordinate is two
# orders of magnitude softer, and 70 made the first steps tiny (7 steps instead of 4 for the AB bilayer).
_BFGS_ALPHA = 5.0
DEFAULT_LAYER_GAP = 1.0  # Angstrom: far below an interlayer distance (~3.4), far above thermal z spread

log = logging.getLogger(__name__)

# Reduced in-plane coordinates of the two layers for each stacking (see the module docstring).
_STACKINGS = {
    "AB": ([(0.0, 0.0), (1 / 3, 2 / 3)], [(1 / 3, 2 / 3), (2 / 3, 1 / 3)]),
    "AA": ([(0.0, 0.0), (1 / 3, 2 / 3)], [(0.0, 0.0), (1 / 3, 2 / 3)]),
}


class RelaxationError(RuntimeError):
    """The relaxation did not reach ``relax_fmax`` within ``relax_steps`` steps."""


def build_bilayer(stacking: str = "AB", a: float = 2.46, interlayer_distance: float = 3.35,
                  vacuum: float = 15.0):
    """4-atom primitive cell of bilayer graphene.

    Parameters
    ----------
    stacking : {'AB', 'AA'}
        'AB' is Bernal stacking (default), 'AA' puts the top layer directly over the bottom one.
    a : float
        In-plane lattice constant in Angstrom (default 2.46; C-C bond a/sqrt(3)).
    interlayer_distance : float
        Distance between the two carbon planes in Angstrom (default 3.35).
    vacuum : float
        Vacuum between periodic images along z in Angstrom (default 15.0); c = interlayer_distance + vacuum.

    Returns
    -------
    ase.Atoms
        Periodic in all three directions, 120-degree hexagonal cell (module docstring), atoms ordered
        bottom layer then top layer, ``arrays['layer']`` = [0, 0, 1, 1].
    """
    from ase import Atoms

    key = stacking.upper()
    if key not in _STACKINGS:
        raise ValueError(f"unknown stacking {stacking!r}; choose one of {sorted(_STACKINGS)}")
    if a <= 0 or interlayer_distance <= 0 or vacuum <= 0:
        raise ValueError(f"a, interlayer_distance and vacuum must be positive (got {a}, "
                         f"{interlayer_distance}, {vacuum})")
    c = interlayer_distance + vacuum
    cell = [[a, 0.0, 0.0], [-a / 2, a * np.sqrt(3) / 2, 0.0], [0.0, 0.0, c]]
    bottom, top = _STACKINGS[key]
    z0, z1 = 0.5 - interlayer_distance / (2 * c), 0.5 + interlayer_distance / (2 * c)
    scaled = [(x, y, z0) for x, y in bottom] + [(x, y, z1) for x, y in top]
    atoms = Atoms("C4", scaled_positions=scaled, cell=cell, pbc=True)
    atoms.set_array("layer", np.array([0, 0, 1, 1], dtype=int))
    return atoms


def assign_layers(positions_or_atoms, gap: float = DEFAULT_LAYER_GAP) -> np.ndarray:
    """Layer index of each atom from the clustering of its z coordinate.

    Sorted z values are split wherever two consecutive ones differ by more than ``gap``; clusters are
    numbered from the bottom (0) up. For an ``ase.Atoms`` periodic along z the vacuum is taken to be the
    largest gap of the cyclic sequence of z (mod c), so a slab that straddles the cell boundary is still
    numbered from its bottom.

    Parameters
    ----------
    positions_or_atoms : ase.Atoms or array_like [n_atoms, 3]
        Structure (Angstrom).
    gap : float
        Smallest z gap in Angstrom that separates two layers (default 1.0).

    Returns
    -------
    np.ndarray [n_atoms] of int
    """
    if hasattr(positions_or_atoms, "get_positions"):
        atoms = positions_or_atoms
        z = atoms.get_positions()[:, 2].copy()
        c = float(atoms.cell[2, 2]) if atoms.pbc[2] else None
    else:
        z = np.asarray(positions_or_atoms, dtype=float)[:, 2].copy()
        c = None
    if len(z) == 0:
        return np.zeros(0, dtype=int)
    if c is not None and c > 0:
        z = _unwrap_slab(z, c)
    order = np.argsort(z, kind="stable")
    breaks = np.diff(z[order]) > gap
    layer = np.empty(len(z), dtype=int)
    layer[order] = np.concatenate([[0], np.cumsum(breaks)])
    return layer


def _unwrap_slab(z: np.ndarray, c: float) -> np.ndarray:
    """z mod c shifted so that the largest cyclic gap (the vacuum) lies at the cell boundary."""
    z = np.mod(z, c)
    zs = np.sort(z)
    gaps = np.append(np.diff(zs), zs[0] + c - zs[-1])
    k = int(np.argmax(gaps))
    start = zs[(k + 1) % len(zs)]  # lowest atom above the vacuum
    return np.mod(z - start, c) + start


def interlayer_distance(atoms) -> float:
    """Mean z of layer 1 minus mean z of layer 0 (Angstrom), from ``arrays['layer']``."""
    z = atoms.get_positions()[:, 2]
    layer = atoms.arrays["layer"]
    if not {0, 1} <= set(layer.tolist()):
        raise ValueError("interlayer_distance needs atoms in layers 0 and 1")
    return float(z[layer == 1].mean() - z[layer == 0].mean())


def relax(atoms, dft_cfg: dict, log_path=None):
    """Relax atomic positions at fixed cell with the DFT settings of the ``dft`` section.

    BFGS on the PBE(+D3) forces (``mlepi.dft.scf.make_calculator``), with the crystal symmetry of the start
    structure kept (``ase.constraints.FixSymmetry``, symprec 1e-4 Angstrom) so that the result stays
    exactly symmetric for phonopy. An SCF that fails is retried once with the conservative mixer
    (``mlepi.dft.scf.with_scf_retry``), then :class:`mlepi.dft.scf.SCFConvergenceError` is raised.

    Parameters
    ----------
    atoms : ase.Atoms
        Start structure; with ``arrays['layer']`` (assigned from z if missing). Not modified.
    dft_cfg : dict
        The ``dft`` config section; uses ``relax_fmax`` (eV/Angstrom), ``relax_steps`` and the DFT
        settings, with the primitive k mesh and grid (``atoms`` is taken to be a primitive cell) and
        GPAW's k-point symmetry reduction always on.
    log_path : path, optional
        Text log (appended): GPAW's output and the BFGS table. None: no log.

    Returns
    -------
    ase.Atoms
        Relaxed copy with the layer array and no calculator; ``info['max_force']`` (eV/Angstrom) and
        ``info['dft_free_energy']`` (eV, incl. D3) of the final structure.

    Raises
    ------
    RelaxationError
        If ``relax_fmax`` is not reached within ``relax_steps`` steps.
    """
    from ase.constraints import FixSymmetry
    from ase.optimize import BFGS

    from mlepi.dft import scf as dft

    atoms = atoms.copy()
    if "layer" not in atoms.arrays:
        atoms.set_array("layer", assign_layers(atoms))
    layer = atoms.arrays["layer"].copy()
    fmax, steps = float(dft_cfg["relax_fmax"]), int(dft_cfg["relax_steps"])
    atoms.set_constraint(FixSymmetry(atoms, symprec=1e-4))
    supercell = (1, 1)  # the structure stage relaxes primitive cells: the primitive k mesh applies
    # k-point symmetry on, regardless of dft.symmetry: the structure is held symmetric by FixSymmetry, the
    # product is a geometry, and without it the primitive 12x12 SCF is 6.5x slower (dft.make_calculator).
    dft_cfg = dict(dft_cfg, symmetry="full")

    with contextlib.ExitStack() as stack:
        txt = stack.enter_context(open(log_path, "a")) if log_path is not None else None

        def optimise(**scf_options) -> bool:
            atoms.calc = dft.make_calculator(atoms, dft_cfg, supercell=supercell, txt=txt, **scf_options)
            return BFGS(atoms, logfile=txt, alpha=_BFGS_ALPHA).run(fmax=fmax, steps=steps)

        t0 = time.perf_counter()
        label = f"relaxation of {atoms.get_chemical_formula()} [{dft.describe(dft_cfg, supercell)}]"
        converged = dft.with_scf_retry(optimise, dft_cfg, label)
        forces = atoms.get_forces()  # symmetrised by FixSymmetry, as BFGS saw them
        energy = dft.free_energy(atoms.calc, atoms)
        if txt is not None:
            txt.write(f"\n# mlepi relax: {time.perf_counter() - t0:.1f} s\n")
    max_force = float(np.linalg.norm(forces, axis=1).max())
    if not converged:
        raise RelaxationError(f"relaxation stopped after {steps} steps with max force {max_force:.4f} eV/A "
                              f"> relax_fmax {fmax}; raise dft.relax_steps or check the structure")
    atoms.set_constraint()
    atoms.calc = None
    atoms.set_array("layer", layer)
    atoms.info["max_force"] = max_force
    atoms.info["dft_free_energy"] = float(energy)
    return atoms


def run(config: dict, out_path, log_path=None) -> Path:
    """Build, relax and write the primitive cell (extended XYZ) of the ``system`` section.

    Parameters
    ----------
    config : dict
        ``{"system": {...}, "dft": {...}}``, validated, defaults filled (keys in ``mlepi.dft.scf`` and the
        config schema). Uses system ``stacking``, ``a``, ``interlayer_distance``, ``vacuum`` and the DFT
        settings.
    out_path : path
        Output extended XYZ (``mlepi.formats.structures``, written atomically): positions, cell, ``layer`` per
        atom; info ``schema``, ``schema_version``, ``kind='relaxed'``, ``name``, ``stacking``,
        ``interlayer_distance`` (relaxed, Angstrom),
        ``max_force`` (eV/Angstrom), ``dft_free_energy`` (eV, incl. D3), ``provenance`` (JSON).
    log_path : path, optional
        Log of the stage: GPAW text output, BFGS steps and timings. Default: ``out_path`` with ``.log``.
    """
    from mlepi.formats.structures import write_structure

    system, dft_cfg = config["system"], config["dft"]
    out_path = Path(out_path)
    log_path = Path(log_path) if log_path is not None else out_path.with_suffix(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")  # fresh log for this run; relax() appends
    atoms = build_bilayer(system["stacking"], system["a"], system["interlayer_distance"], system["vacuum"])
    t0 = time.perf_counter()
    relaxed = relax(atoms, dft_cfg, log_path=log_path)
    log.info("structure: relaxation %.1f s, interlayer distance %.4f A, max force %.2e eV/A",
             time.perf_counter() - t0, interlayer_distance(relaxed), relaxed.info["max_force"])
    info = {key: relaxed.info[key] for key in ("max_force", "dft_free_energy")}
    relaxed.info = {}
    write_structure(out_path, relaxed, kind="relaxed", name=system.get("name", "bilayer"),
                    stacking=system["stacking"], interlayer_distance=interlayer_distance(relaxed), **info,
                    provenance=provenance.record({"system": system, "dft": dft_cfg}))
    return out_path
