"""Command ``export-deeph``: frames (DFT or HedgeNet) in the DeepH layout, one folder per frame, so that
DeepH-pack or DeepH-E3 train on mlepi's data; :func:`read` and :func:`bloch_sum` read such a folder back.

Files of one folder (lengths Å, energies eV; DeepH-pack's preprocessed format):

=====================  ===============================================================================
``lat.dat``            lattice vectors as columns (3 x 3)
``rlat.dat``           reciprocal lattice vectors as columns, 2 pi included
``site_positions.dat`` Cartesian positions as columns (3 x n_sites), as stored in the frame
``element.dat``        atomic number of each site, one per line
``orbital_types.dat``  one line per site: the l of each of its radial functions, in order
``info.json``          ``nsites``, ``isorthogonal`` (false), ``isspinful`` (false), ``norbits``, ``fermi_level``
``hamiltonians.h5``    one dataset per block, key ``"[R1, R2, R3, i, j]"`` (sites from 1): the
                       [n_orb_i, n_orb_j] block <phi_i(0)|H|phi_j(R)>, eV
``overlaps.h5``        the same for S
=====================  ===============================================================================

Orbital order. Within one radial function DeepH takes OpenMX's real harmonics, p as (x, y, z) and d as
(3z^2 - r^2, x^2 - y^2, xy, xz, yz); GPAW's order is p (y, z, x), d (xy, yz, 3z^2 - r^2, zx, x^2 - y^2), with the
same signs. The export permutes each block accordingly; :func:`read` returns the blocks in DeepH's order.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from mlepi.formats.frames import Frame, FramesFile
from mlepi.formats.provenance import atomic_path

# Position in GPAW's order of each DeepH (OpenMX) orbital, per l.
GPAW_INDEX_OF_DEEPH = {0: [0], 1: [2, 0, 1], 2: [2, 4, 0, 3, 1]}


def _permutation(radial_ls) -> np.ndarray:
    """Index into an atom's GPAW-ordered orbitals of each of its orbitals in DeepH order."""
    perm, offset = [], 0
    for l in radial_ls:
        if l not in GPAW_INDEX_OF_DEEPH:
            raise ValueError(f"orbitals with l = {l} have no DeepH order defined here (s, p, d only)")
        perm.extend(offset + k for k in GPAW_INDEX_OF_DEEPH[l])
        offset += 2 * l + 1
    return np.array(perm, dtype=int)


def to_gpaw_order(block: np.ndarray, ls_i, ls_j) -> np.ndarray:
    """A block in DeepH's orbital order (as :func:`read` gives it) back in GPAW's; ``ls_*``: the l of each radial
    function of the two atoms."""
    out = np.empty_like(block)
    out[np.ix_(_permutation(ls_i), _permutation(ls_j))] = block
    return out


def _radial_ls(basis: dict, z: int) -> list[int]:
    return [int(l) for _, l in basis["orbitals"][str(int(z))]]


def write_frame(frame: Frame, basis: dict, folder) -> Path:
    """One frame with H and S blocks as a DeepH folder (written under a temporary name, then renamed)."""
    folder = Path(folder)
    if frame.H is None or frame.S is None:
        raise ValueError(f"frame {frame.name!r} has no H and S blocks to export")
    perms = {int(z): _permutation(_radial_ls(basis, z)) for z in set(frame.numbers)}
    counts = [len(perms[int(z)]) for z in frame.numbers]
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        cell = np.asarray(frame.cell, dtype=float)
        np.savetxt(tmp / "lat.dat", cell.T)
        np.savetxt(tmp / "rlat.dat", 2 * np.pi * np.linalg.inv(cell))  # columns b_k with a_i . b_k = 2 pi d_ik
        np.savetxt(tmp / "site_positions.dat", np.asarray(frame.positions, dtype=float).T)
        np.savetxt(tmp / "element.dat", np.asarray(frame.numbers), fmt="%d")
        (tmp / "orbital_types.dat").write_text(
            "".join("  ".join(map(str, _radial_ls(basis, z))) + "\n" for z in frame.numbers))
        info = {"nsites": int(frame.n_atoms), "isorthogonal": False, "isspinful": False,
                "norbits": int(sum(counts)),
                "fermi_level": None if frame.fermi_level is None else float(frame.fermi_level)}
        (tmp / "info.json").write_text(json.dumps(info, indent=1) + "\n")
        for name, blocks in (("hamiltonians.h5", frame.H), ("overlaps.h5", frame.S)):
            with h5py.File(tmp / name, "w") as h5:
                for (i, j), shift, block in zip(np.asarray(frame.edge_index).T, frame.cell_shift, blocks):
                    pi, pj = perms[int(frame.numbers[i])], perms[int(frame.numbers[j])]
                    key = f"[{shift[0]}, {shift[1]}, {shift[2]}, {i + 1}, {j + 1}]"
                    h5.create_dataset(key, data=np.asarray(block)[np.ix_(pi, pj)])
    return folder


def export(frames_path, out_dir) -> list[Path]:
    """Every frame of a frames file as ``out_dir/<frame name>/``; returns the folders."""
    frames = FramesFile(frames_path)
    out_dir = Path(out_dir)
    return [write_frame(frame, frames.basis, out_dir / frame.name) for frame in frames]


def read(folder) -> tuple[dict, list]:
    """A DeepH folder as (structure, blocks): structure has ``cell`` [3, 3] (rows), ``positions`` [n, 3],
    ``numbers``, ``orbital_types`` and ``fermi_level``; blocks are (i, j, R, H, S) with 0-based sites and
    H, S in DeepH's orbital order."""
    folder = Path(folder)
    structure = {
        "cell": np.loadtxt(folder / "lat.dat").T,
        "positions": np.atleast_2d(np.loadtxt(folder / "site_positions.dat").T),
        "numbers": np.atleast_1d(np.loadtxt(folder / "element.dat", dtype=int)),
        "orbital_types": [[int(x) for x in line.split()]
                          for line in (folder / "orbital_types.dat").read_text().splitlines()],
        "fermi_level": json.loads((folder / "info.json").read_text())["fermi_level"],
    }
    blocks = []
    with h5py.File(folder / "hamiltonians.h5", "r") as fh, h5py.File(folder / "overlaps.h5", "r") as fs:
        for key in fh:
            r1, r2, r3, i, j = json.loads(key)
            blocks.append((i - 1, j - 1, np.array([r1, r2, r3]), fh[key][()], fs[key][()]))
    return structure, blocks


def bloch_sum(structure: dict, blocks: list, k) -> tuple[np.ndarray, np.ndarray]:
    """H(k), S(k) of a DeepH folder's blocks at reduced ``k``: sum over R of exp(+2 pi i k . R) H_ij(R)."""
    sizes = [sum(2 * l + 1 for l in ls) for ls in structure["orbital_types"]]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    H_k = np.zeros((offsets[-1], offsets[-1]), complex)
    S_k = np.zeros_like(H_k)
    for i, j, R, H, S in blocks:
        phase = np.exp(2j * np.pi * np.dot(k, R))
        H_k[offsets[i]:offsets[i + 1], offsets[j]:offsets[j + 1]] += phase * H
        S_k[offsets[i]:offsets[i + 1], offsets[j]:offsets[j + 1]] += phase * S
    return H_k, S_k
