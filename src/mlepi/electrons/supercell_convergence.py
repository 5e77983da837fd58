"""The supercell convergence table: v_F(T) and the band energies at K against supercell size.

Stage ``supercell_convergence`` (:func:`mlepi.ml.supercell_bands.summarize`, which adds the mean-square
displacements of :mod:`mlepi.vibrations.msd`) writes it from the band analyses of the workflow's own supercell
(``mlepi bands``) and of the larger ones of ``mlepi supercell_bands``; ``mlepi renormalization`` reads it back
(:func:`read_convergence`) for the supercell's part of its error budget. The table says from which size v_F is
within error of the largest size's. Only sizes divisible by 3 hold the phonons at K, which couple the two Dirac
cones: 4 x 4 and 8 x 8 miss them, so v_F need not approach its limit monotonically in n.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mlepi import figures
from mlepi.electrons.band_files import N_BANDS
from mlepi.electrons.bands import BandsError
from mlepi.formats import provenance

MSD_COLUMNS = ["u2_xy_A2", "u2_z_A2", "u2_z_ZA_A2", "ZA_share"]
COLUMNS = ["supercell", "n_atoms", "holds_K", "T_K", "n_samples", "vf_1e6_m_s", "vf_err_1e6_m_s",
           "vf_minus_largest_1e6_m_s", "within_error_of_largest"] + MSD_COLUMNS + [
    f"band{b}_K{suffix}_eV" for b in range(1, N_BANDS + 1) for suffix in ("", "_err")]


def summarize(summaries: dict, out_dir, msd: Callable[[int, list], list[dict]] | None = None) -> list[dict]:
    """``convergence.csv`` and ``convergence.png`` from ``{n: bands.json path}`` (the workflow's size included).

    Per size and temperature: v_F and the band energies at K, v_F's difference from the largest size's and
    whether it is within their combined sampling error, whether the size holds the phonons at K (n divisible
    by 3: the intervalley modes that couple the two Dirac cones), and with ``msd`` (``msd(n, temperatures)``,
    one dict of ``MSD_COLUMNS`` and ``T_K`` per temperature) the mean-square displacements of the size's
    samples by branch; without it those columns are empty.
    """
    out_dir = Path(out_dir)
    documents = {int(n): json.loads(Path(path).read_text()) for n, path in summaries.items()}
    largest = {r["T_K"]: r for r in documents[max(documents)]["temperatures"]}
    rows = []
    for n, document in sorted(documents.items()):
        n_cells = abs(round(np.linalg.det(np.array(document["geometry"]["supercell_matrix"]))))
        temperatures = [r["T_K"] for r in document["temperatures"]]
        displacements = {m["T_K"]: m for m in msd(n, temperatures)} if msd else {}
        for r in document["temperatures"]:
            ref = largest.get(r["T_K"])
            difference = r["vf_1e6_m_s"] - ref["vf_1e6_m_s"] if ref else float("nan")
            row = {"supercell": n, "n_atoms": 4 * n_cells, "holds_K": n % 3 == 0, "T_K": r["T_K"],
                   "n_samples": r["n_samples"], "vf_1e6_m_s": r["vf_1e6_m_s"], "vf_err_1e6_m_s": r["vf_err_1e6_m_s"],
                   "vf_minus_largest_1e6_m_s": difference,
                   "within_error_of_largest": bool(ref) and abs(difference) <= float(
                       np.hypot(r["vf_err_1e6_m_s"], ref["vf_err_1e6_m_s"]))}
            row.update({key: displacements.get(r["T_K"], {}).get(key, float("nan")) for key in MSD_COLUMNS})
            for b in range(N_BANDS):
                row[f"band{b + 1}_K_eV"] = r["bands_K_eV"][b]
                row[f"band{b + 1}_K_err_eV"] = r["bands_K_err_eV"][b]
            rows.append(row)
    provenance.write_csv(out_dir / "convergence.csv", rows, COLUMNS)
    figures.plot_supercell_convergence(rows, out_dir / "convergence.png")
    return rows


def read_convergence(path) -> list[dict]:
    """The rows of a ``convergence.csv`` of :func:`summarize`, typed as it wrote them (empty fields NaN)."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            table = list(csv.DictReader(f))
    except OSError as err:
        raise BandsError(f"{path}: cannot read the supercell convergence table ({err}); rerun "
                         "`mlepi supercell_convergence`") from None
    if not table or set(COLUMNS) - set(table[0]):
        missing = sorted(set(COLUMNS) - set(table[0])) if table else COLUMNS
        raise BandsError(f"{path}: not a convergence.csv of `mlepi supercell_convergence` (no rows, or missing "
                         f"{', '.join(missing[:4])}); rerun it")
    flags, counts = {"holds_K", "within_error_of_largest"}, {"supercell", "n_atoms", "n_samples"}
    return [{key: (value == "True" if key in flags else int(value) if key in counts
                   else float(value) if value else float("nan")) for key, value in row.items() if key in COLUMNS}
            for row in table]


def converged_size(rows: list[dict], T_K: float) -> int | None:
    """The smallest size whose v_F at ``T_K``, and every larger size's, is within error of the largest's; None
    when only the largest is (the answer is not shown converged)."""
    sel = sorted((r for r in rows if r["T_K"] == T_K), key=lambda r: r["supercell"])
    size = None
    for r in reversed(sel[:-1]):
        if not r["within_error_of_largest"]:
            break
        size = r["supercell"]
    return size
