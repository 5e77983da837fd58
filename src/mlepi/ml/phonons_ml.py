"""Stage ``phonons_ml``: the finite differences of the ``phonons`` stage with HedgeNet forces, against DFT.

Outputs in ``out_dir``: ``band.yaml`` (HedgeNet, phonopy's format), ``phonons_ml_vs_dft.png`` and
``summary.json`` with the Gamma frequencies of both and the relative error of the frequencies above 1 THz
along the path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mlepi import figures
from mlepi.config import stage_config
from mlepi.formats import provenance
from mlepi.formats.structures import read_structure
from mlepi.ml.infer import predict_frames
from mlepi.ml.model import HedgeNet
from mlepi.units import THZ_TO_CM
from mlepi.vibrations.displace import to_ase
from mlepi.vibrations.phonons import (
    band_path,
    force_sets,
    gamma_frequencies_THz,
    read_phonopy,
)


def fd_phonons(disp_yaml, layer, forces_of):
    """The ``displace`` stage's finite differences (``disp_yaml``) with the forces of a model:
    ``forces_of(atoms_list, names)`` returns one (n_atoms, 3) array (eV/Å) per structure, the pristine
    supercell first. Returns the Phonopy object with its symmetrized force constants."""
    phonon = read_phonopy(disp_yaml, produce_fc=False)
    cells = [phonon.supercell, *phonon.supercells_with_displacements]
    names = ["pristine"] + [f"fd_{k:03d}" for k in range(len(cells) - 1)]
    structures = [to_ase(c, layer) for c in cells]
    forces = forces_of(structures, names)
    phonon.forces = force_sets(phonon, forces[0], forces[1:], [a.positions for a in structures[1:]], names[1:])
    phonon.produce_force_constants()
    phonon.symmetrize_force_constants()
    return phonon


def hedgenet_forces(model):
    """``forces_of`` of :func:`fd_phonons` for a HedgeNet: batched, float64 (smooth differences), the model's
    own S (no GPAW) and no Fermi level, since only forces are needed."""
    def forces_of(structures, names):
        frames = predict_frames(model, structures, names, fermi_level=False, overlap="model", dtype=torch.float64)
        return [f.forces for f in frames]
    return forces_of


def dispersion_errors(phonon, dft, band_points: int) -> dict:
    """Both dispersions along G-M-K-G (band structures left on ``phonon`` and ``dft``) and their comparison:
    Gamma frequencies of both (cm^-1) and the relative error of the frequencies above 1 THz along the path."""
    paths, labels = band_path(phonon.primitive.cell, band_points)
    for ph in (phonon, dft):
        ph.run_band_structure(paths, labels=labels)
    ml, ref = (np.concatenate(ph.band_structure.frequencies) for ph in (phonon, dft))
    stiff = ref > 1.0  # THz: relative errors of the soft acoustic branches near Gamma say little
    rel = np.abs(ml[stiff] - ref[stiff]) / ref[stiff]
    return {
        "gamma_frequencies_cm_ml": [round(float(f) * THZ_TO_CM, 3) for f in gamma_frequencies_THz(phonon)],
        "gamma_frequencies_cm_dft": [round(float(f) * THZ_TO_CM, 3) for f in gamma_frequencies_THz(dft)],
        "freq_rel_err_mean": float(rel.mean()), "freq_rel_err_max": float(rel.max()),
    }


def run(model_path, disp_yaml, pristine_structure, dft_params, out_dir, config: dict | None = None) -> dict:
    """The same finite differences with HedgeNet forces, against the DFT dispersion (``dft_params``, the
    ``phonons`` stage's ``phonopy_params.yaml``); returns the summary written to ``summary.json``.

    ``config``: config sections (:func:`mlepi.config.stage_config`); the stage reads ``phonons.band_points``.
    """
    config = stage_config("phonons_ml", config)
    out_dir = Path(out_dir)
    layer = read_structure(pristine_structure).arrays["layer"]
    phonon = fd_phonons(disp_yaml, layer, hedgenet_forces(HedgeNet.load(model_path)))
    dft = read_phonopy(dft_params)
    errors = dispersion_errors(phonon, dft, config["phonons"]["band_points"])
    with provenance.atomic_path(out_dir / "band.yaml") as tmp:
        phonon.write_yaml_band_structure(filename=str(tmp))
    figures.plot_phonon_bands([(dft.band_structure, "DFT", "k-"), (phonon.band_structure, "HedgeNet", "C3--")],
                              dft.band_structure.labels, "Phonons: HedgeNet vs DFT",
                              out_dir / "phonons_ml_vs_dft.png")
    summary = {
        **errors,
        "units": {"gamma_frequencies_cm_ml": "cm^-1", "freq_rel_err_mean": "over path frequencies > 1 THz"},
        "provenance": provenance.record(config, model=str(model_path)),
    }
    provenance.write_json(out_dir / "summary.json", summary)
    return summary
