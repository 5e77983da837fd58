"""Stage ``structure``: build the bilayer primitive cell (:mod:`mlepi.geometry.layers`), relax it with the DFT
settings.

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
from ase.constraints import FixSymmetry
from ase.optimize import BFGS

from mlepi.config import stage_config
from mlepi.dft import calculator
from mlepi.errors import MlepiError
from mlepi.formats import provenance
from mlepi.formats.structures import write_structure
from mlepi.geometry.layers import assign_layers, build_bilayer, interlayer_distance

# Initial Hessian guess of BFGS (eV/A^2). ASE's 70 suits covalent bonds; the interlayer coordinate is two
# orders of magnitude softer, and 70 made the first steps tiny (7 steps instead of 4 for the AB bilayer).
_BFGS_ALPHA = 5.0

log = logging.getLogger(__name__)


class RelaxationError(MlepiError, RuntimeError):
    """The relaxation did not reach ``relax_fmax`` within ``relax_steps`` steps."""


def relax(atoms, dft_cfg: dict, log_path=None):
    """Relax atomic positions at fixed cell with the DFT settings of the ``dft`` section.

    BFGS on the PBE(+D3) forces (``mlepi.dft.calculator.make_calculator``), with the crystal symmetry of the start
    structure kept (``ase.constraints.FixSymmetry``, symprec 1e-4 Angstrom) so that the result stays
    exactly symmetric for phonopy. An SCF that fails is retried once with the conservative mixer
    (``mlepi.dft.calculator.with_scf_retry``), then :class:`mlepi.dft.calculator.SCFConvergenceError` is raised.

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
    atoms = atoms.copy()
    if "layer" not in atoms.arrays:
        atoms.set_array("layer", assign_layers(atoms))
    layer = atoms.arrays["layer"].copy()
    fmax, steps = float(dft_cfg["relax_fmax"]), int(dft_cfg["relax_steps"])
    atoms.set_constraint(FixSymmetry(atoms, symprec=1e-4))
    supercell = (1, 1)  # the structure stage relaxes primitive cells: the primitive k mesh applies
    # k-point symmetry on, regardless of dft.symmetry: the structure is held symmetric by FixSymmetry, the
    # product is a geometry, and without it the primitive 12x12 SCF is 6.5x slower (calculator.make_calculator).
    dft_cfg = dict(dft_cfg, symmetry="full")

    with contextlib.ExitStack() as stack:
        txt = stack.enter_context(open(log_path, "a")) if log_path is not None else None

        def optimise(**scf_options) -> bool:
            atoms.calc = calculator.make_calculator(atoms, dft_cfg, supercell=supercell, txt=txt, **scf_options)
            return BFGS(atoms, logfile=txt, alpha=_BFGS_ALPHA).run(fmax=fmax, steps=steps)

        t0 = time.perf_counter()
        label = f"relaxation of {atoms.get_chemical_formula()} [{calculator.describe(dft_cfg, supercell)}]"
        converged = calculator.with_scf_retry(optimise, dft_cfg, label)
        forces = atoms.get_forces()  # symmetrised by FixSymmetry, as BFGS saw them
        energy = calculator.free_energy(atoms.calc, atoms)
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


def run(out_path, config: dict | None = None, *, log_path=None) -> Path:
    """Build, relax and write the primitive cell (extended XYZ) of the ``system`` section.

    Parameters
    ----------
    out_path : path
        Output extended XYZ (``mlepi.formats.structures``, written atomically): positions, cell, ``layer`` per
        atom; info ``schema``, ``schema_version``, ``kind='relaxed'``, ``name``, ``stacking``,
        ``interlayer_distance`` (relaxed, Angstrom),
        ``max_force`` (eV/Angstrom), ``dft_free_energy`` (eV, incl. D3), ``provenance`` (JSON).
    config : dict, optional
        Config sections (any part of a config; :func:`mlepi.config.stage_config`): the stage reads system
        ``name``, ``stacking``, ``a``, ``interlayer_distance``, ``vacuum`` and the ``dft`` section.
    log_path : path, optional
        Log of the stage: GPAW text output, BFGS steps and timings. Default: ``out_path`` with ``.log``.
    """
    config = stage_config("structure", config)
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
    write_structure(out_path, relaxed, kind="relaxed", name=system["name"],
                    stacking=system["stacking"], interlayer_distance=interlayer_distance(relaxed), **info,
                    provenance=provenance.record(config))
    return out_path
