"""Force constants that hold the invariances of a free bilayer, so that their flexural branch is right.

The finite-difference force constants of a small supercell break the invariances of a free sheet a little
(finite displacements, the SCF and grid tolerances, the supercell's cut-off). At the q points the supercell
holds that hardly matters; Fourier-interpolated to the long waves a larger supercell holds, it decides the
flexural (ZA) branch, whose ω ∝ q² near Γ follows from those invariances alone. The 3x3 DFT force constants'
interpolated ZA is imaginary from q = 1/8 on (``benchmarks/NOTES.md`` §30).

:func:`enforce` returns the force constants nearest to phonopy's (least squares over the compact array
Φ[p, j, α, β], p in the primitive cell, j in the supercell) that hold, to round-off:

- translations (acoustic sum rule): Σ_j Φ[p, j, α, β] = 0;
- the symmetry of second derivatives: Φ[p, j, α, β] = Φ[p', j', β, α] for the pair (j, p) translated to
  (p', j');
- rotations (Born-Huang): Σ_j Φ[p, j, α, β] d^γ = Σ_j Φ[p, j, α, γ] d^β for every p, α and β < γ, with d the
  vector from p to j;
- no in-plane tension: Σ_{p, j} Φ[p, j, z, z] d^γ d^δ = 0 for γ, δ in-plane. With the rotations this is
  what makes ω_ZA ∝ q² (a sheet under tension would have ω ∝ q, under compression an imaginary ZA).

Each pair's vector d is phonopy's: the shortest from p to an image of j, shared equally among equally short
images (the same vectors phonopy's dynamical matrix uses, so the interpolation sees exactly these force
constants). The constraints are linear and map into themselves under the crystal's symmetry operations, so the
least-squares correction keeps the crystal symmetry (tested). The invariances cannot be had by sharing a pair's
force constant differently among its images while keeping the DFT supercell's values: on the 3x3 DFT force
constants that has no reasonable solution, so the correction changes the data. Measured on the default run
(``benchmarks/supercells.py``, NOTES §31): 0.14 % of the force constants' norm, the frequencies above 1 THz at
the 3x3 q points by up to 3.3 %; ZA real from q = 1/96 on and ∝ q² from 1/48 on (0.038 THz at 1/48,
0.154 at 1/24).

What the conditions leave: the relative sliding of the two layers couples to the bending of the bilayer and
adds a small negative q² term to ω_ZA², which shows only very close to Γ (-0.006 THz at q = 1/192 on the DFT
constants). And the rotations move the interlayer shear at Γ, imaginary in the DFT constants (-0.31 THz,
``docs/thermal.md``), to +0.41 THz: real but soft, so a sampler that freezes only modes below
``thermal.imaginary_tolerance_THz`` would slide the layers: ⟨u_xy²⟩ of the 3x3 samples at 300 K would grow
from 0.0013 to 0.089 Å².

The samplers use these force constants with ``thermal.force_constants: invariant``
(:func:`mlepi.vibrations.thermal.sampler_for`). The shear is then decided thus: **a mode that is soft at Γ in the
finite-difference constants stays frozen** (:func:`gamma_soft_modes`, matched by its displacement pattern, not
by its new frequency). Its +0.41 THz is what the imposed conditions leave, not a frequency the DFT gives, and
sampling it would put a sliding of the layers ~70x the finite-difference samples' into the answer, set by a
number nothing has checked. The long flexural waves are what the invariances are for; the shear is not.
"""

from __future__ import annotations

import copy

import numpy as np

IN_PLANE = (0, 1)
N_TRANSLATIONS = 3


class _Layout:
    """Index of Φ[p, j, α, β] in the flattened compact force constants, and phonopy's pair vectors."""

    def __init__(self, phonon):
        primitive = phonon.primitive
        self.p2s = np.asarray(primitive.p2s_map)
        self.s2p = np.asarray(primitive.s2p_map)
        self.perms = np.asarray(primitive.atomic_permutations)
        self.n_p, self.n = len(self.p2s), len(phonon.supercell)
        svecs, multi = primitive.get_smallest_vectors()
        if multi.ndim != 3:
            raise ValueError("phonopy's dense smallest vectors are needed (phonopy >= 2.11)")
        cart = np.asarray(svecs) @ primitive.cell
        # d[p, j]: the vectors from p to the shortest images of j, weights 1/multiplicity: the mean vector and
        # the mean outer product are what the linear and quadratic moments need
        self.d = np.zeros((self.n_p, self.n, 3))
        self.dd = np.zeros((self.n_p, self.n, 3, 3))
        for j in range(self.n):
            for p in range(self.n_p):
                count, start = multi[j, p]
                vectors = cart[start:start + count]
                self.d[p, j] = vectors.mean(axis=0)
                self.dd[p, j] = np.einsum("ka,kb->ab", vectors, vectors) / count

    @property
    def size(self) -> int:
        return self.n_p * self.n * 9

    def index(self, p, j, alpha, beta):
        return ((p * self.n + j) * 3 + alpha) * 3 + beta

    def transpose_partner(self, p: int, j: int) -> tuple[int, int]:
        """(p', j') with Φ[p, j] = Φ[p', j']ᵀ: the pair (j, p) translated so that its first atom is in the
        primitive cell."""
        p_to = int(np.flatnonzero(self.p2s == self.s2p[j])[0])
        translation = int(np.flatnonzero(self.perms[:, j] == self.p2s[p_to])[0])
        return p_to, int(self.perms[translation, self.p2s[p]])


def constraints(phonon) -> np.ndarray:
    """The rows C of the linear conditions C · Φ.ravel() = 0 on the compact force constants (module docstring)."""
    layout = _Layout(phonon)
    rows = []

    def row(entries):
        r = np.zeros(layout.size)
        for index, value in entries:
            r[index] += value
        rows.append(r)

    n_p, n = layout.n_p, layout.n
    for p in range(n_p):  # translations
        for a in range(3):
            for b in range(3):
                row((layout.index(p, j, a, b), 1.0) for j in range(n))
    for p in range(n_p):  # symmetry of second derivatives
        for j in range(n):
            q, k = layout.transpose_partner(p, j)
            for a in range(3):
                for b in range(3):
                    first, second = layout.index(p, j, a, b), layout.index(q, k, b, a)
                    if first < second:
                        row(((first, 1.0), (second, -1.0)))
    for p in range(n_p):  # rotations
        for a in range(3):
            for b in range(3):
                for c in range(b + 1, 3):
                    row([(layout.index(p, j, a, b), layout.d[p, j, c]) for j in range(n)]
                        + [(layout.index(p, j, a, c), -layout.d[p, j, b]) for j in range(n)])
    for c in IN_PLANE:  # no in-plane tension
        for e in IN_PLANE[IN_PLANE.index(c):]:
            row((layout.index(p, j, 2, 2), layout.dd[p, j, c, e]) for p in range(n_p) for j in range(n))
    return np.array(rows)


def compact(phonon) -> np.ndarray:
    """phonopy's force constants as the compact array [n_primitive, n_supercell, 3, 3] (eV/Å²)."""
    fc = np.asarray(phonon.force_constants, float)
    if fc.shape[0] == len(phonon.supercell):
        fc = fc[phonon.primitive.p2s_map]
    return fc


def enforce(phonon) -> np.ndarray:
    """The compact force constants (eV/Å²) nearest to ``phonon``'s that hold every invariance of the module
    docstring (least squares: the minimal correction, orthogonal to the conditions' null space)."""
    fc = compact(phonon)
    C = constraints(phonon)
    x = fc.ravel()
    correction = np.linalg.lstsq(C, C @ x, rcond=None)[0]
    return (x - correction).reshape(fc.shape)


def violation(phonon, fc=None) -> float:
    """The largest residual |C · Φ| of the conditions (eV/Å² times Å or Å²), for ``fc`` or ``phonon``'s own."""
    fc = compact(phonon) if fc is None else np.asarray(fc, float)
    return float(np.abs(constraints(phonon) @ fc.ravel()).max())


def translation_modes(vectors, masses) -> np.ndarray:
    """Mask ``[n_modes]`` of the three uniform translations among mass-weighted modes ``[3 n, n_modes]`` (columns),
    found by overlap, not by being the lowest: a soft or imaginary mode may lie below them."""
    translations = np.zeros((len(vectors), N_TRANSLATIONS))
    for axis in range(N_TRANSLATIONS):
        translations[axis::3, axis] = np.sqrt(masses)
    translations /= np.linalg.norm(translations, axis=0)
    overlap = np.sum(np.abs(translations.T @ vectors) ** 2, axis=0)
    mask = np.zeros(vectors.shape[1], bool)
    mask[np.argsort(overlap)[-N_TRANSLATIONS:]] = True
    return mask


def invariant_phonon(phonon):
    """A copy of ``phonon`` whose force constants are :func:`enforce`'s."""
    invariant = copy.deepcopy(phonon)  # Phonopy.copy would not carry the force constants' layout over
    invariant.force_constants = enforce(phonon)
    return invariant


def gamma_soft_modes(phonon, tolerance_THz: float) -> tuple[np.ndarray, np.ndarray]:
    """The non-translational modes at Γ of ``phonon``'s force constants below ``tolerance_THz`` (THz) or
    imaginary: an orthonormal real basis of their mass-weighted eigenvectors ``[3 n_primitive, n_soft]`` (the
    convention of :class:`mlepi.vibrations.thermal.HarmonicSampler`'s modes) and their frequencies (THz,
    negative: imaginary)."""
    phonon.run_qpoints([[0.0, 0.0, 0.0]], with_eigenvectors=True)
    freq = np.asarray(phonon.qpoints.frequencies[0])
    vectors = np.asarray(phonon.qpoints.eigenvectors[0])  # [3 n_p, n_branch], columns
    soft = ~translation_modes(vectors, phonon.primitive.masses) & (freq < tolerance_THz)
    # at Γ the dynamical matrix is real: a degenerate pair may come back with complex phases, which the real and
    # imaginary parts of its vectors span
    stacked = np.concatenate([vectors[:, soft].real, vectors[:, soft].imag], axis=1)
    basis = np.linalg.svd(stacked, full_matrices=False)[0][:, :int(soft.sum())] if soft.any() else stacked[:, :0]
    return basis, freq[soft]
