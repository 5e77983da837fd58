"""Stage ``thermal``: Monte Carlo thermal displacements of a supercell in the harmonic approximation.

With Phi the supercell force constants (eV/A^2), M the masses (amu) and
D = M^-1/2 Phi M^-1/2 = sum_nu omega_nu^2 e_nu e_nu^T, a sample is

    u = M^-1/2 sum_nu e_nu sigma_nu xi_nu,   sigma_nu^2 = hbar / (2 omega_nu) coth(hbar omega_nu / 2 k_B T),

xi_nu ~ N(0, 1), over all modes but the three uniform translations; coth -> 1 at T = 0, so zero-point
motion is included (the quantum harmonic oscillator's position distribution at temperature T is exactly
this Gaussian). Samples come in antithetic pairs (xi, -xi) unless switched off. A mode with omega^2 < 0
(or a non-translation mode softer than the tolerance) is an error naming its frequency: it means the
structure is not a minimum of the DFT energy, and sampling it would be meaningless. With
``soft_modes='freeze'`` such modes are instead left out of the sampling (their displacement is zero),
with a warning and the list in every sample's info (``frozen_modes_THz``): a documented approximation for
settings known to miss a soft mode (e.g. the interlayer shear with the dz(dzp) basis, docs/thermal.md).
Phi is phonopy's from the finite differences, or the nearest one with the invariances of a free bilayer
(``thermal.force_constants``, :func:`sampler_for`).

Internally ASE units: energy eV, length A, mass amu, time A sqrt(amu/eV); omega in rad per that time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from ase import units
from phonopy.harmonic.force_constants import compact_fc_to_full_fc

from mlepi.config import ConfigError, stage_config
from mlepi.errors import MlepiError
from mlepi.formats import provenance
from mlepi.formats.structures import (
    StructureFileError,
    read_structure,
    write_structures,
)
from mlepi.vibrations import sum_rules
from mlepi.vibrations.phonons import PhononError, interpolated_force_constants, read_phonopy

HBAR = units._hbar * units.J * units.s  # eV * (ASE time unit)
# The sampler's streams; supercell: mlepi.ml.supercell_bands; candidates: active learning (one per round).
PURPOSES = {"train": 1, "infer": 2, "special": 3, "supercell": 4, "test": 5, "candidates": 6}
STAGES = {purpose: f"thermal_{purpose}" for purpose in ("train", "infer", "special", "test", "candidates")}
# Purposes of independent samples (no antithetic pairs): a test set or a candidate pool gains nothing from a
# configuration's mirror image, which would only count it twice.
INDEPENDENT = ("test", "candidates")
FORCE_CONSTANTS = ("finite_difference", "invariant")  # thermal.force_constants: see sampler_for
DIRECTORY_PURPOSES = ("train", "test")  # one file per sample (a DFT job each), in the directory OUT
log = logging.getLogger(__name__)


class UnstableModeError(MlepiError, RuntimeError):
    """The force constants have an imaginary (or vanishing non-translational) mode."""


def omega_to_THz(omega) -> np.ndarray:
    """Angular frequency in ASE units -> ordinary frequency in THz (imaginary shown negative)."""
    return np.asarray(omega) * units.s / (2 * np.pi * 1e12)


def mode_variances(omega, temperature: float) -> np.ndarray:
    """sigma^2 = hbar / (2 omega) coth(hbar omega / 2 k_B T) (amu A^2) of normal coordinates of angular frequency
    ``omega`` (ASE units) at ``temperature`` (K); the zero-point value at 0 K."""
    omega = np.asarray(omega, float)
    zero_point = HBAR / (2 * omega)
    if temperature == 0:
        return zero_point
    return zero_point / np.tanh(HBAR * omega / (2 * units.kB * temperature))


class HarmonicSampler:
    """Normal modes of a supercell and the thermal distribution of its displacements.

    Parameters
    ----------
    force_constants : array [n_atoms, n_atoms, 3, 3]
        Supercell force constants (eV/A^2), translation-invariant (phonopy symmetrizes them).
    masses : array [n_atoms]
        Atomic masses (amu).
    tolerance_THz : float
        Non-translation modes must have a real frequency above this (THz); default 0.3.
    soft_modes : {'error', 'freeze'}
        What to do with modes below the tolerance: raise :class:`UnstableModeError` (default) or leave
        them out of the sampling (listed in ``frozen_THz``).
    frozen_patterns : array [3 n_atoms, p], optional
        Mass-weighted displacement patterns whose p modes (those that overlap them most) count as soft whatever
        their frequency: modes the caller knows to be soft in other force constants (:func:`sampler_for`).
    """

    def __init__(self, force_constants, masses, tolerance_THz: float = 0.3, soft_modes: str = "error",
                 frozen_patterns=None):
        fc = np.asarray(force_constants, float)
        n = len(masses)
        if fc.shape != (n, n, 3, 3):
            raise ValueError(f"force constants have shape {fc.shape}, expected {(n, n, 3, 3)}")
        self.masses = np.asarray(masses, float)
        inv_sqrt_m = np.repeat(self.masses ** -0.5, 3)  # [3n]
        D = fc.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n) * np.outer(inv_sqrt_m, inv_sqrt_m)
        omega2, vectors = np.linalg.eigh(0.5 * (D + D.T))
        keep = ~sum_rules.translation_modes(vectors, self.masses)
        freq_THz = omega_to_THz(np.sign(omega2) * np.sqrt(np.abs(omega2)))
        soft = keep & ((freq_THz < tolerance_THz) | pinned_modes(vectors, keep, frozen_patterns))
        self.frozen_THz = [float(f) for f in freq_THz[soft]]
        if soft.any() and soft_modes == "freeze":
            log.warning("left out of the thermal sampling (soft_modes: freeze): %d mode(s) at %s THz",
                        soft.sum(), ", ".join(f"{f:.3f}" for f in self.frozen_THz))
            keep &= ~soft
        elif soft.any():
            listed = ", ".join(f"{f:.3f}" for f in freq_THz[soft][:6])
            kind = "imaginary" if (freq_THz[soft] < 0).any() else "vanishing"
            raise UnstableModeError(
                f"{soft.sum()} {kind} non-translational mode(s) at {listed} THz (negative = imaginary; "
                f"tolerance {tolerance_THz} THz). Relax the structure with the DFT settings used for the "
                "forces (with a dispersion correction for layered materials) before thermal sampling, or "
                "set thermal.soft_modes: freeze to leave these modes out (an approximation).")
        self.omega = np.sqrt(omega2[keep])  # [n_modes] rad / ASE time
        self.vectors = vectors[:, keep]  # [3n, n_modes] mass-weighted eigenvectors
        self.frequencies_THz = freq_THz[keep]
        self._inv_sqrt_m = inv_sqrt_m

    @property
    def n_atoms(self) -> int:
        return len(self.masses)

    def mode_variances(self, temperature: float) -> np.ndarray:
        """sigma_nu^2 (amu A^2) of each mode's normal coordinate at ``temperature`` (K)."""
        return mode_variances(self.omega, temperature)

    def covariance(self, temperature: float) -> np.ndarray:
        """Analytic <u u^T> (A^2), ``[3 n_atoms, 3 n_atoms]`` in (atom, xyz) order."""
        mw = self._inv_sqrt_m[:, None] * self.vectors  # [3n, n_modes]
        return (mw * self.mode_variances(temperature)) @ mw.T

    def sample(self, temperature: float, n_samples: int, rng: np.random.Generator,
               antithetic: bool = True) -> np.ndarray:
        """Displacements (A) ``[n_samples, n_atoms, 3]``; with ``antithetic`` sample 2k+1 = -sample 2k."""
        if antithetic and n_samples % 2:
            raise ValueError(f"antithetic sampling needs an even number of samples, got {n_samples}")
        n_draw = n_samples // 2 if antithetic else n_samples
        xi = rng.standard_normal((n_draw, len(self.omega)))  # [n_draw, n_modes]
        if antithetic:
            xi = np.stack([xi, -xi], axis=1).reshape(n_samples, -1)
        amplitudes = xi * np.sqrt(self.mode_variances(temperature))
        u = (amplitudes @ self.vectors.T) * self._inv_sqrt_m  # [n_samples, 3n]
        return u.reshape(n_samples, self.n_atoms, 3)

    def special_displacement(self, temperature: float) -> np.ndarray:
        """Zacharias-Giustino special displacement (A) ``[n_atoms, 3]``: one configuration for the thermal average.

        u = M^-1/2 sum_nu s_nu sigma_nu e_nu with every mode at its thermal amplitude sigma_nu and signs
        s_nu = +1, -1, +1, ... in order of increasing frequency (Zacharias & Giustino, PRB 94, 075125 (2016)),
        so that the cross terms between modes of similar frequency cancel. The alternation needs modes that do
        not depend on the eigensolver: within a set of degenerate modes (the supercell's symmetry makes many)
        any rotation is an eigenbasis, and LAPACK's choice changes with the BLAS build and thread count. The
        modes are made canonical by :func:`canonical_modes`.
        """
        vectors = canonical_modes(self.omega, self.vectors)
        signs = np.where(np.arange(len(self.omega)) % 2 == 0, 1.0, -1.0)  # omega ascending (eigh order)
        u = vectors @ (signs * np.sqrt(self.mode_variances(temperature))) * self._inv_sqrt_m
        return u.reshape(self.n_atoms, 3)


def pinned_modes(vectors, candidates, patterns, min_share: float = 0.5) -> np.ndarray:
    """Mask ``[n_modes]``: the p modes among ``candidates`` that overlap most the span of ``patterns`` [3n, p]
    (none without patterns). Each must lie mostly in it (share > ``min_share``): a pattern that is no mode of
    these force constants is an error, not a guess."""
    pinned = np.zeros(vectors.shape[1], bool)
    if patterns is None or not np.shape(patterns)[1]:
        return pinned
    span = np.linalg.qr(np.asarray(patterns, float))[0]
    share = np.where(candidates, np.sum(np.abs(span.T @ vectors) ** 2, axis=0), 0.0)
    chosen = np.argsort(share)[-span.shape[1]:]
    if share[chosen].min() <= min_share:
        raise ValueError(f"frozen patterns: a pattern matches no mode (largest overlaps {np.sort(share)[-3:]})")
    pinned[chosen] = True
    return pinned


def canonical_modes(omega, vectors, rtol: float = 1e-6) -> np.ndarray:
    """Eigenvectors ``[3n, n_modes]`` fixed independently of the eigensolver: degenerate sets rotated, signs set.

    Within each set of modes whose frequencies agree to ``rtol`` (relative), the basis is rotated to the
    eigenvectors of a fixed, generic diagonal operator (seeded random weights on the Cartesian components;
    regular weights such as 1, 2, ..., 3n leave symmetric subspaces degenerate) restricted to the set; then
    every vector's overlap with a fixed generic vector is made positive (not the sign of its largest
    component: symmetry makes several components equally large). Two eigensolvers that return different
    bases of the same degenerate subspaces give the same result.
    """
    vectors = np.array(vectors, dtype=float)
    fixed = np.random.default_rng(0)  # a fixed operator and a fixed vector: the gauge is reproducible
    probe, generic = fixed.random(len(vectors)), fixed.standard_normal(len(vectors))
    start = 0
    while start < len(omega):
        stop = start + 1
        while stop < len(omega) and omega[stop] - omega[start] <= rtol * max(abs(omega[start]), 1e-30):
            stop += 1
        if stop - start > 1:
            block = vectors[:, start:stop]
            _, rotation = np.linalg.eigh(block.T @ (probe[:, None] * block))
            vectors[:, start:stop] = block @ rotation
        start = stop
    return vectors * np.sign(generic @ vectors)


def tile_gamma_modes(modes, target) -> np.ndarray:
    """Γ modes of the primitive cell ``[3 n_primitive, p]`` (mass-weighted) as modes of ``target``'s supercell
    ``[3 n_atoms, p]``: every cell moves alike (normalized)."""
    primitive = target.primitive
    index = np.array([primitive.p2p_map[s] for s in primitive.s2p_map])  # primitive atom of each supercell atom
    tiled = np.asarray(modes).reshape(-1, 3, np.shape(modes)[1])[index].reshape(-1, np.shape(modes)[1])
    return tiled / np.linalg.norm(tiled, axis=0)


def sampler_for(phonon, thermal_cfg: dict, n: int | None = None):
    """(the supercell as a Phonopy object, its :class:`HarmonicSampler`): ``phonon``'s own supercell (``n`` None)
    or the n x n one, from the force constants ``thermal.force_constants`` names:

    - ``finite_difference``: phonopy's from the DFT finite differences (Fourier-interpolated for n x n);
    - ``invariant``: the nearest ones that hold the invariances of a free bilayer
      (:func:`mlepi.vibrations.sum_rules.enforce`), so that the long flexural waves of a large supercell are real;
      the modes soft at Γ in the finite-difference constants stay frozen (the shear: ``sum_rules``' docstring).
    """
    phonon, soft = sampling_phonon(phonon, thermal_cfg)
    if n is None:
        target, fc = phonon, np.asarray(phonon.force_constants)
        if fc.shape[0] != fc.shape[1]:  # compact form [n_prim, n_super, 3, 3]
            fc = compact_fc_to_full_fc(phonon.primitive, fc)
    else:
        target, fc = interpolated_force_constants(phonon, n)
    patterns = None if soft is None else tile_gamma_modes(soft, target)
    return target, HarmonicSampler(fc, target.supercell.masses, thermal_cfg["imaginary_tolerance_THz"],
                                   thermal_cfg["soft_modes"], patterns)


def sampling_phonon(phonon, thermal_cfg: dict):
    """(``phonon`` with the force constants ``thermal.force_constants`` names, the mass-weighted Γ modes of the
    primitive cell ``[3 n_primitive, p]`` that must stay frozen or None): see :func:`sampler_for`."""
    tolerance, source = thermal_cfg["imaginary_tolerance_THz"], thermal_cfg["force_constants"]
    if source not in FORCE_CONSTANTS:
        raise ConfigError(f"thermal.force_constants: {source!r} is not one of {list(FORCE_CONSTANTS)}")
    if source == "finite_difference":
        return phonon, None
    soft, freq = sum_rules.gamma_soft_modes(phonon, tolerance)
    if len(freq) and thermal_cfg["soft_modes"] == "error":
        raise UnstableModeError(
            f"the finite-difference force constants have {len(freq)} soft mode(s) at Gamma "
            f"({', '.join(f'{f:.3f}' for f in freq)} THz; tolerance {tolerance} THz): invariant force "
            "constants keep them out of the sampling only with thermal.soft_modes: freeze")
    return sum_rules.invariant_phonon(phonon), soft if len(freq) else None


def sampler_from_phonopy(params_path, thermal_cfg: dict) -> HarmonicSampler:
    """Sampler of the DFT supercell from phonopy's ``phonopy_params.yaml`` (with force constants):
    :func:`sampler_for` with the ``thermal`` config section."""
    phonon = read_phonopy(params_path)
    if phonon.force_constants is None:
        raise PhononError(f"{params_path}: holds no force constants; give the phonons stage's "
                          "phonopy_params.yaml, not the displacements' phonopy_disp.yaml")
    return sampler_for(phonon, thermal_cfg)[1]


def sample_rng(seed: int, purpose: str, temperature: float, *extra: int) -> np.random.Generator:
    """Independent, reproducible stream for each (seed, purpose, temperature, ``extra``: e.g. a supercell size)."""
    return np.random.default_rng(np.random.SeedSequence([seed, PURPOSES[purpose], round(temperature * 1000),
                                                         *extra]))


def purpose_seed(thermal_cfg: dict, purpose: str) -> int:
    """The sampler seed of a purpose: ``thermal.test_seed`` for the test set, else ``thermal.seed``."""
    return thermal_cfg["test_seed"] if purpose == "test" else thermal_cfg["seed"]


def sample_structures(reference, displacements, sampler: HarmonicSampler, temperature: float, thermal_cfg: dict,
                      purpose: str, kind: str = "thermal", round_index: int | None = None
                      ) -> tuple[list, list[dict]]:
    """Displaced copies of ``reference`` and what each records (``docs/files.md``, structure files)."""
    seed = purpose_seed(thermal_cfg, purpose)
    antithetic = kind == "thermal" and purpose not in INDEPENDENT and thermal_cfg["antithetic"]
    frames, infos = [], []
    for index, displacement in enumerate(displacements):
        atoms = reference.copy()
        atoms.positions = reference.positions + displacement
        frames.append(atoms)
        infos.append({"kind": kind, "temperature_K": float(temperature), "seed": seed,
                      "purpose": purpose, "sample_index": index, "antithetic": antithetic,
                      "frozen_modes_THz": sampler.frozen_THz,
                      **({} if round_index is None else {"active_round": round_index})})
    return frames, infos


def run(params_path, pristine_path, temperature: float, purpose: str, out, config: dict | None = None, *,
        round_index: int | None = None) -> list[Path]:
    """Draw the thermal samples of one temperature.

    ``purpose='train'``: ``thermal.train_samples`` structures, one file each (``out`` is a directory,
    files ``s000.extxyz``, ...), for DFT. ``purpose='test'``: ``thermal.test_samples`` independent structures
    drawn with ``thermal.test_seed``, likewise one file each: the test set. ``purpose='infer'``:
    ``thermal.infer_samples`` structures in one extended-XYZ file ``out`` for ML inference.
    ``purpose='candidates'``: ``active.candidates`` independent structures of active-learning round
    ``round_index`` (its own stream) in one file ``out``. ``purpose='special'``: the one Zacharias-Giustino
    special displacement (:meth:`HarmonicSampler.special_displacement`, no random numbers) in ``out``. Returns
    the written paths. ``config``: config sections (:func:`mlepi.config.stage_config`); what each purpose reads
    is the schema's stage ``thermal_<purpose>`` (:data:`STAGES`).
    """
    if purpose not in STAGES:
        raise ConfigError(f"thermal: purpose {purpose!r} is not one of {sorted(STAGES)}")
    if (purpose == "candidates") != (round_index is not None):
        raise ConfigError("thermal: the candidates purpose, and only it, takes an active-learning round "
                          f"(--round); got purpose {purpose!r} with round {round_index}")
    config = stage_config(STAGES[purpose], config)
    cfg = config["thermal"]
    sampler = sampler_from_phonopy(params_path, cfg)
    reference = read_structure(pristine_path)
    if len(reference) != sampler.n_atoms:
        raise StructureFileError(f"{pristine_path} has {len(reference)} atoms, the force constants "
                         f"{sampler.n_atoms}: they come from different supercells")
    if purpose == "special":
        u, kind = sampler.special_displacement(temperature)[None], "special_displacement"
    else:
        # (each purpose's stage holds only its own count: the candidates' is in the active section)
        n_samples = config["active"]["candidates"] if purpose == "candidates" else cfg[f"{purpose}_samples"]
        extra = () if round_index is None else (round_index,)
        antithetic = purpose not in INDEPENDENT and cfg["antithetic"]
        u = sampler.sample(temperature, n_samples, sample_rng(purpose_seed(cfg, purpose), purpose, temperature,
                                                              *extra), antithetic)
        kind = "thermal"
    frames, infos = sample_structures(reference, u, sampler, temperature, cfg, purpose, kind, round_index)
    prov = provenance.record(config, seed=purpose_seed(cfg, purpose))
    infos = [{**info, "provenance": prov} for info in infos]
    if purpose not in DIRECTORY_PURPOSES:
        write_structures(out, frames, infos)
        return [Path(out)]
    paths = [Path(out) / f"s{i:03d}.extxyz" for i in range(n_samples)]
    for path, atoms, info in zip(paths, frames, infos):
        write_structures(path, [atoms], [info])
    return paths
