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
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mlepi.dft import mpi
from mlepi.formats import provenance
from mlepi.dft.matrices import basis_description, block_layout, extract_blocks, real_space_blocks
from mlepi.formats.frames import Frame, write_frames
from mlepi.dft.setups import check_setups
from mlepi.formats.structures import read_structure

log = logging.getLogger(__name__)

# Keys of the extxyz info that belong to the structure file, not to the configuration.
_STRUCTURE_BOOKKEEPING = ("schema", "schema_version", "provenance")
_SYMMETRY = {"off": "off", "time_reversal": {"point_group": False, "time_reversal": True},
             "full": {"point_group": True, "time_reversal": True}}


class SCFConvergenceError(RuntimeError):
    """The SCF did not converge, even after one retry with the conservative mixer."""


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


def _is_integer(m) -> bool:
    return abs(m - round(m)) < 1e-9


def scaled_kpts(kpts_primitive, supercell) -> tuple[int, int, int]:
    """Supercell k mesh ``kpts_primitive // supercell`` in plane (at least 1), one k point along z.

    A primitive mesh that is not divisible by the multiples is rounded (and logged): the folded meshes
    then no longer coincide, so energies of different cells are slightly less consistent.
    """
    mesh = []
    for k, m in zip(kpts_primitive, supercell):
        n = max(1, round(k / m))
        if not (_is_integer(m) and k % round(m) == 0):
            log.warning("k mesh %s of the primitive cell is not divisible by supercell multiple %s; using %d",
                        k, m, n)
        mesh.append(n)
    return (mesh[0], mesh[1], 1)


def grid_points(atoms, dft_cfg: dict, supercell) -> tuple[int, int, int]:
    """``gpts``: ``grid_points_primitive * n`` in plane, ``ceil(c / grid_spacing_z)`` (multiple of 4) in z.

    Non-integer multiples (twisted cells) are rounded up, so the spacing never exceeds the primitive one.
    """
    n = int(dft_cfg["grid_points_primitive"])
    in_plane = [n * round(m) if _is_integer(m) else math.ceil(n * m) for m in supercell]
    c = float(atoms.cell.lengths()[2])
    n_z = 4 * math.ceil(c / float(dft_cfg["grid_spacing_z"]) / 4)
    return (in_plane[0], in_plane[1], n_z)


def make_calculator(atoms, dft_cfg: dict, supercell=(1, 1), txt=None, mixer=None, maxiter=None):
    """ASE calculator for one configuration: GPAW LCAO, wrapped with D3(BJ) when configured.

    Parameters
    ----------
    atoms : ase.Atoms
        Used for the cell height (z grid); the calculator is not attached.
    dft_cfg : dict
        The ``dft`` config section (validated): ``xc``, ``dispersion``, ``basis``, ``kpts_primitive``,
        ``grid_points_primitive``, ``grid_spacing_z``, ``occupation_width`` (eV), ``scf_energy``,
        ``scf_density``, ``scf_maxiter``, ``mixer``, ``symmetry`` ('time_reversal' (default): k and -k
        only; 'off': no reduction; 'full': point group too).
    supercell : (n1, n2)
        In-plane multiples of the primitive cell (default (1, 1)); scales k mesh and grid.
    txt : str, path, file object or None
        GPAW text log (None: no log).
    mixer, maxiter : optional
        Override ``dft_cfg['mixer']`` / ``dft_cfg['scf_maxiter']`` (used by the SCF retry).

    Returns
    -------
    ase calculator
        GPAW's ``ASECalculator``, or an ``ase.calculators.mixing.SumCalculator`` of DFT-D3 and GPAW when
        ``dispersion`` is ``'d3bj'``; :func:`gpaw_calculator` finds GPAW inside it.
    """
    from gpaw import GPAW

    check_setups(atoms.get_chemical_symbols(), dft_cfg["xc"], dft_cfg["basis"])
    mixer = dft_cfg.get("mixer") if mixer is None else mixer
    params = {
        "mode": "lcao",
        "basis": dft_cfg["basis"],
        "xc": dft_cfg["xc"],
        "occupations": {"name": "fermi-dirac", "width": float(dft_cfg["occupation_width"])},
        "kpts": {"size": scaled_kpts(dft_cfg["kpts_primitive"], supercell), "gamma": True},
        "gpts": grid_points(atoms, dft_cfg, supercell),
        # GPAW's energy criterion is eV per valence electron; density: electrons per valence electron.
        "convergence": {"energy": float(dft_cfg["scf_energy"]), "density": float(dft_cfg["scf_density"])},
        "maxiter": int(dft_cfg["scf_maxiter"] if maxiter is None else maxiter),
        "txt": txt,
    }
    if mixer:
        params["mixer"] = dict(mixer)
    # One numerical path for symmetric (primitive, pristine) and displaced cells: with GPAW's point-group
    # reduction the AB primitive cell's energy moved by 1.6e-4 eV/atom away from the same cell without it
    # (and from its 2x1 supercell, which agree to 1e-12 eV/atom). Time reversal is exact for a non-magnetic
    # system and applies to every cell alike, so it stays on unless asked off: it halves the k points.
    params["symmetry"] = _SYMMETRY[dft_cfg.get("symmetry", "time_reversal")]
    calc = GPAW(**params)
    dispersion = dft_cfg.get("dispersion", "d3bj")
    if dispersion == "d3bj":
        from dftd3.ase import DFTD3

        return DFTD3(method=dft_cfg["xc"], damping="d3bj").add_calculator(calc)
    if dispersion not in (None, "none"):
        raise ValueError(f"unknown dft.dispersion {dispersion!r}; use 'd3bj' or 'none'")
    return calc


def gpaw_calculator(calc):
    """The GPAW calculator itself, also when wrapped in a SumCalculator with D3."""
    mixer = getattr(calc, "mixer", None)  # ase SumCalculator keeps its parts in .mixer.calcs
    for sub in getattr(mixer, "calcs", [calc]):
        if getattr(sub, "name", None) == "gpaw":
            return sub
    raise TypeError(f"no GPAW calculator in {calc!r}")


def free_energy(calc, atoms) -> float:
    """Force-consistent total energy (eV): GPAW's free energy (Mermin, finite width) plus D3.

    ``atoms.get_potential_energy(force_consistent=True)`` does not work on the SumCalculator (D3 does not
    declare ``free_energy``); D3 has no electronic entropy, so its energy is its free energy.
    """
    gpaw = gpaw_calculator(calc)
    mixer = getattr(calc, "mixer", None)
    others = [part for part in getattr(mixer, "calcs", []) if part is not gpaw]
    return float(gpaw.get_potential_energy(atoms, force_consistent=True)
                 + sum(part.get_potential_energy(atoms) for part in others))


def describe(dft_cfg: dict, supercell) -> str:
    """One line naming the DFT configuration, for error messages and logs."""
    return (f"xc={dft_cfg['xc']}+{dft_cfg.get('dispersion')}, basis={dft_cfg['basis']}, "
            f"kpts={scaled_kpts(dft_cfg['kpts_primitive'], supercell)}, supercell={tuple(supercell)}, "
            f"width={dft_cfg['occupation_width']} eV, maxiter={dft_cfg['scf_maxiter']}, "
            f"mixer={dft_cfg.get('mixer') or 'GPAW default'}")


# ------------------------------------------------------------------------------------------------ SCF
def with_scf_retry(action: Callable, dft_cfg: dict, label: str):
    """Run ``action()``; if GPAW's SCF does not converge, run ``action(mixer=..., maxiter=...)`` once more.

    The retry uses ``dft_cfg['retry_mixer']`` and twice ``scf_maxiter`` (a smaller mixing step needs more
    iterations). ``action`` must build a fresh calculator from these keyword arguments. ``label`` names
    the configuration in messages (structure and settings, see :func:`describe`).

    Raises
    ------
    SCFConvergenceError
        When the retry fails too.
    """
    from gpaw import ConvergenceError

    try:
        return action()
    except ConvergenceError:
        log.warning("SCF did not converge for %s; retrying with mixer %s", label, dft_cfg["retry_mixer"])
    retry = {"mixer": dft_cfg["retry_mixer"], "maxiter": 2 * int(dft_cfg["scf_maxiter"])}
    try:
        return action(**retry)
    except ConvergenceError as err:
        raise SCFConvergenceError(
            f"SCF did not converge for {label}, nor on retry with mixer "
            f"{retry['mixer']} and maxiter {retry['maxiter']}. Check the structure (atoms too close?), "
            "or raise dft.scf_maxiter / change dft.retry_mixer; no result was written.") from err


def converge(atoms, dft_cfg: dict, supercell=(1, 1), txt=None, label: str = "structure"):
    """Attach a calculator to ``atoms`` and converge SCF and forces (with one retry). Returns the calc."""

    def attempt(**overrides):
        atoms.calc = make_calculator(atoms, dft_cfg, supercell=supercell, txt=txt, **overrides)
        atoms.get_forces()
        return atoms.calc

    return with_scf_retry(attempt, dft_cfg, f"{label} [{describe(dft_cfg, supercell)}]")


# ------------------------------------------------------------------------------------- exact overlap
def overlap_blocks(atoms, dft_cfg: dict, supercell=(1, 1)):
    """The exact overlap blocks S(R) of a structure in the LCAO basis, without an SCF (seconds).

    S depends only on the positions and the basis (two-centre integrals plus GPAW's PAW projector term),
    so GPAW builds it when it sets up a calculation; no density is needed. Returns ``(edge_index,
    cell_shift, S, basis)`` in the layout of :func:`extract_blocks`.
    """
    from gpaw.dft import Parameters
    from gpaw.mpi import world
    from gpaw.new.logger import Logger

    def builder(kpts):
        # GPAW's component builder, not a calculator: the overlap needs the setups and the two-centre
        # integrals only, so the density guess and its potential (60 % of a calculator's set-up) are skipped.
        params = Parameters(mode="lcao", basis=dft_cfg["basis"], xc=dft_cfg["xc"], symmetry="off",
                            kpts={"size": kpts, "gamma": True}, gpts=grid_points(atoms, dft_cfg, supercell))
        return params.dft_component_builder(atoms, log=Logger(None, world))

    probe = builder((1, 1, 1))  # setups and GPAW's wrapped positions, to choose the mesh
    basis = basis_description(probe.setups, atoms)
    layout = block_layout(atoms, basis, probe.relpos_ac, dft_cfg.get("kpts_blocks"))
    mesh = builder(layout["mesh"])
    wfs_k = list(mesh.create_ibz_wave_functions(mesh.create_basis_set(), potential=None))
    S_kMM = np.array([np.array(wfs.S_MM.data) for wfs in wfs_k])
    k_kc = np.array([np.array(wfs.kpt_c) for wfs in wfs_k])
    ((S, _),), _ = real_space_blocks(layout, k_kc, S_kMM)
    return np.stack([layout["i"], layout["j"]]).astype(np.int64), layout["R"], S, basis


# ------------------------------------------------------------------------------------------------ run
def _tiling_target(atoms, supercell, structure_path: Path, tile_to, config: dict):
    """The supercell of ``--tile-to`` and its frame info, checked before any SCF is spent on the primitive cell."""
    from mlepi.geometry.tiling import TilingError, supercell_map  # not at import: every mlepi command imports this module

    if tuple(supercell) != (1, 1):
        raise TilingError(f"{structure_path}: --tile-to needs the primitive cell, got a {list(supercell)} supercell")
    target = read_structure(tile_to)
    supercell_map(atoms, target, str(tile_to))
    multiples = target.info.get("supercell") or infer_supercell(target, config.get("system", {}).get("a"))
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
    edge_index, cell_shift, H, S, basis = extract_blocks(gpaw, atoms, dft_cfg.get("kpts_blocks"), txt=txt,
                                                         diagnostics=diagnostics)
    timings["blocks"] = time.perf_counter() - t0
    info = dict(info or {}, **diagnostics)
    frame = Frame.from_atoms(name, atoms, energy=energy, forces=forces, fermi_level=fermi_level,
                             edge_index=edge_index, cell_shift=cell_shift, H=H, S=S, info=info)
    log.info("dft %s: SCF + forces %.1f s, blocks %.1f s (%d edges, k mesh %s)", name,
             timings["scf_forces"], timings["blocks"], len(cell_shift), diagnostics["block_kmesh"])
    return frame, basis, calc, timings


def run(structure_path, config: dict, out_path, name: str | None = None, log_path=None,
        supercell=None, index: int | None = None, tile_to=None) -> Path:
    """Stage ``dft``: one structure in, a frames file with one frame (energy, forces, E_F, H/S blocks) out.

    Parameters
    ----------
    structure_path : path
        One-frame extended XYZ (``layer`` array optional, see :mod:`mlepi.formats.structures`). Its info
        (``temperature_K``, ``seed``, ``sample_index``, ``kind``, ...) is carried into ``Frame.info``, except
        schema and provenance.
    config : dict
        ``{"dft": {...}, "system": {...}}`` (validated); ``system.a`` is only used to infer the supercell.
    out_path : path
        Frames file (HDF5), written atomically and only after everything succeeded.
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
        cell, and the frame written is the supercell's, tiled from it (:mod:`mlepi.geometry.tiling`), with the
        supercell's info and the primitive calculation's diagnostics.

    Raises
    ------
    SCFConvergenceError
        SCF failed after the retry; nothing is written.
    mlepi.formats.structures.StructureFileError
        The structure file is missing, unreadable or holds more than one structure.
    """
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
        supercell = infer_supercell(atoms, config.get("system", {}).get("a"))
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
            from mlepi.geometry.tiling import tile_frame

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
