"""Stage ``dft``: GPAW LCAO (PBE + D3(BJ)) energy, forces, Fermi level and real-space H(R), S(R) blocks.

One configuration (a one-frame extended XYZ) in, one frames file (``docs/data.md``) out.

Settings that must stay consistent between the primitive cell and its supercells (DESIGN section 4):

* k mesh: a Gamma-centred Monkhorst-Pack mesh ``kpts_primitive // supercell`` in plane and one k point
  along z. Gamma-centred so that the primitive mesh folds exactly onto the supercell mesh and, when the
  primitive mesh is a multiple of 3, contains K of graphene.
* real-space grid: ``gpts = grid_points_primitive * supercell`` in plane (the same spacing in every cell;
  with ``h=`` alone GPAW picks different spacings for different cells and the energy per atom moves) and
  ``ceil(c / grid_spacing_z)`` rounded up to a multiple of 4 along z.
* no k-point symmetry reduction (``symmetry: false``): with it, GPAW's energy of the symmetric primitive
  cell differed by 1.6e-4 eV/atom from the same cell without it; without it, the primitive cell and its
  2x1 supercell agree to 1e-12 eV/atom, and pristine and displaced supercells share one numerical path.
  (The relaxation in :mod:`mlepi.geometry.layers` always uses the symmetry: it only needs the geometry.)

Supercell multiples of a user structure are the in-plane cell lengths over the primitive lattice constant
``system.a`` (:func:`infer_supercell`), unless the structure's info has ``supercell`` or the caller
passes them.

The H(R), S(R) blocks of a converged calculation come from :mod:`mlepi.dft.matrices`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from mlepi.config import stage_config
from mlepi.dft import mpi
from mlepi.dft.calculator import converge, free_energy, gpaw_calculator
from mlepi.dft.matrices import extract_blocks
from mlepi.dft.tiling import TilingError, supercell_map, tile_frame
from mlepi.formats import provenance
from mlepi.formats.frames import Frame, write_frames
from mlepi.formats.structures import read_structure

log = logging.getLogger(__name__)

# Keys of the extxyz info that belong to the structure file, not to the configuration.
_STRUCTURE_BOOKKEEPING = ("schema", "schema_version", "provenance")


# --------------------------------------------------------------------------------------------- settings
def infer_supercell(atoms, a: float | None = None, tol: float = 1e-3) -> tuple:
    """In-plane supercell multiples of a structure: lengths of a1, a2 over the primitive constant ``a``.

    Parameters
    ----------
    atoms : ase.Atoms
    a : float, optional
        Primitive lattice constant in Angstrom; None means the structure is itself the primitive cell,
        multiples (1, 1).
    tol : float
        Relative tolerance below which a multiple is rounded to an integer (default 1e-3).

    Returns
    -------
    (n1, n2) : ints when the lengths are integer multiples of ``a``, floats otherwise (e.g. sqrt(7) for
        the 21.79 degree twisted cell).
    """
    if a is None:
        return (1, 1)
    multiples = []
    for length in atoms.cell.lengths()[:2]:
        m = float(length) / a
        multiples.append(round(m) if abs(m - round(m)) < tol * m else m)
    return tuple(multiples)


# ------------------------------------------------------------------------------------------------ run
def _tiling_target(atoms, supercell, structure_path: Path, tile_to, config: dict):
    """The supercell of ``--tile-to`` and its frame info, checked before any SCF is spent on the primitive cell."""
    if tuple(supercell) != (1, 1):
        raise TilingError(f"{structure_path}: --tile-to needs the primitive cell, got a {list(supercell)} supercell")
    target = read_structure(tile_to)
    supercell_map(atoms, target, str(tile_to))
    multiples = target.info.get("supercell") or infer_supercell(target, config["system"]["a"])
    info = {k: _jsonable(v) for k, v in target.info.items() if k not in _STRUCTURE_BOOKKEEPING}
    info.update(structure_file=str(tile_to), supercell=list(_jsonable(np.asarray(multiples))),
                tiled_from=str(structure_path))
    return target, info


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def compute_frame(atoms, dft_cfg: dict, supercell=(1, 1), name: str = "frame", txt=None,
                  info: dict | None = None):
    """SCF, forces, Fermi level and blocks of one structure as a :class:`mlepi.formats.frames.Frame`.

    Parameters
    ----------
    atoms : ase.Atoms
        With ``arrays['layer']``; gets the converged calculator attached.
    dft_cfg : dict
        The ``dft`` config section.
    supercell : (n1, n2)
        In-plane multiples of the primitive cell (k mesh and grid scaling).
    name : str
        Frame name, also used in error messages.
    txt : file object, path or None
        GPAW text log.
    info : dict, optional
        Carried into ``Frame.info``; the block diagnostics and ``scf_iterations`` are added.

    Returns
    -------
    frame : Frame
        ``energy`` is the force-consistent (free) energy incl. D3 in eV, ``forces`` eV/Angstrom,
        ``fermi_level`` eV.
    basis : dict
        The basis description for the frames file.
    calc : the converged ASE calculator (GPAW, or SumCalculator with D3)
    timings : dict
        Wall seconds of ``scf_forces`` and ``blocks``: for logs and benchmarks, never stored in a frame, so
        that the same input gives a bit-identical frames file.
    """
    timings, diagnostics = {}, {}
    t0 = time.perf_counter()
    calc = converge(atoms, dft_cfg, supercell, txt=txt, label=name)
    energy = free_energy(calc, atoms)  # the energy whose gradient the forces are
    forces = atoms.get_forces()
    gpaw = gpaw_calculator(calc)
    fermi_level = float(gpaw.get_fermi_level())
    diagnostics["scf_iterations"] = int(gpaw.get_number_of_iterations())
    timings["scf_forces"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    edge_index, cell_shift, H, S, basis = extract_blocks(gpaw, atoms, dft_cfg["kpts_blocks"], txt=txt,
                                                         diagnostics=diagnostics)
    timings["blocks"] = time.perf_counter() - t0
    info = dict(info or {}, **diagnostics)
    frame = Frame.from_atoms(name, atoms, energy=energy, forces=forces, fermi_level=fermi_level,
                             edge_index=edge_index, cell_shift=cell_shift, H=H, S=S, info=info)
    log.info("dft %s: SCF + forces %.1f s, blocks %.1f s (%d edges, k mesh %s)", name,
             timings["scf_forces"], timings["blocks"], len(cell_shift), diagnostics["block_kmesh"])
    return frame, basis, calc, timings


def run(structure_path, out_path, config: dict | None = None, *, name: str | None = None, log_path=None,
        supercell=None, index: int | None = None, tile_to=None) -> Path:
    """Stage ``dft``: one structure in, a frames file with one frame (energy, forces, E_F, H/S blocks) out.

    Parameters
    ----------
    structure_path : path
        One-frame extended XYZ (``layer`` array optional, see :mod:`mlepi.formats.structures`). Its info
        (``temperature_K``, ``seed``, ``sample_index``, ``kind``, ...) is carried into ``Frame.info``, except
        schema and provenance.
    out_path : path
        Frames file (HDF5), written atomically and only after everything succeeded.
    config : dict, optional
        Config sections (:func:`mlepi.config.stage_config`): the ``dft`` section but the relaxation's keys,
        and ``system.a``, which is only used to infer the supercell.
    name : str, optional
        Frame name (default: the structure file's stem).
    log_path : path, optional
        GPAW text log and timings (default: ``out_path`` with suffix ``.log``).
    supercell : (n1, n2), optional
        In-plane multiples of the primitive cell; default the structure's ``info['supercell']`` or else
        :func:`infer_supercell` with ``system.a``.
    index : int, optional
        Which structure of a file with several (e.g. the inference samples of a temperature, for the DFT
        cross-check of the band analysis); default: the file must hold exactly one.
    tile_to : path, optional
        An undisplaced supercell (extended XYZ) of the structure: the structure is computed as its primitive
        cell, and the frame written is the supercell's, tiled from it (:mod:`mlepi.dft.tiling`), with the
        supercell's info and the primitive calculation's diagnostics.

    Raises
    ------
    SCFConvergenceError
        SCF failed after the retry; nothing is written.
    mlepi.formats.structures.StructureFileError
        The structure file is missing, unreadable or holds more than one structure.
    """
    config = stage_config("dft", config)
    world = mpi.gpaw_world()
    dft_cfg = config["dft"]
    structure_path, out_path = Path(structure_path), Path(out_path)
    log_path = Path(log_path) if log_path is not None else out_path.with_suffix(".log")
    name = name or structure_path.stem
    atoms = read_structure(structure_path, index)  # layers assigned from z when the file has none
    atoms.calc = None  # never reuse energies or forces stored in the input
    if supercell is None:
        supercell = atoms.info.get("supercell")
    if supercell is None:
        supercell = infer_supercell(atoms, config["system"]["a"])
    supercell = tuple(_jsonable(np.asarray(supercell)))
    info = {k: _jsonable(v) for k, v in atoms.info.items() if k not in _STRUCTURE_BOOKKEEPING}
    info.update(structure_file=str(structure_path), supercell=list(supercell))

    if tile_to is not None:
        target, target_info = _tiling_target(atoms, supercell, structure_path, tile_to, config)
    if world.rank == 0:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    # Under MPI every rank computes (GPAW's collective work) and rank 0 alone writes the log and the result.
    with open(log_path if world.rank == 0 else os.devnull, "w") as txt:
        frame, basis, _, timings = compute_frame(atoms, dft_cfg, supercell, name=name, txt=txt, info=info)
        if world.rank != 0:
            return out_path
        if tile_to is not None:
            diagnostics = {k: v for k, v in frame.info.items() if k not in info}  # what compute_frame added
            frame = tile_frame(frame, basis, target, name, dict(target_info, **diagnostics))
        t0 = time.perf_counter()
        write_frames(out_path, [frame], basis=basis, source="dft", parameters=dft_cfg,
                     provenance=provenance.record(config))
        timings["write"] = time.perf_counter() - t0
        txt.write(f"\n# mlepi dft {name}: timings (s) {json.dumps({k: round(v, 2) for k, v in timings.items()})}"
                  f", {len(frame.cell_shift)} edges, block k mesh {frame.info['block_kmesh']}, tail beyond "
                  f"rc_i + rc_j {frame.info['block_tail_max_abs_H']:.1e} eV, {frame.info['scf_iterations']} SCF "
                  "iterations\n")
    return out_path
