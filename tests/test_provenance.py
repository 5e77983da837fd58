"""Provenance records in every kind of output, read back by `mlepi inspect` (mlepi.formats.provenance)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mlepi.formats import provenance
from mlepi.formats.frames import Frame, write_frames
from mlepi.formats.structures import read_structure, write_structure
from mlepi.ml.model import HedgeNet

from hedgenet_synthetic import TOY_BASIS, bilayer

MLEPI = str(Path(sys.executable).parent / "mlepi")
# A command line as Snakemake passes it: JSON with quotes, and a backslash for good measure.
COMMAND = 'mlepi dft s.extxyz --params {"dft": {"xc": "PBE"}} --out C:\\x.h5'


@pytest.fixture
def record(monkeypatch):
    monkeypatch.setattr(sys, "argv", COMMAND.split(" "))
    return provenance.record({"xc": "PBE"}, seed=7)


def outputs(tmp_path, record):
    """One file of every kind mlepi writes with a record."""
    atoms = bilayer(1, rattle=0.0)
    write_structure(tmp_path / "s.extxyz", atoms, kind="pristine", provenance=record)
    frame = Frame.from_atoms("f", atoms, energy=-1.0, forces=np.zeros((len(atoms), 3)))
    write_frames(tmp_path / "f.h5", [frame], basis=TOY_BASIS, source="dft", parameters={}, provenance=record)
    torch.manual_seed(0)
    HedgeNet.from_config({"hidden": 4, "n_rbf": 2, "num_interactions": 1}, TOY_BASIS).save(
        tmp_path / "model.pt", provenance=record)
    provenance.write_json(tmp_path / "summary.json", {"x": 1, "provenance": record})
    return [tmp_path / name for name in ("s.extxyz", "f.h5", "model.pt", "summary.json")]


def test_every_output_kind_gives_back_its_record(tmp_path, record):
    for path in outputs(tmp_path, record):
        found = provenance.read(path)
        assert found["provenance"] == json.loads(json.dumps(record)), path
        assert found["provenance"]["command"] == COMMAND  # quotes and backslashes survive extxyz too


def test_structure_info_with_backslashes_round_trips(tmp_path):
    write_structure(tmp_path / "s.extxyz", bilayer(1, rattle=0.0), note="a\\b \"c\" \\", data={"k": "x\\y"})
    info = read_structure(tmp_path / "s.extxyz").info
    assert info["note"] == "a\\b \"c\" \\" and json.loads(info["data"]) == {"k": "x\\y"}


def test_mlepi_inspect_prints_versions_revision_hash_command_and_seed(tmp_path, record):
    paths = outputs(tmp_path, record)
    result = subprocess.run([MLEPI, "inspect", *map(str, paths)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("git revision:") == len(paths)
    for text in (record["git_revision"], record["config_hash"], COMMAND, "seed:          7",
                 f"numpy {np.__version__}"):
        assert text in result.stdout


@pytest.mark.parametrize("name, content, message", [
    ("figure.png", b"\x89PNG\r\n", "inspect the JSON or HDF5 file"),
    ("broken.h5", b"not hdf5 at all", "damaged or not an mlepi output"),
    ("plain.json", b'{"x": 1}', "has no provenance record"),
    ("missing.h5", None, "no such file"),
])
def test_inspect_says_what_is_wrong_with_a_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    result = subprocess.run([MLEPI, "inspect", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr


def test_a_rewrite_sweeps_temporaries_of_killed_writers_only(tmp_path):
    """A SIGKILLed writer leaves its temporary; the job that writes the same file again removes it, but
    never the temporary of a writer that is still running, nor those of other files."""
    killed = subprocess.Popen(["true"])
    killed.wait()
    for name in (f".x.tmp{killed.pid}.h5", f".x.tmp{os.getppid()}.h5", f".y.tmp{killed.pid}.h5"):
        (tmp_path / name).write_text("half-written")
    with provenance.atomic_path(tmp_path / "x.h5") as tmp:
        tmp.write_text("complete")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".x.tmp{os.getppid()}.h5", f".y.tmp{killed.pid}.h5", "x.h5"])
    with pytest.raises(RuntimeError), provenance.atomic_path(tmp_path / "x.h5") as tmp:
        tmp.write_text("interrupted")
        raise RuntimeError
    assert (tmp_path / "x.h5").read_text() == "complete"  # a failed write leaves the old file whole
