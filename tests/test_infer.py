"""Stage infer / command predict (mlepi.ml.infer): model frames with blocks, Fermi level and carried info."""

import ase.io
import numpy as np
import pytest
import torch

from mlepi.electrons import tb
from mlepi.formats.frames import FramesFile
from mlepi.geometry.neighbors import block_edges
from mlepi.ml import completion, infer
from mlepi.ml.model import HedgeNet

from hedgenet_synthetic import TOY_BASIS, TOY_DFT, bilayer

torch.set_num_threads(1)


@pytest.fixture()
def model_path(tmp_path):
    torch.manual_seed(0)
    model = HedgeNet.from_config({"hidden": 8, "n_rbf": 4, "num_interactions": 1}, TOY_BASIS)
    # A physically sane starting point: on-site s below p, so S stays positive definite and bands are ordered.
    model.set_standardisation({"H_onsite_mean": np.diag([-8.0, 0.0, 0.0, 0.0])[None], "H_scale": 0.5,
                               "S_scale": 0.02, "energy_shift": [-9.0], "energy_scale": 0.3})
    path = tmp_path / "model.pt"
    model.save(path, dft_parameters=TOY_DFT, kpoint_length=KPOINT_LENGTH)
    return path


KPOINT_LENGTH = [4 * 2.46, 4 * 2.46]  # TOY_DFT's 4 k points per primitive lattice vector of 2.46 Å


def test_occupation_settings_scale_the_mesh_with_the_cell():
    metadata = {"dft_parameters": TOY_DFT, "kpoint_length": KPOINT_LENGTH}
    assert completion.occupation_settings(metadata, bilayer(2).cell) == ((2, 2, 1), True, 0.1)
    assert completion.occupation_settings(metadata, bilayer(1).cell) == ((4, 4, 1), True, 0.1)
    gpaw_style = {"dft_parameters": {"kpts": {"size": [3, 3, 1], "gamma": False},
                                     "occupations": {"name": "fermi-dirac", "width": 0.05}}}
    assert completion.occupation_settings(gpaw_style, bilayer(2).cell) == ((3, 3, 1), False, 0.05)
    assert completion.occupation_settings({}, bilayer(2).cell) == (None, True, None)
    # Gamma-centred even mesh contains Gamma; uniform spacing 1/n
    k = completion.kpoint_mesh((2, 2, 1))
    assert any(np.allclose(p, 0) for p in k) and len(k) == 4


def test_run_writes_model_frames_with_info_and_fermi_level(model_path, tmp_path):
    structures = []
    for k in range(2):
        atoms = bilayer(2, rattle=0.03, seed=k)
        atoms.info.update({"temperature_K": 300.0, "seed": 7, "sample_index": k})
        structures.append(atoms)
    ase.io.write(tmp_path / "samples.extxyz", structures, format="extxyz")
    out_path = tmp_path / "predicted.h5"
    infer.run(model_path, tmp_path / "samples.extxyz", out_path, overlap="model")  # synthetic basis: no GPAW

    ff = FramesFile(out_path)
    assert ff.source == "hedgenet" and ff.basis == TOY_BASIS and len(ff) == 2
    assert ff.parameters["kpts"] == [2, 2, 1] and ff.parameters["width"] == 0.1
    for k, frame in enumerate(ff):
        assert frame.info == {"temperature_K": 300.0, "seed": 7, "sample_index": k, "fermi_kpts": [2, 2, 1],
                              "fermi_width": 0.1, "overlap": "model"}
        edge_index, shift = block_edges(frame.numbers, frame.positions, frame.cell, frame.pbc, TOY_BASIS)
        assert np.array_equal(frame.edge_index, edge_index) and np.array_equal(frame.cell_shift, shift)
        assert frame.H.shape == (edge_index.shape[1], 4, 4) and frame.forces.shape == (16, 3)
        # Independent check: the Fermi level puts 4 electrons per carbon in the predicted bands.
        bands = tb.eigenvalues(frame, TOY_BASIS, completion.kpoint_mesh((2, 2, 1)))
        occupation = 2 / (1 + np.exp((bands - frame.fermi_level) / 0.1))
        assert occupation.sum() / len(bands) == pytest.approx(4 * 16, abs=1e-6)
    assert np.isfinite(ff[0].energy)


def test_predict_needs_layers_and_occupation_settings(model_path):
    model = HedgeNet.load(model_path)
    atoms = bilayer(2)
    frames = infer.predict_frames(model, [atoms], ["a"], overlap="model", fermi_level=False)
    assert frames[0].fermi_level is None and frames[0].S is not None
    model.metadata = {}
    with pytest.raises(ValueError, match="pass kpts= and width="):
        infer.predict_frames(model, [atoms], ["a"], overlap="model")
    del atoms.arrays["layer"]
    with pytest.raises(ValueError, match="layer"):
        infer.predict_frames(model, [atoms], ["a"], overlap="model", fermi_level=False)


def test_batched_prediction_equals_one_structure_at_a_time(model_path):
    """Structures of different sizes and cells share forward passes; each still gets its own graph's answer
    (no edge between graphs, energies summed per graph), in the order given."""
    model = HedgeNet.load(model_path)
    structures = [bilayer(n, rattle=0.05, seed=k) for k, n in enumerate((2, 1, 3, 2))]  # 16, 4, 36, 16 atoms
    names = [f"s{k}" for k in range(len(structures))]
    assert [len(run) for run in infer.batches(list(zip(structures, names)), 40)] == [2, 1, 1]
    done = []
    batched = infer.predict_frames(model, structures, names, overlap="model", fermi_level=False,
                                   dtype=torch.float64, batch_atoms=40, progress=lambda f: done.append(f.name))
    assert done == names
    for atoms, name, frame in zip(structures, names, batched):
        alone = infer.predict_frames(model, [atoms], [name], overlap="model", fermi_level=False,
                                     dtype=torch.float64)[0]
        assert frame.name == name and len(frame.numbers) == len(atoms)
        assert frame.energy == pytest.approx(alone.energy, rel=1e-12)
        for key in ("forces", "H", "S"):
            np.testing.assert_allclose(getattr(frame, key), getattr(alone, key), rtol=0, atol=1e-12, err_msg=key)


def test_a_device_torch_cannot_use_is_a_user_error(model_path, tmp_path, capsys):
    from mlepi.cli import main
    from mlepi.formats.torch_files import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        ase.io.write(tmp_path / "one.extxyz", bilayer(1), format="extxyz")
        assert main(["infer", str(model_path), str(tmp_path / "one.extxyz"), "--out", str(tmp_path / "x.h5"),
                     "--device", "cuda"]) == 2
        assert "device 'cuda': torch sees no GPU" in capsys.readouterr().err
        assert not (tmp_path / "x.h5").exists()


def test_worker_processes_give_the_same_frames(model_path):
    """S and the Fermi level computed in two worker processes: the same frames, in the same order."""
    model = HedgeNet.load(model_path)
    structures = [bilayer(2, rattle=0.04, seed=k) for k in range(3)]
    names = ["a", "b", "c"]
    serial = infer.predict_frames(model, structures, names, overlap="model")
    parallel = infer.predict_frames(model, structures, names, overlap="model", workers=2)
    assert [f.name for f in parallel] == names
    for one, other in zip(serial, parallel):
        assert other.fermi_level == one.fermi_level and other.info == one.info
        for key in ("forces", "H", "S"):
            np.testing.assert_array_equal(getattr(other, key), getattr(one, key), err_msg=key)
