"""The supercell convergence table (mlepi.electrons.supercell_convergence): differences from the largest size, the
size from which v_F is converged, and the table read back as written."""

import json

import numpy as np
import pytest

from mlepi.electrons.bands import BandsError
from mlepi.electrons.supercell_convergence import COLUMNS, converged_size, read_convergence, summarize


def _bands_json(path, n, vf, err):
    doc = {"geometry": {"supercell_matrix": [[n, 0, 0], [0, n, 0], [0, 0, 1]]},
           "temperatures": [{"T_K": 300.0, "n_samples": 4, "vf_1e6_m_s": vf, "vf_err_1e6_m_s": err,
                             "bands_K_eV": [-0.4, -0.1, 0.1, 0.4], "bands_K_err_eV": [0.01] * 4}]}
    path.write_text(json.dumps(doc))
    return path


def test_convergence_table_compares_with_the_largest_size(tmp_path):
    """v_F of 3x3 is off the largest (8x8) size's, 4x4 and 6x6 within error: converged from 4x4 on; the
    mean-square displacements are left empty without phonons, and only 3x3 and 6x6 hold the phonons at K."""
    values = {3: (0.95, 0.01), 4: (0.91, 0.01), 6: (0.905, 0.01), 8: (0.90, 0.01)}
    paths = {n: _bands_json(tmp_path / f"{n}.json", n, *v) for n, v in values.items()}
    rows = summarize(paths, tmp_path)
    assert [r["within_error_of_largest"] for r in rows] == [False, True, True, True]
    assert [r["holds_K"] for r in rows] == [True, False, True, False]
    assert rows[0]["vf_minus_largest_1e6_m_s"] == pytest.approx(0.05)
    assert converged_size(rows, 300.0) == 4
    values[6] = (0.95, 0.01)  # the size below the largest is off: not shown converged
    rows = summarize({n: _bands_json(tmp_path / f"{n}.json", n, *v) for n, v in values.items()}, tmp_path)
    assert converged_size(rows, 300.0) is None and np.isnan(rows[0]["u2_z_A2"])
    assert (tmp_path / "convergence.csv").exists() and (tmp_path / "convergence.png").stat().st_size > 0


def test_the_table_reads_back_as_written(tmp_path):
    values = {3: (0.95, 0.01), 6: (0.90, 0.02)}
    rows = summarize({n: _bands_json(tmp_path / f"{n}.json", n, *v) for n, v in values.items()}, tmp_path)
    back = read_convergence(tmp_path / "convergence.csv")
    assert len(back) == len(rows)
    for row, read in zip(rows, back):
        for key in COLUMNS:
            if isinstance(row[key], float) and np.isnan(row[key]):
                assert np.isnan(read[key])
            else:
                assert read[key] == pytest.approx(row[key], rel=1e-9) and type(read[key]) is type(row[key])
    (tmp_path / "bad.csv").write_text("supercell,T_K\n3,300\n")
    with pytest.raises(BandsError, match="bad.csv.*missing"):
        read_convergence(tmp_path / "bad.csv")
