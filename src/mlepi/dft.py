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
  (The relaxation in :mod:`mlepi.structure` always uses the symmetry: it only needs the geometry.)

Supercell multiples of a user structure are the in-plane cell lengths over the primitive lattice constant
``system.a`` (:func:`infer_supercell`), unless the structure's info has ``supercell`` or the caller
passes them.

Blocks H(R), S(R) (DESIGN section 4, verified in ``tests/test_dft.py``): after the SCF a
non-self-consistent GPAW run (``fixed_density``) on a full Gamma-centred N1 x N2 x 1 mesh without symmetry
gives H(k), S(k) in the LCAO basis; GPAW's phase is A(k) = sum_R exp(+2 pi i k.R) A(R), with R the cell
of the second orbital's atom relative to GPAW's wrapped positions, so A(R) = 1/N_k sum_k exp(-2 pi i k.R)
A(k) is known for R modulo (N1, N2, 1). Each edge (i, j, R) within rc_i + rc_j (ASE neighbour list on the
frame's own, unwrapped positions) picks the block of its class R mod N. That is exact only if no two edges
of one atom pair fall into one class, i.e. the mesh is fine enough for the support of H: the mesh is
chosen (or a configured one is checked) so that this holds, else :class:`BlockAliasingError`.

H(R) has a tail beyond rc_i + rc_j: the PAW term sum_a <phi_i|p_a> dH_a <p_a|phi_j> couples orbitals up to
rc_i + rc_j + 2 r_proj apart (r_proj = 1.14 A for C). Its size (2e-7 eV per element for C sz(dzp)) is
logged and stored in ``info['block_tail_max_abs_H']``; the data contract keeps edges within rc_i + rc_j
only, which costs ~1e-6 eV in the band energies (measured: 7e-7 eV, 4-atom cell; with the tail edges kept
the bands agree with GPAW's to 1e-13 eV). S has the same three-centre PAW term, so even its on-site
blocks depend on the neighbours (by ~3e-3 in a rattled cell): S is not a pure two-centre quantity.
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
from ase.units import Bohr, Ha

from . import mpi, neighbors, provenance
from .frames import Frame, write_frames
from .setups import check_setups
from .structure_io import read_structure

log = logging.getLogger(__name__)

# Keys of the extxyz info that belong to the structure file, not to the configuration.
_STRUCTURE_BOOKKEEPING = ("schema", "schema_version", "provenance")
_SYMMETRY = {"off": "off", "time_reversal": {"point_group": False, "time_reversal": True},
             "full": {"point_group": True, "time_reversal": True}}
_IMAG_TOLERANCE = 1e-6  # eV: H(R) of a complete k mesh is real to rounding; more means a broken mesh


class SCFConvergenceError(RuntimeError):
    """The SCF did not converge, even after one retry with the conservative mixer."""


class BlockAliasingError(ValueError):
    """The k mesh of the block extraction cannot separate the lattice vectors in the support of H."""


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


# --------------------------------------------------------------------------------------------- blocks
def orbital_label(bf_type: str) -> str:
    """Short label of a GPAW basis function from its type string: '2p-sz confined orbital' -> '2p'."""
    return bf_type.split("-")[0].split()[0]


def basis_description(setups, atoms) -> dict:
    """The ``basis`` attribute of a frames file (docs/data.md) from GPAW's setups of ``atoms``.

    Radial functions in GPAW's order with their l; repeated labels get primes (dzp: 2s, 2p, 2s', 2p', d).
    ``rcut`` is the largest basis cutoff radius of the element in Angstrom.
    """
    orbitals, rcut, valence, names = {}, {}, {}, set()
    for a, z in enumerate(atoms.get_atomic_numbers()):
        key = str(int(z))
        if key in orbitals:
            continue
        setup = setups[a]
        labels, seen = [], {}
        for bf in setup.basis.bf_j:
            label = orbital_label(bf.type)
            seen[label] = seen.get(label, 0) + 1
            labels.append([label + "'" * (seen[label] - 1), int(bf.l)])
        orbitals[key] = labels
        rcut[key] = max(float(bf.rc) for bf in setup.basis.bf_j) * Bohr
        valence[key] = int(setup.Nv) if float(setup.Nv).is_integer() else float(setup.Nv)
        names.add(str(setup.basis.name))
    name = ",".join(sorted(names))  # one name unless elements were given different basis sets
    return {"name": name, "orbitals": orbitals, "rcut": rcut, "valence": valence}


def neighbor_edges(atoms, rcut: np.ndarray):
    """Edges (i, j, R) with |x_j + R @ cell - x_i| < rc_i + rc_j, on-site (i, i, 0) included.

    Returns ``i [E]``, ``j [E]``, ``R [E, 3]`` sorted by (i, j, R); R refers to the positions of ``atoms``.
    """
    (i, j), R = neighbors.neighbor_edges(atoms.positions, atoms.cell[:], atoms.pbc, rcut, self_edges=True)
    return i, j, R


def aliasing_conflicts(i, j, R, mesh) -> np.ndarray:
    """Indices of edges that share atom pair and class R mod mesh with an earlier edge (empty: no alias)."""
    key = np.column_stack([i, j, np.mod(R, np.asarray(mesh))])
    _, first = np.unique(key, axis=0, return_index=True)
    return np.setdiff1d(np.arange(len(i)), first)


def block_kmesh(atoms, i, j, R, requested=None) -> tuple[int, int, int]:
    """The k mesh (N1, N2, 1) of the block extraction: ``requested`` (checked) or the smallest that works.

    Automatic choice: N_c = ceil(t * a_min / |a_c|) for t = 1, 2, ..., the first without aliasing.

    Raises
    ------
    BlockAliasingError
        If the requested mesh aliases, or if two edges of one pair differ only along z (vacuum too thin:
        one k point along z cannot separate them).
    """
    z_key = np.column_stack([i, j, R[:, 0], R[:, 1]])
    if len(np.unique(z_key, axis=0)) < len(i):
        raise BlockAliasingError(f"orbitals couple through the vacuum along z (c = {atoms.cell.lengths()[2]:.2f} "
                                 "A); add vacuum: c must exceed the slab thickness plus 2 rc")
    if requested is not None:
        mesh = (int(requested[0]), int(requested[1]), 1)
        bad = aliasing_conflicts(i, j, R, mesh)
        if len(bad):
            e = bad[0]
            raise BlockAliasingError(
                f"block k mesh {mesh[:2]} aliases: edges of atom pair ({i[e]}, {j[e]}) with cell shifts "
                f"differing by a multiple of the mesh lie within rc_i + rc_j; use a finer dft.kpts_blocks "
                "or null (automatic)")
        return mesh
    lengths = atoms.cell.lengths()[:2]
    for t in range(1, 200):
        mesh = tuple(math.ceil(t * lengths.min() / length - 1e-9) for length in lengths) + (1,)
        if not len(aliasing_conflicts(i, j, R, mesh)):
            return mesh
    raise BlockAliasingError("no block k mesh up to 200 x a_min separates the lattice vectors of H")


def _gpaw_cell_offsets(atoms, gpaw_relpos) -> np.ndarray:
    """Integer n_a with x_a(frame) = x_a(GPAW, wrapped) + n_a @ cell; checks the geometries agree."""
    spos = np.linalg.solve(np.array(atoms.cell).T, atoms.get_positions().T).T
    n = spos - gpaw_relpos
    n_int = np.round(n)
    if np.abs(n - n_int).max() > 1e-8:
        raise ValueError("the atoms passed to extract_blocks are not the ones GPAW computed")
    return n_int.astype(np.int64)


def kspace_matrices(calc, kpts, txt=None):
    """GPAW's H(k) (eV) and S(k) ``[n_k, M, M]`` and the k points ``[n_k, 3]`` (reduced), symmetry off.

    Non-self-consistent (``fixed_density``: the SCF density and potential are kept). ``kpts`` is anything
    GPAW takes: ``{"size": (N1, N2, 1), "gamma": True}`` for a mesh, or an array of reduced k points.

    Under MPI every rank returns all k points: GPAW distributes the k points over its k-point communicator
    and sums H over the domain communicator onto domain rank 0, so each k point is filled in on exactly
    one rank and a sum over all ranks gathers them.
    """
    fixed = gpaw_calculator(calc).fixed_density(kpts=kpts, symmetry="off", txt=txt)
    dft = fixed.dft
    ibzwfs = dft.ibzwfs
    if ibzwfs.band_comm.size > 1:
        raise RuntimeError("H(R) extraction needs whole LCAO matrices; run GPAW without band parallelization")
    matrix_calculator = dft.scf_loop.hamiltonian.create_hamiltonian_matrix_calculator(dft.potential)
    k_kc = np.array(ibzwfs.ibz.kpt_kc)
    n_orbitals = sum(setup.nao for setup in dft.setups)
    H_kMM = np.zeros((len(k_kc), n_orbitals, n_orbitals), complex)
    S_kMM = np.zeros_like(H_kMM)
    for wfs in ibzwfs:  # the k points of this rank's k-point group
        H_MM = matrix_calculator.calculate_matrix(wfs)  # collective over the domain communicator
        if wfs.domain_comm.rank == 0:
            H_kMM[wfs.k] = H_MM.data * Ha
            S_kMM[wfs.k] = wfs.S_MM.data
    dft.comm.sum(H_kMM)
    dft.comm.sum(S_kMM)
    return H_kMM, S_kMM, k_kc


def _block_layout(atoms, basis: dict, gpaw_relpos, kpts_blocks=None) -> dict:
    """Edges (frame positions), their R relative to GPAW's wrapped positions, and the extraction k mesh."""
    numbers = atoms.get_atomic_numbers()
    rcut = np.array([basis["rcut"][str(int(z))] for z in numbers])
    counts = np.array([sum(2 * l + 1 for _, l in basis["orbitals"][str(int(z))]) for z in numbers])
    i, j, R = neighbor_edges(atoms, rcut)
    offsets_cell = _gpaw_cell_offsets(atoms, gpaw_relpos)
    R_gpaw = R + offsets_cell[j] - offsets_cell[i]  # same physical vector, GPAW's wrapped positions
    mesh = block_kmesh(atoms, i, j, R_gpaw, kpts_blocks)
    return {"i": i, "j": j, "R": R, "R_gpaw": R_gpaw, "mesh": mesh, "counts": counts,
            "offsets": np.concatenate([[0], np.cumsum(counts)])}


def _real_space_blocks(layout: dict, k_kc, *A_kMM) -> tuple[list[np.ndarray], np.ndarray]:
    """Blocks ``[E, n_orb_max, n_orb_max]`` of each A(k) on a full mesh, and the mask of used elements.

    A(R) = 1/N_k sum_k exp(-2 pi i k.R) A(k) for each class R mod mesh; each edge takes its class's block.
    """
    i, j, mesh, counts, offsets = (layout[k] for k in ("i", "j", "mesh", "counts", "offsets"))
    if len(k_kc) != np.prod(mesh):
        raise RuntimeError(f"GPAW returned {len(k_kc)} k points for the full mesh {mesh}")
    if A_kMM[0].shape[1] != offsets[-1]:
        raise RuntimeError(f"GPAW has {A_kMM[0].shape[1]} orbitals, the basis description {offsets[-1]}")
    classes, edge_class = np.unique(np.mod(layout["R_gpaw"], np.asarray(mesh)), axis=0, return_inverse=True)
    edge_class = edge_class.ravel()
    phase_ck = np.exp(-2j * np.pi * classes @ np.asarray(k_kc).T) / len(k_kc)  # [n_classes, n_k]
    n_max = int(counts.max())
    blocks, used = [], None
    for A in A_kMM:
        A_cMM = np.einsum("ck,kmn->cmn", phase_ck, A)
        max_imag = float(np.abs(A_cMM.imag).max())
        if max_imag > _IMAG_TOLERANCE:
            raise RuntimeError(f"A(R) has imaginary parts up to {max_imag:.2e}; the k mesh {mesh} is not a "
                               "complete Gamma-centred mesh")
        A_cMM = A_cMM.real
        out = np.zeros((len(i), n_max, n_max))
        used = np.zeros(A_cMM.shape, dtype=bool)
        for e, (a, b, c) in enumerate(zip(i, j, edge_class)):
            rows, cols = slice(offsets[a], offsets[a + 1]), slice(offsets[b], offsets[b + 1])
            out[e, :counts[a], :counts[b]] = A_cMM[c, rows, cols]
            used[c, rows, cols] = True
        blocks.append((out, A_cMM))
    return blocks, used


def extract_blocks(calc, atoms, kpts_blocks=None, txt=None, diagnostics: dict | None = None):
    """Real-space H(R), S(R) atom-pair blocks of a converged GPAW LCAO calculation (docs/data.md layout).

    Parameters
    ----------
    calc : ase calculator
        Converged (GPAW, or SumCalculator with GPAW).
    atoms : ase.Atoms
        The structure GPAW computed, with the positions the frame will store (may be unwrapped).
    kpts_blocks : (N1, N2) or None
        k mesh of the extraction; None chooses the smallest that does not alias (:func:`block_kmesh`).
    txt : file object, path or None
        GPAW text log of the non-self-consistent run.
    diagnostics : dict, optional
        Filled with ``block_kmesh``, ``block_tail_max_abs_H`` (eV, largest |H| element of the pairs and
        classes outside rc_i + rc_j).

    Returns
    -------
    edge_index : [2, E] int64
    cell_shift : [E, 3] int64, R of atom j: x_j + R @ cell (frame positions)
    H : [E, n_orb_max, n_orb_max] float64, eV, zero-padded
    S : [E, n_orb_max, n_orb_max] float64
    basis : dict, the frames-file basis description
    """
    gpaw = gpaw_calculator(calc)
    basis = basis_description(gpaw.dft.setups, atoms)
    layout = _block_layout(atoms, basis, gpaw.dft.relpos_ac, kpts_blocks)
    H_kMM, S_kMM, k_kc = kspace_matrices(calc, {"size": layout["mesh"], "gamma": True}, txt=txt)
    ((H, H_cMM), (S, _)), used = _real_space_blocks(layout, k_kc, H_kMM, S_kMM)
    tail = float(np.abs(H_cMM[~used]).max()) if (~used).any() else 0.0
    log.info("blocks: %d edges, k mesh %s, tail beyond rc_i + rc_j %.1e eV", len(layout["i"]),
             layout["mesh"], tail)
    if diagnostics is not None:
        diagnostics.update(block_kmesh=list(layout["mesh"]), block_tail_max_abs_H=tail)
    edge_index = np.stack([layout["i"], layout["j"]]).astype(np.int64)
    return edge_index, layout["R"], H, S, basis


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
    layout = _block_layout(atoms, basis, probe.relpos_ac, dft_cfg.get("kpts_blocks"))
    mesh = builder(layout["mesh"])
    wfs_k = list(mesh.create_ibz_wave_functions(mesh.create_basis_set(), potential=None))
    S_kMM = np.array([np.array(wfs.S_MM.data) for wfs in wfs_k])
    k_kc = np.array([np.array(wfs.kpt_c) for wfs in wfs_k])
    ((S, _),), _ = _real_space_blocks(layout, k_kc, S_kMM)
    return np.stack([layout["i"], layout["j"]]).astype(np.int64), layout["R"], S, basis


# ------------------------------------------------------------------------------------------------ run
def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def compute_frame(atoms, dft_cfg: dict, supercell=(1, 1), name: str = "frame", txt=None,
                  info: dict | None = None):
    """SCF, forces, Fermi level and blocks of one structure as a :class:`mlepi.frames.Frame`.

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
        Carried into ``Frame.info``; the block diagnostics are added.

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
    fermi_level = float(gpaw_calculator(calc).get_fermi_level())
    timings["scf_forces"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    edge_index, cell_shift, H, S, basis = extract_blocks(calc, atoms, dft_cfg.get("kpts_blocks"), txt=txt,
                                                         diagnostics=diagnostics)
    timings["blocks"] = time.perf_counter() - t0
    info = dict(info or {}, **diagnostics)
    frame = Frame.from_atoms(name, atoms, energy=energy, forces=forces, fermi_level=fermi_level,
                             edge_index=edge_index, cell_shift=cell_shift, H=H, S=S, info=info)
    log.info("dft %s: SCF + forces %.1f s, blocks %.1f s (%d edges, k mesh %s)", name,
             timings["scf_forces"], timings["blocks"], len(cell_shift), diagnostics["block_kmesh"])
    return frame, basis, calc, timings


def run(structure_path, config: dict, out_path, name: str | None = None, log_path=None,
        supercell=None, index: int | None = None) -> Path:
    """Stage ``dft``: one structure in, a frames file with one frame (energy, forces, E_F, H/S blocks) out.

    Parameters
    ----------
    structure_path : path
        One-frame extended XYZ (``layer`` array optional, see :mod:`mlepi.structure_io`). Its info
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

    Raises
    ------
    SCFConvergenceError
        SCF failed after the retry; nothing is written.
    mlepi.structure_io.StructureFileError
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

    if world.rank == 0:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    # Under MPI every rank computes (GPAW's collective work) and rank 0 alone writes the log and the result.
    with open(log_path if world.rank == 0 else os.devnull, "w") as txt:
        frame, basis, _, timings = compute_frame(atoms, dft_cfg, supercell, name=name, txt=txt, info=info)
        if world.rank != 0:
            return out_path
        t0 = time.perf_counter()
        write_frames(out_path, [frame], basis=basis, source="dft", parameters=dft_cfg,
                     provenance=provenance.record(config))
        timings["write"] = time.perf_counter() - t0
        txt.write(f"\n# mlepi dft {name}: timings (s) {json.dumps({k: round(v, 2) for k, v in timings.items()})}"
                  f", {len(frame.cell_shift)} edges, block k mesh {frame.info['block_kmesh']}, tail beyond "
                  f"rc_i + rc_j {frame.info['block_tail_max_abs_H']:.1e} eV\n")
    return out_path
