"""Layered structures: the bilayer primitive cell, layer labels from z, the interlayer distance.

Cell convention (the one spglib/phonopy standardise a hexagonal lattice to, and the one ASE's band paths
assume): in-plane lattice vectors at 120 degrees,

    a1 = a (1, 0, 0),   a2 = a (-1/2, sqrt(3)/2, 0),   a3 = (0, 0, c),   c = interlayer distance + vacuum,

so that in reduced reciprocal coordinates M = (1/2, 0, 0) and K = (1/3, 1/3, 0) and the path is
Gamma-M-K-Gamma. Atoms in reduced coordinates (layer 0 bottom, layer 1 top, layers centred in z):

    bottom:  A1 (0, 0),        B1 (1/3, 2/3)
    top AB:  A2 (1/3, 2/3)  on top of B1,   B2 (2/3, 1/3) above the hexagon centre of the bottom layer
    top AA:  A2 (0, 0),        B2 (1/3, 2/3)

AB (Bernal) stacking has space group P-3m1 (164), AA has P6/mmm (191).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

DEFAULT_LAYER_GAP = 1.0  # Angstrom: far below an interlayer distance (~3.4), far above thermal z spread

# Reduced in-plane coordinates of the two layers for each stacking (see the module docstring).
_STACKINGS = {
    "AB": ([(0.0, 0.0), (1 / 3, 2 / 3)], [(1 / 3, 2 / 3), (2 / 3, 1 / 3)]),
    "AA": ([(0.0, 0.0), (1 / 3, 2 / 3)], [(0.0, 0.0), (1 / 3, 2 / 3)]),
}


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
