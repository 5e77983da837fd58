"""Every bad input is refused before work starts: malformed configs (given to ``mlepi`` and to the workflow)
and truncated, corrupted, foreign, wrong-kind and wrong-schema files fed to every stage that reads them.
Each case must exit with status 2, print one ``mlepi STAGE: error:`` line that names the field or the file, and
write nothing.
"""

import contextlib
import io
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mlepi import cli, config
from mlepi.formats.frames import FramesFile, write_frames
from mlepi.formats.structures import write_structure
from mlepi.ml.model import HedgeNet
from mlepi.vibrations import displace

from bilayer_tb import bilayer_primitive
from hedgenet_synthetic import TOY_BASIS, TOY_DFT, write_dataset
from workflow_helpers import ROOT, snakemake


def run_cli(argv):
    """``mlepi ARGV`` in this process: (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cli.main([str(a) for a in argv])
    return status, err.getvalue()


def files_under(path):
    return sorted(p.relative_to(path) for p in path.rglob("*")) if path.exists() else []


# ------------------------------------------------------------------------------------------------ configs
# (case, YAML text, what the message must contain: the field, or what is wrong with the file)
BAD_CONFIGS = [
    ("unknown section", "system: {}\nbogus: {}\n", "field '(top level)'"),
    ("unknown key", "system: {nme: x}\n", "field 'system'"),
    ("missing system section", "thermal: {}\n", "add a 'system:' section"),
    ("empty file", "", "add a 'system:' section"),
    ("top level a list", "- system\n- thermal\n", "top level must be a mapping"),
    ("section a list", "system: [AB]\n", "field 'system'"),
    ("key given twice", "system: {}\ntrain:\n  epochs: 10\n  epochs: 20\n", "'epochs' appears twice"),
    ("section given twice", "system: {}\nsystem: {name: x}\n", "'system' appears twice"),
    ("tab indentation", "system:\n\tname: x\n", "not valid YAML"),
    ("negative temperature", "system: {}\nthermal: {temperatures: [-5]}\n", "field 'thermal.temperatures.0'"),
    ("temperature with a unit", "system: {}\nthermal: {temperatures: [300K]}\n", "field 'thermal.temperatures.0'"),
    ("temperature not a list", "system: {}\nthermal: {temperatures: 300}\n", "field 'thermal.temperatures'"),
    ("temperature twice", "system: {}\nthermal: {temperatures: [300, 300]}\n", "field 'thermal.temperatures'"),
    ("no temperature", "system: {}\nthermal: {temperatures: []}\n", "field 'thermal.temperatures'"),
    ("one inference sample", "system: {}\nthermal: {infer_samples: 1}\n", "field 'thermal.infer_samples'"),
    ("boolean as a word", "system: {}\nthermal: {antithetic: 'yes'}\n", "field 'thermal.antithetic'"),
    ("supercell of one number", "system: {supercell: [3]}\n", "field 'system.supercell'"),
    ("supercell of zero cells", "system: {supercell: [0, 3]}\n", "field 'system.supercell.0'"),
    ("fractional supercell", "system: {supercell: [2.5, 3]}\n", "field 'system.supercell.0'"),
    ("impossibly large supercell", "system: {supercell: [100, 100]}\n", "field 'system.supercell.0'"),
    ("three-dimensional supercell", "system: {supercell: [3, 3, 1]}\n", "field 'system.supercell'"),
    ("name with a path separator", "system: {name: a/b}\n", "field 'system.name'"),
    ("name with shell metacharacters", "system: {name: 'x; rm -rf ~'}\n", "field 'system.name'"),
    ("lattice constant as text", "system: {a: '2.46'}\n", "field 'system.a'"),
    ("unknown stacking", "system: {stacking: ABC}\n", "field 'system.stacking'"),
    ("zero phonon displacement", "system: {}\nphonons: {displacement: 0}\n", "field 'phonons.displacement'"),
    ("unknown basis", "system: {}\ndft: {basis: dzzp}\n", "field 'dft.basis'"),
    ("epochs as a float", "system: {}\ntrain: {epochs: 100.0}\n", "field 'train.epochs'"),
    ("negative learning rate", "system: {}\ntrain: {lr: -0.001}\n", "field 'train.lr'"),
    ("unknown loss weight", "system: {}\ntrain: {weights: {E: 1}}\n", "field 'train.weights'"),
    ("unknown device", "system: {}\ntrain: {device: gpu}\n", "field 'train.device'"),
    ("negative memory", "system: {}\nresources: {dft_mem_mb: -1}\n", "field 'resources.dft_mem_mb'"),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_refused_naming_the_field_and_nothing_is_written(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    # thermal reads a config section of its own; the phonopy file does not exist, so a config that slipped
    # through would fail on that file instead, with another message.
    status, err = run_cli(["thermal", "--config", path, "--phonopy", tmp_path / "phonopy_params.yaml",
                           "--pristine", tmp_path / "pristine.extxyz", "--temperature", 300, "--purpose", "infer",
                           "--out", out / "samples.extxyz"])
    assert status == 2
    assert err.startswith(f"mlepi thermal: error: {path}: ") and expected in err, err
    assert not out.exists()


@pytest.mark.parametrize("make, expected", [
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00\x80 not text"), "UTF-8"),
    (lambda p: None, "not found"),
], ids=["directory", "binary", "missing"])
def test_unreadable_config_file_is_refused(tmp_path, make, expected):
    path = tmp_path / "config.yaml"
    make(path)
    status, err = run_cli(["train", "--config", path, "--dataset", tmp_path / "d.h5", "--out-dir", tmp_path / "o"])
    assert status == 2 and str(path) in err and expected in err, err
    assert not (tmp_path / "o").exists()


def test_commented_out_section_means_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("system:\n  # name: mine\nthermal:\n")
    cfg = config.load(path)
    assert cfg["system"]["name"] == "blg_ab" and cfg["thermal"]["antithetic"] is True


@pytest.mark.slow
@pytest.mark.parametrize("text, expected", [
    ("system: {name: tiny}\ntrain:\n  epochs: 3\n  epochs: 4\n", "'epochs' appears twice"),
    ("system: {stacking: AA}\n", "field 'system.stacking'"),
    ("system: {}\nthermal: {temperatures: [-1]}\n", "field 'thermal.temperatures.0'"),
], ids=["repeated key", "AA stacking", "negative temperature"])
def test_workflow_refuses_a_bad_config_before_any_job(tmp_path, text, expected):
    shutil.copytree(ROOT / "config", tmp_path / "config")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    before = files_under(tmp_path)
    result = snakemake(tmp_path, "--configfile", str(bad), check=False)
    assert result.returncode != 0
    assert expected in result.stderr + result.stdout
    # Nothing but Snakemake's own run log: no results/, no job, no metadata.
    new = [p for p in files_under(tmp_path) if p not in before]
    assert all(p.parts[:2] == (".snakemake", "log") or p == Path(".snakemake") for p in new), new


# -------------------------------------------------------------------------------------------------- files
@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """One valid file of every kind a stage reads."""
    d = tmp_path_factory.mktemp("good")
    write_structure(d / "primitive.extxyz", bilayer_primitive())
    displace.run(d / "primitive.extxyz", d / "displace", config.validate({"system": {"supercell": [2, 2]}}))
    write_dataset(d / "frames.h5", 2)
    torch.manual_seed(0)
    HedgeNet.from_config({"hidden": 8, "n_rbf": 4, "num_interactions": 1}, TOY_BASIS).save(
        d / "model.pt", dft_parameters=TOY_DFT, validation_frames=FramesFile(d / "frames.h5").names)
    return {"primitive": d / "primitive.extxyz", "supercell": d / "displace" / "pristine.extxyz",
            "disp": d / "displace" / "phonopy_disp.yaml", "frames": d / "frames.h5", "model": d / "model.pt"}


def _flip_bytes_inside(path, offset, n=8):
    data = bytearray(path.read_bytes())
    data[offset:offset + n] = bytes(b ^ 0xFF for b in data[offset:offset + n])
    path.write_bytes(bytes(data))


def _corrupt_frames_data(good, path):
    """A bit-level corruption of the H block data only: HDF5 still opens, every header is intact."""
    shutil.copy(good["frames"], path)
    with h5py.File(path, "r") as h5:
        name = FramesFile(path).names[0]
        offset = h5["frames"][name]["H"].id.get_chunk_info(0).byte_offset
    _flip_bytes_inside(path, offset + 16)


def _wrong_schema_frames(good, path):
    shutil.copy(good["frames"], path)
    with h5py.File(path, "a") as h5:
        h5.attrs["schema"] = "mlepi.spectral"


def _wrong_version_frames(good, path):
    shutil.copy(good["frames"], path)
    with h5py.File(path, "a") as h5:
        h5.attrs["schema_version"] = 99


def _incomplete_frames(good, path):
    shutil.copy(good["frames"], path)
    with h5py.File(path, "a") as h5:
        del h5.attrs["frame_names"]


def _foreign_hdf5(good, path):
    with h5py.File(path, "w") as h5:
        h5["data"] = np.arange(10)


def _truncated(key):
    def make(good, path):
        data = good[key].read_bytes()
        path.write_bytes(data[:len(data) // 2])
    return make


def _header_garbage(key):
    def make(good, path):
        shutil.copy(good[key], path)
        _flip_bytes_inside(path, 0, 64)
    return make


def _middle_garbage(key):
    def make(good, path):
        shutil.copy(good[key], path)
        _flip_bytes_inside(path, path.stat().st_size // 2, 256)
    return make


def _empty(good, path):
    path.write_bytes(b"")


def _text(good, path):
    path.write_text("this is not what you think it is\n")


def _tensor_file(good, path):
    torch.save(torch.zeros(3), path)


def _checkpoint_as_model(good, path):
    torch.save({"schema": "mlepi.train_checkpoint", "epoch": 3}, path)


def _foreign_yaml(good, path):
    path.write_text((ROOT / "config" / "config.yaml").read_text())


def _not_periodic(good, path):
    atoms = bilayer_primitive()
    atoms.pbc = False
    write_structure(path, atoms)


FRAMES_KINDS = {"truncated": _truncated("frames"), "header garbage": _header_garbage("frames"),
                "corrupted H data": _corrupt_frames_data, "foreign HDF5": _foreign_hdf5,
                "wrong schema": _wrong_schema_frames, "wrong version": _wrong_version_frames,
                "incomplete": _incomplete_frames, "empty": _empty, "text": _text}
MODEL_KINDS = {"truncated": _truncated("model"), "header garbage": _header_garbage("model"),
               "middle garbage": _middle_garbage("model"), "tensor file": _tensor_file,
               "checkpoint given as model": _checkpoint_as_model, "empty": _empty, "text": _text,
               "frames file": lambda good, path: shutil.copy(good["frames"], path)}
STRUCTURE_KINDS = {"truncated": _truncated("primitive"), "empty": _empty, "text": _text,
                   "not periodic": _not_periodic}
PHONOPY_KINDS = {"truncated": _truncated("disp"), "empty": _empty, "text": _text, "config file": _foreign_yaml}

# (stage, argv with {bad} where the bad file goes and {name} for the good files, suffix, kinds)
READERS = [
    ("dataset", "dataset --frames {bad} --out {out}/d.h5", ".h5", FRAMES_KINDS),
    ("compare", "compare {frames} {bad}", ".h5", FRAMES_KINDS),
    ("train", "train --dataset {bad} --out-dir {out}", ".h5", FRAMES_KINDS),
    ("parity", "parity {model} {bad} --out-dir {out}", ".h5", FRAMES_KINDS),
    ("bands", "bands --primitive {primitive} --supercell {supercell} --frames {bad} "
              "--out-dir {out}", ".h5", FRAMES_KINDS),
    ("bands", "bands --primitive {primitive} --supercell {supercell} --frames {frames} "
              "--reference {bad} --out-dir {out}", ".h5", FRAMES_KINDS),
    ("phonons", "phonons --disp {disp} --pristine {bad} --fd {frames} --out-dir {out}", ".h5", FRAMES_KINDS),
    # (tiny sizes, in case a bad file ever slipped through: the benchmark would run)
    ("performance", "performance {model} --primitive {primitive} --pristine {bad} --out {out}/p.json --figure "
                    '{out}/p.png --params {{"performance":{{"sizes":[1,2],"dft_sizes":[1],"band_multiples":[1]}}}}',
     ".h5", FRAMES_KINDS),
    ("linearize", "linearize {model} {bad} --pristine {supercell} --out {out}/l.h5", ".h5", FRAMES_KINDS),
    ("infer", "infer {bad} {supercell} --out {out}/m.h5", ".pt", MODEL_KINDS),
    ("linearize", "linearize {bad} {frames} --pristine {supercell} --out {out}/l.h5", ".pt", MODEL_KINDS),
    ("parity", "parity {bad} {frames} --out-dir {out}", ".pt", MODEL_KINDS),
    ("phonons_ml", "phonons_ml {bad} --disp {disp} --pristine {supercell} --dft-phonons {disp} --out-dir {out}",
     ".pt", MODEL_KINDS),
    ("infer", "infer {model} {bad} --out {out}/m.h5", ".extxyz", STRUCTURE_KINDS),
    ("displace", "displace --structure {bad} --out-dir {out}", ".extxyz", STRUCTURE_KINDS),
    ("linearize", "linearize {model} {frames} --pristine {bad} --out {out}/l.h5", ".extxyz", STRUCTURE_KINDS),
    ("dft", "dft {bad} --out {out}/f.h5", ".extxyz", STRUCTURE_KINDS),
    ("bands", "bands --primitive {bad} --supercell {supercell} --frames {frames} "
              "--out-dir {out}", ".extxyz", STRUCTURE_KINDS),
    ("thermal", "thermal --phonopy {bad} --pristine {supercell} --temperature 300 --purpose infer "
                "--out {out}/s.extxyz", ".yaml", {**PHONOPY_KINDS,
                                                 "displacements without force constants":
                                                     lambda good, path: shutil.copy(good["disp"], path)}),
    ("phonons", "phonons --disp {bad} --pristine {frames} --fd {frames} --out-dir {out}", ".yaml", PHONOPY_KINDS),
    ("phonons_ml", "phonons_ml {model} --disp {bad} --pristine {supercell} --dft-phonons {disp} --out-dir {out}",
     ".yaml", PHONOPY_KINDS),
]
FILE_CASES = [(stage, argv, suffix, kind, make) for stage, argv, suffix, kinds in READERS
              for kind, make in kinds.items()]


@pytest.mark.parametrize("stage, argv, suffix, kind, make", FILE_CASES,
                         ids=[f"{c[0]}-{c[1].split('{bad}')[0].split()[-1]}-{c[3]}" for c in FILE_CASES])
def test_bad_file_is_refused_naming_the_file_and_nothing_is_written(good, tmp_path, stage, argv, suffix,
                                                                    kind, make):
    bad, out = tmp_path / f"bad{suffix}", tmp_path / "out"
    make(good, bad)
    status, err = run_cli(argv.format(bad=bad, out=out, **good).split())
    assert status == 2, err
    assert err.startswith(f"mlepi {stage}: error: ") and str(bad) in err, err
    assert files_under(out) == []


def test_corrupted_training_checkpoint_is_refused_and_kept(good, tmp_path):
    """A damaged checkpoint.pt is neither trusted nor silently replaced: the user decides (--restart)."""
    out = tmp_path / "out"
    out.mkdir()
    ckpt = out / "checkpoint.pt"
    _middle_garbage("model")(good, ckpt)
    before = ckpt.read_bytes()
    status, err = run_cli(["train", "--dataset", good["frames"], "--out-dir", out])
    assert status == 2 and str(ckpt) in err and "--restart" in err, err
    assert files_under(out) == [ckpt.relative_to(out)] and ckpt.read_bytes() == before


def test_inspect_names_the_damaged_file(good, tmp_path):
    for make, suffix in ((_truncated("frames"), ".h5"), (_middle_garbage("model"), ".pt"), (_text, ".json")):
        bad = tmp_path / f"bad{suffix}"
        make(good, bad)
        status, err = run_cli(["inspect", bad])
        assert status == 2 and err.startswith(f"mlepi inspect: error: {bad}"), err


def test_dft_index_outside_the_structure_file_is_refused(good, tmp_path):
    status, err = run_cli(["dft", good["supercell"], "--index", "3", "--out", tmp_path / "out" / "f.h5"])
    assert status == 2 and str(good["supercell"]) in err and "no index 3" in err, err
    assert files_under(tmp_path / "out") == []


def test_accuracy_refuses_test_frames_from_other_dft_settings(good, tmp_path):
    """Errors on test frames computed with another basis or other DFT settings would compare unlike things."""
    other = tmp_path / "other.h5"
    frames = FramesFile(good["frames"])
    write_frames(other, [frames[frames.names[0]]], basis=frames.basis, source="dft",
                 parameters={**TOY_DFT, "xc": "LDA"}, provenance={"config_hash": "synthetic"})
    status, err = run_cli(["accuracy", good["model"], good["frames"], "--test-frames", other,
                           "--out", tmp_path / "out" / "accuracy.json"])
    assert status == 2 and str(other) in err and "DFT parameters" in err, err
    assert files_under(tmp_path / "out") == []
