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

from mlepi.formats import provenance
from mlepi.geometry.bz import hexagonal_points
from mlepi.formats.frames import FramesFile

THZ_TO_CM = 1e12 / (SPEED_OF_LIGHT_M_S * 100)  # 1 THz in cm^-1


class PhononError(RuntimeError):
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


def plot_bands(curves: list[tuple[phonopy.Phonopy, str, str]], labels, title: str, path_png) -> None:
    """Dispersions along the same path, one ``(phonon, legend label, matplotlib style)`` per curve set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for phonon, legend, style in curves:
        bands = phonon.band_structure
        ticks = [0.0]
        for k, (dist, freq) in enumerate(zip(bands.distances, bands.frequencies)):
            lines = ax.plot(dist, freq * THZ_TO_CM, style, lw=1)
            if k == 0 and len(curves) > 1:
                lines[0].set_label(legend)
            ticks.append(dist[-1])
    ax.set_xticks(ticks, labels)
    ax.set_xlim(0, ticks[-1])
    ax.axhline(0, color="k", lw=0.5)
    for x in ticks[1:-1]:
        ax.axvline(x, color="k", lw=0.5)
    ax.set_ylabel("Frequency (cm$^{-1}$)")
    ax.set_title(title)
    if len(curves) > 1:
        ax.legend(loc="lower right")
    fig.tight_layout()
    with provenance.atomic_path(path_png) as tmp:
        fig.savefig(tmp, dpi=150)
    plt.close(fig)


def run(disp_yaml, pristine_path, fd_paths: list, config: dict, out_dir) -> dict:
    """Compute force constants and phonon bands; return the summary written to ``summary.json``."""
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
    plot_bands([(phonon, "DFT", "C0-")], labels, "Phonons, finite differences (DFT)", out_dir / "phonon_bands.png")
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


def run_ml(model_path, disp_yaml, pristine_structure, dft_params, config: dict, out_dir) -> dict:
    """The same finite differences with HedgeNet forces, against the DFT dispersion (``dft_params``).

    Writes ``band.yaml`` (HedgeNet), ``phonons_ml_vs_dft.png`` and ``summary.json`` with the Gamma
    frequencies of both and the relative error of the frequencies above 1 THz along the path.
    """
    import torch

    from mlepi.vibrations.displace import to_ase
    from mlepi.ml.infer import predict_frames
    from mlepi.ml.model import HedgeNet
    from mlepi.formats.structures import read_structure

    out_dir = Path(out_dir)
    phonon = read_phonopy(disp_yaml, produce_fc=False)
    layer = read_structure(pristine_structure).arrays["layer"]
    cells = [phonon.supercell, *phonon.supercells_with_displacements]
    names = ["pristine"] + [f"fd_{k:03d}" for k in range(len(cells) - 1)]
    # Only forces are needed: the model's own S (no GPAW), no Fermi level.
    frames = predict_frames(HedgeNet.load(model_path), [to_ase(c, layer) for c in cells], names,
                            fermi_level=False, overlap="model", dtype=torch.float64)  # smooth differences
    phonon.forces = force_sets(phonon, frames[0].forces, [f.forces for f in frames[1:]],
                               [f.positions for f in frames[1:]], names[1:])
    phonon.produce_force_constants()
    phonon.symmetrize_force_constants()
    dft = read_phonopy(dft_params)
    paths, labels = band_path(phonon.primitive.cell, config["phonons"]["band_points"])
    for ph in (phonon, dft):
        ph.run_band_structure(paths, labels=labels)
    with provenance.atomic_path(out_dir / "band.yaml") as tmp:
        phonon.write_yaml_band_structure(filename=str(tmp))
    plot_bands([(dft, "DFT", "k-"), (phonon, "HedgeNet", "C3--")], labels, "Phonons: HedgeNet vs DFT",
               out_dir / "phonons_ml_vs_dft.png")
    ml, ref = (np.concatenate(ph.band_structure.frequencies) for ph in (phonon, dft))
    stiff = ref > 1.0  # THz: relative errors of the soft acoustic branches near Gamma say little
    rel = np.abs(ml[stiff] - ref[stiff]) / ref[stiff]
    summary = {
        "gamma_frequencies_cm_ml": [round(float(f) * THZ_TO_CM, 3) for f in gamma_frequencies_THz(phonon)],
        "gamma_frequencies_cm_dft": [round(float(f) * THZ_TO_CM, 3) for f in gamma_frequencies_THz(dft)],
        "freq_rel_err_mean": float(rel.mean()), "freq_rel_err_max": float(rel.max()),
        "units": {"gamma_frequencies_cm_ml": "cm^-1", "freq_rel_err_mean": "over path frequencies > 1 THz"},
        "provenance": provenance.record(config, model=str(model_path)),
    }
    provenance.write_json(out_dir / "summary.json", summary)
    return summary
