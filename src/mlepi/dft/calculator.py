"""The GPAW calculator of a configuration: GPAW LCAO with mlepi's DFT settings (``dft`` config section),
wrapped with D3(BJ), and its SCF with one retry.

Used by the ``structure`` stage (relaxation), the ``dft`` stage (:mod:`mlepi.dft.scf`) and GPAW's exact
overlap (:func:`mlepi.dft.matrices.overlap_blocks`). The settings that must agree between a primitive cell and
its supercells (k mesh, grid) are those of :mod:`mlepi.dft.scf`'s docstring.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from dftd3.ase import DFTD3
from gpaw import GPAW, ConvergenceError

from mlepi.dft.setups import check_setups
from mlepi.errors import MlepiError

log = logging.getLogger(__name__)

_SYMMETRY = {"off": "off", "time_reversal": {"point_group": False, "time_reversal": True},
             "full": {"point_group": True, "time_reversal": True}}



class SCFConvergenceError(MlepiError, RuntimeError):
    """The SCF did not converge, even after one retry with the conservative mixer."""



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
    check_setups(atoms.get_chemical_symbols(), dft_cfg["xc"], dft_cfg["basis"])
    mixer = dft_cfg["mixer"] if mixer is None else mixer
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
    params["symmetry"] = _SYMMETRY[dft_cfg["symmetry"]]
    calc = GPAW(**params)
    dispersion = dft_cfg["dispersion"]
    if dispersion == "d3bj":
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
    return (f"xc={dft_cfg['xc']}+{dft_cfg['dispersion']}, basis={dft_cfg['basis']}, "
            f"kpts={scaled_kpts(dft_cfg['kpts_primitive'], supercell)}, supercell={tuple(supercell)}, "
            f"width={dft_cfg['occupation_width']} eV, maxiter={dft_cfg['scf_maxiter']}, "
            f"mixer={dft_cfg['mixer'] or 'GPAW default'}")


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
