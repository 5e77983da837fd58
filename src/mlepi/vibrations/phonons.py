"""Stage ``phonons``: DFT force sets -> phonopy force constants -> phonon bands.

The forces of each displaced supercell minus the residual forces of the undisplaced (pristine) supercell
go to phonopy (the structure is relaxed beforehand too, so the residual is small; subtracting it removes
what is left of it to first order).

Egg-box correction: on a real-space grid the displaced atom also moves relative to the grid, which adds a
spurious "spring to the grid" to its own force, so the forces of a displaced supercell do not sum to zero.
Measured on the default 3x3 dz(dzp) supercell: a drift of 3.2 eV/A^2 per displaced atom, 80 times the
interlayer shear force constant. phonopy's symmetrization would spread it over all atom pairs and turn the
shear mode imaginary (-265 cm^-1); since it acts on the displaced atom, its force takes the whole net force
back (the acoustic sum rule imposed on the self term), which gave the breathing, ZO and G modes at 86, 888
and 1593 cm^-1. The drift is reported in ``summary.json``. Force constants are then symmetrized by phonopy.

Outputs, in phonopy's own formats so phonopy users can open them: ``FORCE_SETS``, ``phonopy_params.yaml`` (with
force constants), ``band.yaml``, plus ``phonon_bands.png`` and ``summary.json`` (Gamma frequencies, lowest frequency).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import phonopy
from phonopy.file_IO import write_FORCE_SETS
from phonopy.harmonic.dynmat_to_fc import DynmatToForceConstants

from mlepi import figures
from mlepi.config import stage_config
from mlepi.errors import MlepiError
from mlepi.formats import provenance
from mlepi.formats.frames import FramesFile
from mlepi.geometry.bz import hexagonal_points
from mlepi.units import THZ_TO_CM


class PhononError(MlepiError, RuntimeError):
    """A phonopy file cannot be read, or force sets do not match the displacement dataset."""


def read_phonopy(path, **kwargs) -> phonopy.Phonopy:
    """``phonopy.load`` with one error naming the file for anything missing, damaged or foreign."""
    path = Path(path)
    if not path.is_file():
        raise PhononError(f"{path}: no such phonopy file")
    try:
        return phonopy.load(path, log_level=0, **kwargs)
    except Exception as err:  # phonopy raises YAML, Key, Type, Runtime errors for a file it cannot use
        detail = ": ".join([type(err).__name__, *str(err).splitlines()[:1]])
        raise PhononError(f"{path}: not a usable phonopy file ({detail}); rerun the stage that writes it "
                          "(displace or phonons)") from None


def interpolated_force_constants(phonon: phonopy.Phonopy, n: int) -> tuple[phonopy.Phonopy, np.ndarray]:
    """(n x n supercell as a Phonopy object, its force constants [N, N, 3, 3] in eV/Å²) from ``phonon``'s: its
    dynamical matrices at the q points commensurate with n x n (exact at the q points ``phonon``'s supercell
    holds, Fourier-interpolated elsewhere), transformed back to real space."""
    target = phonopy.Phonopy(phonon.unitcell, supercell_matrix=np.diag([n, n, 1]),
                             primitive_matrix=phonon.primitive_matrix)
    d2f = DynmatToForceConstants(target.primitive, target.supercell)
    phonon.run_qpoints(d2f.commensurate_points, with_dynamical_matrices=True)
    d2f.dynamical_matrices = phonon.qpoints.dynamical_matrices
    d2f.run()
    return target, np.array(d2f.force_constants)


def frame_forces(path) -> tuple[np.ndarray, np.ndarray]:
    """Forces (eV/A) and positions of the single frame in a DFT frames file."""
    frame = FramesFile(path)[0]
    if frame.forces is None:
        raise PhononError(f"{path}: frame has no forces")
    return frame.forces, frame.positions


def force_sets(phonon: phonopy.Phonopy, residual, forces, positions, sources) -> np.ndarray:
    """Displaced-minus-pristine forces ``[n_displacements, n_atoms, 3]`` (eV/A), checked against phonopy.

    ``forces``/``positions`` hold one array per displaced supercell in phonopy's order, ``residual`` the
    pristine supercell's forces; ``sources`` name them in errors. The net force of each set (the grid's
    egg-box drift, zero for a model) is put back onto the displaced atom (module docstring).
    """
    expected = phonon.supercells_with_displacements
    if len(forces) != len(expected):
        raise PhononError(f"phonopy expects {len(expected)} displaced supercells, got {len(forces)} results")
    sets = []
    for f, pos, source, cell, entry in zip(forces, positions, sources, expected, phonon.dataset["first_atoms"]):
        frac = (pos - cell.positions) @ np.linalg.inv(cell.cell)
        if np.abs(frac - np.round(frac)).max() > 1e-6:
            raise PhononError(f"{source}: positions differ from phonopy's displaced supercell; were the "
                              "results produced from this phonopy_disp.yaml?")
        f = f - residual
        f[entry["number"]] -= f.sum(axis=0)
        sets.append(f)
    return np.array(sets)


def load_force_sets(phonon: phonopy.Phonopy, pristine_path, fd_paths) -> np.ndarray:
    """:func:`force_sets` from DFT frames files (pristine, then fd_000, fd_001, ... in phonopy's order)."""
    residual, _ = frame_forces(pristine_path)
    forces, positions = zip(*(frame_forces(path) for path in fd_paths)) if fd_paths else ((), ())
    return force_sets(phonon, residual, forces, positions, [str(p) for p in fd_paths])


def drift_force_constant(phonon: phonopy.Phonopy, pristine_path, fd_paths) -> float:
    """Largest |net force| / |displacement| (eV/A^2) over the displaced supercells: the egg-box drift."""
    residual, _ = frame_forces(pristine_path)
    drifts = [np.linalg.norm((frame_forces(path)[0] - residual).sum(axis=0)) / np.linalg.norm(entry["displacement"])
              for path, entry in zip(fd_paths, phonon.dataset["first_atoms"])]
    return float(max(drifts))


def band_path(cell, points: int) -> tuple[list[np.ndarray], list[str]]:
    """The G-M-K-G path in reduced coordinates of the primitive cell."""
    p = hexagonal_points(cell)
    corners = [p["G"], p["M"], p["K"], p["G"]]
    paths = [np.linspace(a, b, points) for a, b in zip(corners[:-1], corners[1:])]
    return paths, ["$\\Gamma$", "M", "K", "$\\Gamma$"]


def gamma_frequencies_THz(phonon: phonopy.Phonopy) -> np.ndarray:
    phonon.run_qpoints([[0, 0, 0]])
    return phonon.qpoints.frequencies[0]


def run(disp_yaml, pristine_path, fd_paths: list, out_dir, config: dict | None = None) -> dict:
    """Compute force constants and phonon bands; return the summary written to ``summary.json``.

    ``config``: config sections (:func:`mlepi.config.stage_config`); the stage reads ``phonons.band_points``.
    """
    config = stage_config("phonons", config)
    out_dir = Path(out_dir)
    phonon = read_phonopy(disp_yaml, produce_fc=False)
    phonon.forces = load_force_sets(phonon, pristine_path, fd_paths)
    phonon.produce_force_constants()
    phonon.symmetrize_force_constants()
    with provenance.atomic_path(out_dir / "FORCE_SETS") as tmp:
        write_FORCE_SETS(phonon.dataset, filename=str(tmp))
    with provenance.atomic_path(out_dir / "phonopy_params.yaml") as tmp:
        phonon.save(tmp, settings={"force_constants": True})
    paths, labels = band_path(phonon.primitive.cell, config["phonons"]["band_points"])
    phonon.run_band_structure(paths, labels=labels)
    with provenance.atomic_path(out_dir / "band.yaml") as tmp:
        phonon.write_yaml_band_structure(filename=str(tmp))
    figures.plot_phonon_bands([(phonon.band_structure, "DFT", "C0-")], labels, "Phonons, finite differences (DFT)",
                              out_dir / "phonon_bands.png")
    freqs = gamma_frequencies_THz(phonon)
    summary = {
        "gamma_frequencies_cm": [round(float(f) * THZ_TO_CM, 3) for f in freqs],
        "egg_box_drift_eV_per_A2": drift_force_constant(phonon, pristine_path, fd_paths),
        "lowest_frequency_THz": float(np.min(np.concatenate(phonon.band_structure.frequencies))),
        "units": {"gamma_frequencies_cm": "cm^-1", "lowest_frequency_THz": "THz (negative = imaginary)",
                  "egg_box_drift_eV_per_A2": "eV/A^2, removed from the displaced atom's force"},
        "provenance": provenance.record(config),
    }
    provenance.write_json(out_dir / "summary.json", summary)
    return summary
