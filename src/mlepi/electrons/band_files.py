"""The files of the band analysis (``mlepi bands``): ``vf.csv``, ``bands.json``, ``spectral.h5`` and the figures.

Layouts in ``docs/bands.md``; every file is written atomically. :mod:`mlepi.electrons.bands` computes what
goes in them.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from mlepi import figures
from mlepi.electrons import swmcc
from mlepi.formats.provenance import atomic_path, write_csv, write_json

SCHEMA = "mlepi.bands"
SPECTRAL_SCHEMA = "mlepi.spectral"
SCHEMA_VERSION = 1
N_BANDS = 4  # the four π bands of the SWMcC model
UNITS = {"energy": "eV", "k": "1/Angstrom", "temperature": "K", "velocity": "1e6 m/s",
         "spectral_function": "1/eV"}


CSV_COLUMNS = (["T_K", "n_samples", "vf_1e6_m_s", "vf_err_1e6_m_s", "vf_model_err_1e6_m_s", "vf_total_err_1e6_m_s",
                "vf_slope_1e6_m_s", "vf_slope_err_1e6_m_s"]
               + [f"{p}_eV" for p in swmcc.PARAM_NAMES] + [f"{p}_err_eV" for p in swmcc.PARAM_NAMES]
               + [f"band{b}_K{suffix}_eV" for b in range(1, N_BANDS + 1) for suffix in ("", "_err")])


def csv_row(result: dict) -> dict:
    """One ``vf.csv`` row from :func:`analyse_temperature`'s result."""
    row = {key: result[key] for key in CSV_COLUMNS[:8]}
    row.update({f"{p}_eV": result["params_eV"][p] for p in swmcc.PARAM_NAMES})
    row.update({f"{p}_err_eV": result["params_err_eV"][p] for p in swmcc.PARAM_NAMES})
    for b in range(N_BANDS):
        row[f"band{b + 1}_K_eV"] = result["bands_K_eV"][b]
        row[f"band{b + 1}_K_err_eV"] = result["bands_K_err_eV"][b]
    return row


def write_outputs(document: dict, spectra: dict, energy_grid: np.ndarray, out_dir: Path,
                  with_figures: bool = True) -> None:
    """``vf.csv``, ``bands.json``, ``spectral.h5`` and (``with_figures``) the three figures, each atomically."""
    results = document["temperatures"]
    write_csv(out_dir / "vf.csv", [csv_row(result) for result in results], CSV_COLUMNS)
    write_json(out_dir / "bands.json", json_safe(document))
    distance = np.array(document["path"]["distance_1_A"])
    with atomic_path(out_dir / "spectral.h5") as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["schema"] = SPECTRAL_SCHEMA
            h5.attrs["schema_version"] = SCHEMA_VERSION
            h5.attrs["units"] = json.dumps(UNITS)
            h5.attrs["provenance"] = json.dumps(document["provenance"], default=str)
            h5.create_dataset("k_distance_1_A", data=distance)
            h5.create_dataset("energy_eV", data=energy_grid)
            for result in results:
                g = h5.create_group(f"T_{result['T_K']:g}K")
                g.attrs["T_K"] = result["T_K"]
                g.attrs["n_samples"] = result["n_samples"]
                g.create_dataset("A", data=spectra[result["T_K"]], compression="gzip")
                g.create_dataset("bands_mean_eV", data=np.array(result["bands_mean_eV"]))
                g.create_dataset("bands_err_eV", data=np.array(result["bands_err_eV"]))
                g.create_dataset("bands_fit_eV", data=np.array(result["bands_fit_eV"]))
    if not with_figures:
        return
    temps = [r["T_K"] for r in results]
    figures.plot_spectral_function(distance, energy_grid, spectra, out_dir / "spectral_function.png",
                                   bands={r["T_K"]: np.array(r["bands_mean_eV"]) for r in results},
                                   model_bands={r["T_K"]: np.array(r["bands_fit_eV"]) for r in results})
    figures.plot_vf(temps, [r["vf_1e6_m_s"] for r in results], [r["vf_err_1e6_m_s"] for r in results],
                    out_dir / "vf.png", vf_slope=[r["vf_slope_1e6_m_s"] for r in results],
                    vf_slope_err=[r["vf_slope_err_1e6_m_s"] for r in results],
                    vf_total_err=[r["vf_total_err_1e6_m_s"] for r in results])
    figures.plot_convergence({r["T_K"]: r["convergence"] for r in results}, out_dir / "convergence.png",
                             vf_err={r["T_K"]: r["vf_err_1e6_m_s"] for r in results},
                             independent={r["T_K"]: r["convergence_independent"] for r in results
                                          if "convergence_independent" in r})


def json_safe(value):
    """NaN → None (strict JSON has no NaN)."""
    if isinstance(value, float):
        return None if np.isnan(value) else value
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
