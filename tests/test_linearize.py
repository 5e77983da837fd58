"""First-order part of predicted Hamiltonians (mlepi.ml.linearize): the autograd derivative against a finite
difference of the same model, the order of the remainder, antithetic symmetry, and the stage end to end."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from mlepi.formats.frames import Frame, FramesFile, FramesFileError, write_frames
from mlepi.ml.infer import predict_frames
from mlepi.ml.linearize import hamiltonian_at, linear_hamiltonian, linearize_frames
from mlepi.ml.model import HedgeNet

from hedgenet_synthetic import TOY_BASIS, bilayer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    return HedgeNet.from_config({"hidden": 16, "n_rbf": 6, "num_interactions": 2}, TOY_BASIS).double().eval()


@pytest.fixture(scope="module")
def reference():
    return bilayer(2, rattle=0.0)


def _reference_frame(model, reference):
    frame = predict_frames(model, [reference], ["x0"], fermi_level=False, overlap="model")[0]
    return frame


def _direction(reference, seed=0, amplitude=0.05):
    return amplitude * np.random.default_rng(seed).standard_normal((len(reference), 3))


def test_derivative_equals_central_difference_of_the_model(model, reference):
    x0_frame = _reference_frame(model, reference)
    u = _direction(reference)
    h0, dh = linear_hamiltonian(model, x0_frame, u)
    step = 1e-4
    x0 = reference.get_positions()
    fd = (hamiltonian_at(model, x0_frame, x0 + step * u) - hamiltonian_at(model, x0_frame, x0 - step * u)).numpy()
    fd /= 2 * step
    assert np.abs(dh).max() > 1e-3  # the check is not passed by a vanishing derivative
    np.testing.assert_allclose(dh, fd, atol=1e-8 * np.abs(dh).max() + 1e-10)
    np.testing.assert_allclose(h0, hamiltonian_at(model, x0_frame, x0).numpy(), atol=1e-12)
    np.testing.assert_allclose(h0, x0_frame.H, atol=1e-12)  # the same H the inference writes at x0


def test_remainder_is_second_order(model, reference):
    """H(tu) − H_lin(tu) = O(t²): halving the displacement quarters the remainder."""
    x0_frame = _reference_frame(model, reference)
    u = _direction(reference, seed=2)
    h0, dh = linear_hamiltonian(model, x0_frame, u)
    x0 = reference.get_positions()
    remainders = [np.abs(hamiltonian_at(model, x0_frame, x0 + t * u).numpy() - (h0 + t * dh)).max()
                  for t in (0.4, 0.2, 0.1)]
    ratios = np.array(remainders[:-1]) / np.array(remainders[1:])
    assert np.all(np.abs(ratios - 4.0) < 0.4), ratios


def test_linear_frames_are_odd_around_x0_and_keep_s(model, reference):
    u = _direction(reference, seed=3)
    plus, minus = reference.copy(), reference.copy()
    plus.positions += u
    minus.positions -= u
    full = predict_frames(model, [plus, minus], ["p", "m"], fermi_level=False, overlap="model")
    full[0].info["temperature_K"] = 300.0
    linear = linearize_frames(model, full, reference)
    # The two frames have their own block edges; compare on the ones both hold.
    keys = [{(int(i), int(j), *map(int, r)): e for e, (i, j, r) in enumerate(zip(*f.edge_index, f.cell_shift))}
            for f in full]
    common = sorted(set(keys[0]) & set(keys[1]))
    h0 = _reference_frame(model, reference)
    keys0 = {(int(i), int(j), *map(int, r)): e for e, (i, j, r) in enumerate(zip(*h0.edge_index, h0.cell_shift))}
    common = [k for k in common if k in keys0]
    assert len(common) > 100
    total = np.array([linear[0].H[keys[0][k]] + linear[1].H[keys[1][k]] for k in common])
    np.testing.assert_allclose(total, 2 * np.array([h0.H[keys0[k]] for k in common]), atol=1e-12)
    assert np.abs(linear[0].H - full[0].H).max() > 1e-6  # the two orders do differ
    np.testing.assert_array_equal(linear[0].S, full[0].S)
    assert linear[0].energy is None and linear[0].forces is None
    assert linear[0].info == {"temperature_K": 300.0, "overlap": "model", "epi_order": "linear"}


def test_a_wrapped_or_foreign_frame_is_refused(model, reference):
    moved = reference.copy()
    moved.positions[0] += moved.cell[0]  # an atom wrapped by a lattice vector
    frame = predict_frames(model, [moved], ["w"], fermi_level=False, overlap="model")[0]
    with pytest.raises(FramesFileError, match="wrapped positions"):
        linearize_frames(model, [frame], reference, "infer.h5")
    other = bilayer(1)
    frame = predict_frames(model, [other], ["o"], fermi_level=False, overlap="model")[0]
    with pytest.raises(FramesFileError, match="other atoms than the reference"):
        linearize_frames(model, [frame], reference, "infer.h5")


def test_stage_end_to_end(model, reference, tmp_path):
    from ase.io import write

    from mlepi.formats.structures import read_structure

    model.save(tmp_path / "model.pt")
    write(tmp_path / "pristine.extxyz", reference)
    u = _direction(reference, seed=4)
    displaced = reference.copy()
    displaced.positions += u
    frames = predict_frames(model, [displaced], ["s0"], fermi_level=False, overlap="model")
    write_frames(tmp_path / "infer.h5", frames, basis=TOY_BASIS, source="hedgenet", parameters={}, provenance={})
    subprocess.run([sys.executable, "-m", "mlepi.cli", "linearize", str(tmp_path / "model.pt"),
                    str(tmp_path / "infer.h5"), "--pristine", str(tmp_path / "pristine.extxyz"),
                    "--out", str(tmp_path / "linear.h5")], check=True, capture_output=True)
    out = FramesFile(tmp_path / "linear.h5")
    assert out.parameters["linearize"]["epi_order"] == "linear"
    (frame,) = list(out)
    # x0 as the command read it: extxyz keeps positions to ~5e-9 Å, enough to move H by more than 1e-10 eV.
    x0 = read_structure(tmp_path / "pristine.extxyz")
    x0_frame = Frame.from_atoms("x0", x0)
    x0_frame.edge_index, x0_frame.cell_shift = frames[0].edge_index, frames[0].cell_shift
    h0, dh = linear_hamiltonian(model, x0_frame, displaced.positions - x0.positions)
    np.testing.assert_allclose(frame.H, h0 + dh, atol=1e-10)
