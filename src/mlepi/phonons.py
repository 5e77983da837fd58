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

Outputs, in phonopy's own formats so phonopy users can open them: ``FORCE_SETS``, ``phonopy_params.yaml`` (with force constants),
``band.yaml``, plus ``phonon_bands.png`` and ``summary.json`` (Gamma frequencies, lowest frequency).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import phonopy
from scipy.constants import c as SPEED_OF_LIGHT_M_S
from phonopy.file_IO import write_FORCE_SETS

from . import provenance
from .bz import hexagonal_points
from .frames import FramesFile

THZ_TO_CM = 1e12 / (SPEED_OF_LIGHT_M_S * 100)  # 1 THz in cm^-1


class PhononError(RuntimeError):
    """Force sets do not match the displacement dataset."""


def frame_forces(path) -> tuple[np.ndarray, np.ndarray]:
    """Forces (eV/A) and positions of the single frame in a DFT frames file."""
    frame = FramesFile(path)[0]
    if frame.forces is None:
        raise PhononError(f"{path}: frame has no forces")
    return frame.forces, frame.positions


def load_force_sets(phonon: phonopy.Phonopy, pristine_path, fd_paths) -> np.ndarray:
    """Displaced-minus-pristine forces ``[n_displacements, n_atoms, 3]``, checked against phonopy's cells."""
    expected = phonon.supercells_with_displacements
    if len(fd_paths) != len(expected):
        raise PhononError(f"phonopy expects {len(expected)} displaced supercells, got {len(fd_paths)} "
                          "DFT results")
    residual, _ = frame_forces(pristine_path)
    sets = []
    for path, cell, entry in zip(fd_paths, expected, phonon.dataset["first_atoms"]):
        forces, positions = frame_forces(path)
        delta = positions - cell.positions
        frac = delta @ np.linalg.inv(cell.cell)
        if np.abs(frac - np.round(frac)).max() > 1e-6:
            raise PhononError(f"{path}: positions differ from phonopy's displaced supercell; were the "
                              "DFT results produced from this phonopy_disp.yaml?")
        forces = forces - residual
        forces[entry["number"]] -= forces.sum(axis=0)  # egg-box drift back onto the displaced atom
        sets.append(forces)
    return np.array(sets)


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


def plot_bands(phonon: phonopy.Phonopy, labels, path_png) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bands = phonon.band_structure
    fig, ax = plt.subplots(figsize=(5, 4))
    ticks = [0.0]
    for dist, freq in zip(bands.distances, bands.frequencies):
        ax.plot(dist, freq * THZ_TO_CM, color="C0", lw=1)
        ticks.append(dist[-1])
    ax.set_xticks(ticks, labels)
    ax.set_xlim(0, ticks[-1])
    ax.axhline(0, color="k", lw=0.5)
    for x in ticks[1:-1]:
        ax.axvline(x, color="k", lw=0.5)
    ax.set_ylabel("Frequency (cm$^{-1}$)")
    ax.set_title("Phonons, finite differences (DFT)")
    fig.tight_layout()
    with provenance.atomic_path(path_png) as tmp:
        fig.savefig(tmp, dpi=150)
    plt.close(fig)


def run(disp_yaml, pristine_path, fd_paths: list, config: dict, out_dir) -> dict:
    """Compute force constants and phonon bands; return the summary written to ``summary.json``."""
    out_dir = Path(out_dir)
    phonon = phonopy.load(disp_yaml, produce_fc=False, log_level=0)
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
    plot_bands(phonon, labels, out_dir / "phonon_bands.png")
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
