"""Stages ``dataset`` and ``compare``, the frames-file reader, and the CLI's handling of user errors.

Frames are built from the analytic AB bilayer tight-binding model of ``bilayer_tb`` so that expected
errors are known exactly.
"""

import json

import ase.io
import h5py
import numpy as np
import pytest

from mlepi import cli
from mlepi.evaluation import metrics
from mlepi.formats import dataset, provenance
from mlepi.formats.frames import FramesFile, FramesFileError, write_frames
from mlepi.geometry.layers import build_bilayer

from bilayer_tb import BASIS_PZ, tb_frame


def frame(name="f", shift=0.0, energy=-10.0):
    atoms = build_bilayer("AB").repeat((2, 2, 1))
    f = tb_frame(atoms, name=name)
    f.H = f.H + shift * (f.H != 0)
    f.energy, f.forces, f.fermi_level = energy, np.zeros((len(atoms), 3)), 0.0
    return f


def write(path, frames, source="dft", basis=BASIS_PZ, parameters=None):
    write_frames(path, frames, basis=basis, source=source, parameters=parameters or {"basis": "pz"},
                 provenance=provenance.record())
    return path


def test_dataset_merges_frames_and_exports_extxyz(tmp_path):
    paths = [write(tmp_path / f"{n}.h5", [frame(n, energy=-10.0 - i)]) for i, n in enumerate("ab")]
    n = dataset.run(paths, tmp_path / "dataset.h5", extxyz_path=tmp_path / "dataset.extxyz")
    merged = FramesFile(tmp_path / "dataset.h5")
    assert n == 2 and merged.names == ["a", "b"] and merged.source == "dft"
    assert np.array_equal(merged["b"].H, FramesFile(paths[1])[0].H)
    images = ase.io.read(tmp_path / "dataset.extxyz", ":")
    assert [a.get_potential_energy() for a in images] == [-10.0, -11.0]
    assert "layer" in images[0].arrays


def test_dataset_refuses_mixed_settings_and_model_frames(tmp_path):
    a = write(tmp_path / "a.h5", [frame("a")])
    b = write(tmp_path / "b.h5", [frame("b")], parameters={"basis": "other"})
    with pytest.raises(FramesFileError, match="differ"):
        dataset.run([a, b], tmp_path / "d.h5")
    c = write(tmp_path / "c.h5", [frame("c")], source="hedgenet")
    with pytest.raises(FramesFileError, match="DFT frames"):
        dataset.run([a, c], tmp_path / "d.h5")
    assert not (tmp_path / "d.h5").exists()


def test_reader_rejects_foreign_truncated_and_wrong_version(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as h5:
        h5["x"] = 1
    with pytest.raises(FramesFileError, match="not an mlepi frames file"):
        FramesFile(foreign)
    good = write(tmp_path / "good.h5", [frame()])
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(FramesFileError, match="not a readable HDF5"):
        FramesFile(truncated)
    with h5py.File(good, "a") as h5:
        h5.attrs["schema_version"] = 99
    with pytest.raises(FramesFileError, match="schema_version 99"):
        FramesFile(good)


def test_info_alone_matches_the_frame_and_names_a_damaged_one(tmp_path):
    f = frame("a")
    f.info = {"temperature_K": 300.0, "sample_index": 3}
    path = write(tmp_path / "a.h5", [f])
    frames = FramesFile(path)
    assert frames.info("a") == frames["a"].info == f.info
    with pytest.raises(FramesFileError, match="no frame named 'b'"):
        frames.info("b")
    with h5py.File(path, "a") as h5:
        h5["frames"]["a"].attrs["info"] = "{not json"
    for read in (frames.info, frames.__getitem__):
        with pytest.raises(FramesFileError, match="frame 'a' is damaged"):
            read("a")


def test_compare_identical_frames_is_zero_and_a_shift_is_measured(tmp_path):
    a = write(tmp_path / "a.h5", [frame()])
    same = metrics.compare(a, a)
    assert same["h_mae_meV"] == 0 and same["force_mae_meV_per_A"] == 0
    # Bands within +-1 eV of E_F exist at K (the Dirac point folds onto the 2x2 cell's K); elsewhere the
    # window may be empty, which compare reports as NaN rather than a made-up zero.
    assert same["eig_mae_K_meV"] == 0
    assert all(same[f"eig_mae_{p}_meV"] == 0 or np.isnan(same[f"eig_mae_{p}_meV"]) for p in "GM")
    # Shifting every nonzero H entry by 1 meV changes the H MAE by exactly the nonzero fraction.
    ref = FramesFile(a)[0]
    b = write(tmp_path / "b.h5", [frame(shift=1e-3)], source="hedgenet")
    shifted = metrics.compare(a, b)
    counts = 1  # one p_z orbital per atom: every block is 1x1
    assert shifted["h_mae_meV"] == pytest.approx(np.mean(ref.H[:, :counts, :counts] != 0), rel=1e-9)
    assert shifted["blocks_matched"] == ref.edge_index.shape[1]
    assert shifted["eig_mae_K_meV"] > 0


def test_aligned_eigenvalue_error_ignores_a_constant_offset_only():
    """A different energy zero (every eigenvalue + c) is no error once aligned; a changed splitting still is."""
    ea = np.array([-2.0, -0.34, 0.0, 0.35, 2.0])
    offset = ea + 0.064
    assert metrics.nearest_eigenvalue_mae(ea, offset, 0.0) == pytest.approx(0.064)
    assert metrics.nearest_eigenvalue_mae(ea, offset, 0.0, aligned=True) == pytest.approx(0.0, abs=1e-15)
    split = ea * np.array([1, 1.1, 1, 1.1, 1]) + 0.064  # the +-0.34 eV pair 10 % further apart, then offset
    err = metrics.nearest_eigenvalue_mae(ea, split, 0.0, aligned=True)
    assert 0.01 < err < 0.064


def test_cli_compare_json_and_user_errors(tmp_path, capsys):
    a = write(tmp_path / "a.h5", [frame()])
    assert cli.main(["compare", str(a), str(a), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["h_mae_meV"] == 0
    assert cli.main(["compare", str(a), str(tmp_path / "missing.h5")]) == 2
    assert "missing.h5: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("system: {name: 'x/y'}\n")
    out = tmp_path / "never.extxyz"
    assert cli.main(["displace", "--config", str(bad), "--structure", str(a), "--out-dir", str(out)]) == 2
    assert "field 'system.name'" in capsys.readouterr().err
    assert not out.exists()


def test_every_stage_has_help(capsys):
    for stage in ("structure", "displace", "dft", "phonons", "thermal", "dataset", "train", "infer",
                  "predict", "parity", "phonons_ml", "bands", "compare"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([stage, "--help"])
        assert exit_info.value.code == 0
        assert "usage: mlepi " + stage in capsys.readouterr().out
