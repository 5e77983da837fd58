"""High-symmetry points of the hexagonal Brillouin zone, in reduced coordinates of a given cell.

Found from the cell itself rather than assumed, so the 60-degree and 120-degree conventions for the
in-plane lattice vectors (and supercells of either) both work.
"""

from __future__ import annotations

import itertools

import numpy as np


def reciprocal(cell) -> np.ndarray:
    """Reciprocal lattice vectors as rows, with the 2*pi (1/Angstrom)."""
    return 2 * np.pi * np.linalg.inv(np.asarray(cell, float)).T


def hexagonal_points(cell) -> dict[str, np.ndarray]:
    """Reduced coordinates of G, M and K for a cell whose first two vectors span a hexagonal lattice.

    K is a zone corner (|K| = 4 pi / (3 a)) and M the midpoint of the zone edge next to it
    (|M| = 2 pi / (sqrt(3) a)), so that G-M-K-G is the usual closed path.
    """
    cell = np.asarray(cell, float)
    a = np.linalg.norm(cell[0])
    if not np.isclose(np.linalg.norm(cell[1]), a, rtol=1e-6):
        raise ValueError("in-plane lattice vectors differ in length: not a hexagonal cell")
    b = reciprocal(cell)
    thirds = [-2 / 3, -1 / 3, 1 / 3, 2 / 3]
    corners = [np.array([x, y, 0.0]) for x, y in itertools.product(thirds, thirds)
               if np.isclose(np.linalg.norm(np.array([x, y, 0]) @ b), 4 * np.pi / (3 * a), rtol=1e-6)]
    if not corners:
        raise ValueError("no zone corner K found: the in-plane angle is neither 60 nor 120 degrees")
    K = max(corners, key=lambda k: (k[0], k[1]))  # a fixed choice among the six equivalent corners
    halves = [np.array([x, y, 0.0]) for x, y in itertools.product([-0.5, 0, 0.5], repeat=2)]
    edge = [m for m in halves if np.isclose(np.linalg.norm(m @ b), 2 * np.pi / (np.sqrt(3) * a), rtol=1e-6)]
    M = min(edge, key=lambda m: np.linalg.norm((m - K) @ b))
    return {"G": np.zeros(3), "M": M, "K": K}


def hexagonal_path(cell, labels, n_points: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Reduced k points through the ``labels`` (keys of :func:`hexagonal_points`), evenly spaced in 1/Å.

    About ``n_points`` points in all, shared between the legs by length. Returns the points ``[n, 3]``,
    their distance along the path (1/Å) and the distances of the labelled points.
    """
    points = hexagonal_points(cell)
    b = reciprocal(cell)
    corners = [points[label] for label in labels]
    lengths = [float(np.linalg.norm((k1 - k0) @ b)) for k0, k1 in zip(corners, corners[1:])]
    kpts, dist, ticks = [], [], [0.0]
    for k0, k1, length in zip(corners, corners[1:], lengths):
        n = max(2, round(n_points * length / sum(lengths)))
        t = np.linspace(0.0, 1.0, n, endpoint=False)
        kpts.append(k0 + t[:, None] * (k1 - k0))
        dist.append(ticks[-1] + t * length)
        ticks.append(ticks[-1] + length)
    kpts.append(corners[-1][None])
    dist.append([ticks[-1]])
    return np.concatenate(kpts), np.concatenate(dist), ticks
