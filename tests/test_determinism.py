"""Determinism: the same config and seed give bit-identical files (displacements, thermal samples, dataset),
another seed other samples, and every output that used randomness records its seed.

The whole-workflow counterpart (every data file of two runs bitwise equal) is in ``test_faults.py``.
"""

import numpy as np
import phonopy
import pytest
from test_thermal import spring_force_constants

from mlepi import config
from mlepi.formats import dataset, provenance
from mlepi.formats.frames import write_frames
from mlepi.formats.structures import read_structure, read_structures, write_structure
from mlepi.vibrations import displace, thermal

from bilayer_tb import bilayer_primitive
from hedgenet_synthetic import TOY_BASIS, TOY_DFT, synthetic_frames


def same_files(a, b):
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and names
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


@pytest.fixture(scope="module")
def displaced(tmp_path_factory):
    d = tmp_path_factory.mktemp("displace")
    write_structure(d / "primitive.extxyz", bilayer_primitive())
    cfg = config.validate({"system": {"supercell": [2, 2]}, "thermal": {"infer_samples": 6}})
    for run in ("a", "b"):
        displace.run(d / "primitive.extxyz", d / run, cfg)
    # Force constants of a spring network on phonopy's own supercell: a phonopy_params.yaml as the phonons
    # stage writes it, without DFT.
    phonon = phonopy.load(d / "a" / "phonopy_disp.yaml", produce_fc=False, log_level=0)
    phonon.force_constants = spring_force_constants(read_structure(d / "a" / "pristine.extxyz"))
    phonon.save(d / "phonopy_params.yaml", settings={"force_constants": True})
    return d, cfg


def test_displacements_are_bit_identical(displaced):
    d, _ = displaced
    assert same_files(d / "a", d / "b")


def test_thermal_samples_are_bit_identical_for_one_seed_and_differ_for_another(displaced):
    d, cfg = displaced
    args = (d / "phonopy_params.yaml", d / "a" / "pristine.extxyz")
    for run in ("a", "b"):
        thermal.run(*args, 300.0, "infer", d / f"T300_{run}" / "samples.extxyz", cfg)
    assert same_files(d / "T300_a", d / "T300_b")
    other = {**cfg, "thermal": {**cfg["thermal"], "seed": cfg["thermal"]["seed"] + 1}}
    thermal.run(*args, 300.0, "infer", d / "T300_c" / "samples.extxyz", other)
    a, c = (read_structures(d / f"T300_{run}" / "samples.extxyz") for run in ("a", "c"))
    assert all(np.abs(x.positions - y.positions).max() > 1e-3 for x, y in zip(a, c))
    # The seed is in every sample and in the file's provenance record.
    assert {s.info["seed"] for s in a} == {cfg["thermal"]["seed"]}
    assert provenance.read(d / "T300_c" / "samples.extxyz")["provenance"]["seed"] == cfg["thermal"]["seed"] + 1


def test_dataset_is_bit_identical(tmp_path):
    frames = [tmp_path / f"f{k}.h5" for k in range(2)]
    for k, path in enumerate(frames):
        frame = synthetic_frames(1, seed=k)[0]
        frame.name = f"s{k}"
        write_frames(path, [frame], basis=TOY_BASIS, source="dft", parameters=TOY_DFT, provenance={})
    for run in ("a", "b"):
        dataset.run(frames, tmp_path / run / "dataset.h5", extxyz_path=tmp_path / run / "dataset.extxyz")
    assert same_files(tmp_path / "a", tmp_path / "b")


def test_the_test_set_is_independent_thermal_draws_of_its_own_seed(displaced):
    """purpose test: no antithetic pairs, the thermal distribution (the sampler's analytic covariance), its own
    seed (redrawing the training samples leaves it put)."""
    d, cfg = displaced
    args = (d / "phonopy_params.yaml", d / "a" / "pristine.extxyz")
    n = 200
    wide = {**cfg, "thermal": {**cfg["thermal"], "test_samples": n}}
    paths = thermal.run(*args, 300.0, "test", d / "test_a", wide)
    assert [p.name for p in paths] == [f"s{k:03d}.extxyz" for k in range(n)]
    pristine = read_structure(args[1]).positions
    u = np.array([read_structure(p).positions - pristine for p in paths])
    assert not any(np.allclose(u[k + 1], -u[k]) for k in range(0, n, 2)), "the test set holds mirror pairs"
    sampler = thermal.sampler_from_phonopy(args[0], cfg["thermal"])
    msd_analytic = np.diag(sampler.covariance(300.0)).reshape(-1, 3).mean(axis=0)
    assert np.mean(u ** 2, axis=(0, 1)) == pytest.approx(msd_analytic, rel=0.15)
    info = read_structure(paths[0]).info
    assert info["purpose"] == "test" and info["seed"] == cfg["thermal"]["test_seed"] and not info["antithetic"]

    few = {**cfg, "thermal": {**cfg["thermal"], "test_samples": 2}}
    thermal.run(*args, 300.0, "test", d / "test_b", few)
    thermal.run(*args, 300.0, "test", d / "test_c", {**few, "thermal": {**few["thermal"], "seed": 99}})
    assert same_files(d / "test_b", d / "test_c")
    thermal.run(*args, 300.0, "test", d / "test_d", {**few, "thermal": {**few["thermal"], "test_seed": 99}})
    assert not same_files(d / "test_b", d / "test_d")


def test_candidates_of_each_round_are_a_stream_of_their_own(displaced):
    d, cfg = displaced
    args = (d / "phonopy_params.yaml", d / "a" / "pristine.extxyz")
    cfg = {**cfg, "active": {"candidates": 3}}
    for name, k in (("r1a", 1), ("r1b", 1), ("r2", 2)):
        thermal.run(*args, 300.0, "candidates", d / name / "c.extxyz", cfg, round_index=k)
    assert same_files(d / "r1a", d / "r1b")
    r1, r2 = (read_structures(d / name / "c.extxyz") for name in ("r1a", "r2"))
    assert len(r1) == 3 and all(np.abs(a.positions - b.positions).max() > 1e-3 for a, b in zip(r1, r2))
    assert {a.info["active_round"] for a in r2} == {2}
    infer = read_structures(thermal.run(*args, 300.0, "infer", d / "inf" / "s.extxyz", cfg)[0])
    assert np.abs(infer[0].positions - r1[0].positions).max() > 1e-3  # not the inference samples
    with pytest.raises(config.ConfigError, match="round"):
        thermal.run(*args, 300.0, "candidates", d / "none.extxyz", cfg)
