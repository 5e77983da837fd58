"""The H(R), S(R) atom-pair blocks of a converged GPAW LCAO calculation (docs/data.md layout).

Method (DESIGN section 4, verified in ``tests/test_dft.py``): H(k), S(k) in the LCAO basis on a full
Gamma-centred N1 x N2 x 1 mesh: the SCF's own k points when they form such a mesh that does not alias (below;
the k points time reversal took out are the conjugates of their partners), else a non-self-consistent GPAW
run (``fixed_density``) without symmetry on the smallest mesh that does not alias. GPAW's phase is
A(k) = sum_R exp(+2 pi i k.R) A(R), with R the cell of the second orbital's atom relative to GPAW's wrapped
positions, so A(R) = 1/N_k sum_k exp(-2 pi i k.R) A(k) is known for R modulo (N1, N2, 1). Each edge
(i, j, R) within rc_i + rc_j (:func:`mlepi.geometry.neighbors.block_edges` on the frame's own, unwrapped positions)
picks the block of its class R mod N. That is exact only if no two edges of one atom pair fall into one
class, i.e. the mesh is fine enough for the support of H: the mesh is chosen (or a configured one is
checked) so that this holds, else :class:`BlockAliasingError`.

H(R) has a tail beyond rc_i + rc_j: the PAW term sum_a <phi_i|p_a> dH_a <p_a|phi_j> couples orbitals up to
rc_i + rc_j + 2 r_proj apart (r_proj = 1.14 A for C). Its size (2e-7 eV per element for C sz(dzp)) is
logged and stored in ``info['block_tail_max_abs_H']``; the data contract keeps edges within rc_i + rc_j
only, which costs ~1e-6 eV in the band energies (measured: 7e-7 eV, 4-atom cell; with the tail edges kept
the bands agree with GPAW's to 1e-13 eV). S has the same three-centre PAW term, so even its on-site
blocks depend on the neighbours (by ~3e-3 in a rattled cell): S is not a pure two-centre quantity.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from ase.units import Bohr, Ha
from gpaw.dft import Parameters
from gpaw.mpi import world
from gpaw.new.logger import Logger

from mlepi.dft.calculator import grid_points
from mlepi.errors import MlepiError
from mlepi.formats.frames import orbital_counts
from mlepi.geometry import neighbors

log = logging.getLogger(__name__)

_IMAG_TOLERANCE = 1e-6  # eV: H(R) of a complete k mesh is real to rounding; more means a broken mesh


class BlockAliasingError(MlepiError, ValueError):
    """The k mesh of the block extraction cannot separate the lattice vectors in the support of H."""


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


def gpaw_cell_offsets(atoms, gpaw_relpos) -> np.ndarray:
    """Integer n_a with x_a(frame) = x_a(GPAW, wrapped) + n_a @ cell; checks the geometries agree."""
    spos = np.linalg.solve(np.array(atoms.cell).T, atoms.get_positions().T).T
    n = spos - gpaw_relpos
    n_int = np.round(n)
    if np.abs(n - n_int).max() > 1e-8:
        raise ValueError("the atoms passed to extract_blocks are not the ones GPAW computed")
    return n_int.astype(np.int64)


def kspace_matrices(gpaw, kpts, txt=None):
    """GPAW's H(k) (eV) and S(k) ``[n_k, M, M]`` and the k points ``[n_k, 3]`` (reduced), symmetry off.

    Non-self-consistent (``fixed_density``: the SCF density and potential are kept). ``kpts`` is anything
    GPAW takes: ``{"size": (N1, N2, 1), "gamma": True}`` for a mesh, or an array of reduced k points.
    """
    return _ibz_matrices(gpaw.fixed_density(kpts=kpts, symmetry="off", txt=txt).dft)


def scf_mesh(gpaw) -> tuple[int, int, int] | None:
    """The SCF's k mesh (N1, N2, 1) when it is a Γ-centred mesh reduced by time reversal at most, else None.

    Then :func:`scf_kspace_matrices` has H(k) on the whole mesh from the SCF's own k points, without the
    non-self-consistent run (whose set-up, Poisson solver and potential matrices, took 1.9 of 2.4 s in a
    36-atom job).
    """
    ibz = gpaw.dft.ibzwfs.ibz
    size = getattr(ibz.bz, "size_c", None)
    if size is None or len(ibz.symmetries) != 1 or size[2] != 1 or not (ibz.bz.kpt_Kc == 0).all(axis=1).any():
        return None
    return (int(size[0]), int(size[1]), 1)


def scf_kspace_matrices(gpaw):
    """H(k) (eV), S(k) ``[n_K, M, M]`` on the SCF's whole k mesh, and its k points ``[n_K, 3]``.

    Only for the meshes of :func:`scf_mesh`. The k points time reversal took out are the conjugates of their
    partners: A(−k) = A(k)* because A(R) is real.
    """
    H_kMM, S_kMM, _ = _ibz_matrices(gpaw.dft)
    ibz = gpaw.dft.ibzwfs.ibz
    H_KMM, S_KMM = H_kMM[ibz.bz2ibz_K], S_kMM[ibz.bz2ibz_K]
    flip = np.asarray(ibz.time_reversal_K, bool)
    H_KMM[flip], S_KMM[flip] = H_KMM[flip].conj(), S_KMM[flip].conj()
    return H_KMM, S_KMM, np.array(ibz.bz.kpt_Kc)


def _ibz_matrices(dft):
    """H(k) (eV), S(k) and the k points of a GPAW calculation's irreducible k points.

    Under MPI every rank returns all k points: GPAW distributes the k points over its k-point communicator
    and sums H over the domain communicator onto domain rank 0, so each k point is filled in on exactly
    one rank and a sum over all ranks gathers them.
    """
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


def block_layout(atoms, basis: dict, gpaw_relpos, kpts_blocks=None, preferred=None) -> dict:
    """Edges (frame positions), their R relative to GPAW's wrapped positions, and the extraction k mesh:
    ``kpts_blocks`` (checked), else ``preferred`` if it does not alias, else the smallest that does not."""
    numbers = atoms.get_atomic_numbers()
    counts = orbital_counts(numbers, basis)
    (i, j), R = neighbors.block_edges(numbers, atoms.positions, atoms.cell[:], atoms.pbc, basis)
    offsets_cell = gpaw_cell_offsets(atoms, gpaw_relpos)
    R_gpaw = R + offsets_cell[j] - offsets_cell[i]  # same physical vector, GPAW's wrapped positions
    if kpts_blocks is None and preferred is not None and not len(aliasing_conflicts(i, j, R_gpaw, preferred)):
        mesh = tuple(preferred)
    else:
        mesh = block_kmesh(atoms, i, j, R_gpaw, kpts_blocks)
    return {"i": i, "j": j, "R": R, "R_gpaw": R_gpaw, "mesh": mesh, "counts": counts,
            "offsets": np.concatenate([[0], np.cumsum(counts)])}


def real_space_blocks(layout: dict, k_kc, *A_kMM) -> tuple[list[np.ndarray], np.ndarray]:
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
    # Where each edge's block sits in A(R) of its class: the same for every matrix A.
    windows = [(c, slice(offsets[a], offsets[a + 1]), slice(offsets[b], offsets[b + 1]))
               for a, b, c in zip(i, j, edge_class)]
    used = np.zeros((len(classes), offsets[-1], offsets[-1]), dtype=bool)
    for c, rows, cols in windows:
        used[c, rows, cols] = True
    blocks = []
    for A in A_kMM:
        A_cMM = np.einsum("ck,kmn->cmn", phase_ck, A)
        max_imag = float(np.abs(A_cMM.imag).max())
        if max_imag > _IMAG_TOLERANCE:
            raise RuntimeError(f"A(R) has imaginary parts up to {max_imag:.2e}; the k mesh {mesh} is not a "
                               "complete Gamma-centred mesh")
        A_cMM = A_cMM.real
        out = np.zeros((len(i), n_max, n_max))
        for e, (c, rows, cols) in enumerate(windows):
            out[e, :rows.stop - rows.start, :cols.stop - cols.start] = A_cMM[c, rows, cols]
        blocks.append((out, A_cMM))
    return blocks, used


def extract_blocks(gpaw, atoms, kpts_blocks=None, txt=None, diagnostics: dict | None = None):
    """Real-space H(R), S(R) atom-pair blocks of a converged GPAW LCAO calculation (docs/data.md layout).

    Parameters
    ----------
    gpaw : GPAW calculator
        Converged (``mlepi.dft.scf.gpaw_calculator`` finds it inside a SumCalculator with D3).
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
    basis = basis_description(gpaw.dft.setups, atoms)
    own = scf_mesh(gpaw)
    layout = block_layout(atoms, basis, gpaw.dft.relpos_ac, kpts_blocks, preferred=own)
    if own is not None and tuple(layout["mesh"]) == own:
        H_kMM, S_kMM, k_kc = scf_kspace_matrices(gpaw)
    else:
        H_kMM, S_kMM, k_kc = kspace_matrices(gpaw, {"size": layout["mesh"], "gamma": True}, txt=txt)
    ((H, H_cMM), (S, _)), used = real_space_blocks(layout, k_kc, H_kMM, S_kMM)
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
    def builder(kpts):
        # GPAW's component builder, not a calculator: the overlap needs the setups and the two-centre
        # integrals only, so the density guess and its potential (60 % of a calculator's set-up) are skipped.
        params = Parameters(mode="lcao", basis=dft_cfg["basis"], xc=dft_cfg["xc"], symmetry="off",
                            kpts={"size": kpts, "gamma": True}, gpts=grid_points(atoms, dft_cfg, supercell))
        return params.dft_component_builder(atoms, log=Logger(None, world))

    probe = builder((1, 1, 1))  # setups and GPAW's wrapped positions, to choose the mesh
    basis = basis_description(probe.setups, atoms)
    layout = block_layout(atoms, basis, probe.relpos_ac, dft_cfg["kpts_blocks"])
    mesh = builder(layout["mesh"])
    wfs_k = list(mesh.create_ibz_wave_functions(mesh.create_basis_set(), potential=None))
    S_kMM = np.array([np.array(wfs.S_MM.data) for wfs in wfs_k])
    k_kc = np.array([np.array(wfs.kpt_c) for wfs in wfs_k])
    ((S, _),), _ = real_space_blocks(layout, k_kc, S_kMM)
    return np.stack([layout["i"], layout["j"]]).astype(np.int64), layout["R"], S, basis
