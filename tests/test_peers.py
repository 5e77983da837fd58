"""Stage ``peers``: MACE's sets follow HedgeNet's split, and a real (tiny) MACE training gives a calculator whose
forces are minus the gradient of its energy.

The labels come from ASE's EMT (it has carbon parameters): a real potential, cheap, so the test checks the
plumbing and MACE's physics (conservative forces by finite differences), not its accuracy, which
``benchmarks/peers.py`` measures on the DFT frames.
"""

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.calculators.emt import EMT

from mlepi.evaluation import peers
from mlepi.formats import provenance
from mlepi.formats.frames import FramesFile, Frame, write_frames
from mlepi.geometry.layers import build_bilayer

from bilayer_tb import BASIS_PZ

pytest.importorskip("mace", reason="mace-torch is in requirements.txt; without it only `mlepi peers` is missing")


def emt_frame(name: str, seed: int) -> Frame:
    atoms = build_bilayer("AB", vacuum=8.0)
    atoms.rattle(0.05, seed=seed)
    atoms.calc = EMT()
    return Frame.from_atoms(name, atoms, energy=float(atoms.get_potential_energy()),
                            forces=atoms.get_forces().copy())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("peers") / "dataset.h5"
    write_frames(path, [emt_frame(f"f{k}", k) for k in range(5)], basis=BASIS_PZ, source="dft",
                 parameters={"basis": "pz"}, provenance=provenance.record())
    return FramesFile(path)


def test_sets_follow_the_split_with_maces_keys(dataset, tmp_path):
    test = [emt_frame("t0", 99)]
    paths = peers.write_sets(dataset, ["f1", "f3"], test, tmp_path)
    names = {k: [a.info["config_name"] for a in ase.io.read(p, ":")] for k, p in paths.items()}
    assert names == {"train": ["f0", "f2", "f4"], "valid": ["f1", "f3"], "test": ["t0"]}
    first = ase.io.read(paths["valid"], 0)
    assert first.info["REF_energy"] == pytest.approx(dataset["f1"].energy, abs=1e-7)
    assert np.allclose(first.arrays["REF_forces"], dataset["f1"].forces, rtol=0, atol=1e-7)  # %.8f text
    with pytest.raises(peers.PeersError, match=r"validation frames \['nope'\] are not in the dataset"):
        peers.write_sets(dataset, ["nope"], [], tmp_path)


def test_a_tiny_mace_training_gives_conservative_forces(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as Snakemake passes them: the trainer runs in its own folder
    out = Path("peers")
    out.mkdir()
    sets = peers.write_sets(dataset, ["f1"], [emt_frame("t0", 99)], out)
    cfg = {"mace_channels": 8, "mace_max_L": 1, "mace_r_max_A": 4.0, "mace_epochs": 2, "mace_batch_size": 2,
           "seed": 0}
    model, seconds, resumed = peers.train_mace(sets, out, cfg, "cpu")
    assert model.is_file() and seconds > 0 and not resumed
    calc = peers.mace_calculator(model, "cpu")
    atoms = dataset["f0"].to_atoms()
    atoms.calc = calc
    forces = atoms.get_forces()
    h, (i, axis) = 1e-4, (3, 2)
    energies = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[i, axis] += sign * h
        moved.calc = calc
        energies.append(moved.get_potential_energy())
    assert forces[i, axis] == pytest.approx(-(energies[0] - energies[1]) / (2 * h), abs=1e-5)
    errors = peers.frame_errors(calc, [dataset["f1"]])
    assert errors["n_frames"] == 1 and np.isfinite(errors["force_mae_meV_per_A"])
