"""Stage ``linearize``: the first-order (linear electron-phonon) part of predicted Hamiltonians.

For a displaced supercell x = x0 + u, HedgeNet gives H(u). Its expansion around the undisplaced supercell x0,

    H(u) = H(0) + (dH/du) . u + 1/2 u . (d2H/du2) . u + ...,

separates the orders of the electron-phonon interaction: the linear term alone carries the first-order EPI
(the g matrix elements of linear response), everything beyond it the second and higher orders. This stage
writes, for every frame of an ``infer`` file, the same frame with

    H_lin(u) = H(0) + (dH/du) . u

on the same block edges, the directional derivative (dH/du) . u computed by autograd of the model at x0 (a
Jacobian-vector product; the message-passing graph is the one of x0). S stays the exact overlap S(u) of the
displaced atoms (GPAW's two-centre integrals, as in ``infer``): the basis moves rigidly with the atoms, so
S(u) is geometry, not a learned coupling, and the two band analyses (full H(u), linear H_lin(u)) differ only
in the order of H. The band analysis of both gives the share of the thermal renormalization that comes from
the second and higher orders (``mlepi renormalization``; ``docs/bands.md``).

The model is evaluated in float64 whatever precision it was trained in: a derivative by a float32 network
is noisy at the 1e-4 relative level, and the check against a finite difference of the model needs float64.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import torch
from tqdm import tqdm

from mlepi.formats.frames import Frame, FramesFile, FramesFileError, write_frames
from mlepi.formats.provenance import record
from mlepi.formats.structures import read_structure
from mlepi.ml.graph import frame_to_data
from mlepi.ml.infer import check_committee, h_spread_meV
from mlepi.ml.memory import keep_freed_memory
from mlepi.ml.model import HedgeNet

MAX_DISPLACEMENT_A = 1.0  # a larger |u| means a wrapped atom or the wrong reference


def displacement(frame: Frame, reference, source: str = "") -> np.ndarray:
    """u = x − x0 (Å, ``[n_atoms, 3]``) of a frame against the undisplaced supercell ``reference`` (ase.Atoms)."""
    if len(reference) != frame.n_atoms or not np.array_equal(reference.numbers, frame.numbers):
        raise FramesFileError(f"{source}: frame {frame.name!r} has other atoms than the reference supercell "
                              f"({frame.n_atoms} vs {len(reference)} atoms); give the pristine supercell the "
                              "samples were displaced from")
    if np.abs(np.asarray(frame.cell) - np.asarray(reference.cell)).max() > 1e-6:
        raise FramesFileError(f"{source}: frame {frame.name!r} has another cell than the reference supercell")
    u = np.asarray(frame.positions) - reference.get_positions()
    largest = float(np.linalg.norm(u, axis=1).max())
    if largest > MAX_DISPLACEMENT_A:
        raise FramesFileError(f"{source}: frame {frame.name!r}: an atom sits {largest:.2f} Å from its reference "
                              f"site (more than {MAX_DISPLACEMENT_A} Å): wrapped positions or the wrong "
                              "reference; linearize needs the positions as the thermal stage wrote them")
    return u


def _graph(model: HedgeNet, reference_frame: Frame):
    cfg = model.config
    return frame_to_data(reference_frame, model.basis, cfg["cutoff_intra"], cfg["cutoff_inter"], targets=False)


def hamiltonian_at(model: HedgeNet, reference_frame: Frame, positions) -> torch.Tensor:
    """H (eV) on ``reference_frame``'s block edges with the atoms at ``positions`` and x0's graph (float64).

    The graph (message-passing edges, block edges) is fixed to the one of the reference, so H is a smooth
    function of the positions: this is the function whose derivative :func:`linear_hamiltonian` takes.
    """
    data = _graph(model, reference_frame)
    data.pos = torch.as_tensor(positions, dtype=torch.float64)
    with torch.no_grad():
        return model(data, forces=False, overlap=False)["H"]


def linear_hamiltonian(model: HedgeNet, reference_frame: Frame, u) -> tuple[np.ndarray, np.ndarray]:
    """(H(0), (dH/du) . u) in eV on ``reference_frame``'s block edges, by autograd at the reference positions.

    ``model`` must be in float64 (:func:`run` loads it so). The derivative is a Jacobian-vector product
    (``torch.autograd.functional.jvp``, two reverse passes), so its cost is a few forward evaluations, not one
    per atom.
    """
    data = _graph(model, reference_frame)
    x0 = torch.as_tensor(reference_frame.positions, dtype=torch.float64)
    direction = torch.as_tensor(u, dtype=torch.float64)

    def h_of(positions):
        data.pos = positions
        return model(data, forces=False, overlap=False)["H"]

    with torch.enable_grad():
        h0, dh = torch.autograd.functional.jvp(h_of, x0.requires_grad_(True), direction)
    return h0.detach().numpy(), dh.detach().numpy()


def linearize_frames(model: HedgeNet | list[HedgeNet], frames, reference, source: str = "") -> list[Frame]:
    """Each frame with H replaced by H(0) + (dH/du) . u on its own block edges (S, geometry and info kept).

    ``model``: the model that predicted the frames, or the committee (a list): then each member is
    linearized, H is their mean (the linearization of the committee's mean H) and ``H_committee`` theirs, so
    that the full and the linear analyses compare one and the same model. Energy and forces are dropped (they
    are the full model's, not linear ones), with their committee spreads; ``info['epi_order']`` is
    ``'linear'``. ``reference``: the undisplaced supercell (ase.Atoms with ``arrays['layer']``).
    """
    members = list(model) if isinstance(model, (list, tuple)) else [model]
    out = []
    for frame in frames:
        if frame.H is None or frame.edge_index is None:
            raise FramesFileError(f"{source}: frame {frame.name!r} has no H blocks; give an `mlepi infer` output")
        u = displacement(frame, reference, source)
        at_x0 = Frame.from_atoms(frame.name, reference)
        at_x0.edge_index, at_x0.cell_shift = frame.edge_index, frame.cell_shift
        n = frame.H.shape[1]
        per_member = np.array([sum(linear_hamiltonian(member, at_x0, u))[:, :n, :n] for member in members])
        linear = copy.copy(frame)
        linear.H = per_member.mean(axis=0)
        linear.energy = linear.forces = linear.energy_committee = linear.forces_committee = None
        linear.H_committee = per_member if len(members) > 1 else None
        info = {k: v for k, v in frame.info.items() if k not in ("energy_spread_meV_per_atom",
                                                                  "forces_spread_meV_per_A", "H_spread_meV")}
        if len(members) > 1:
            info["H_spread_meV"] = h_spread_meV(per_member)
        linear.info = {**info, "epi_order": "linear"}
        out.append(linear)
    return out


def run(model_path, frames_path, pristine_path, out_path) -> None:
    """Linearize every frame of an ``infer`` output around the pristine supercell; write a frames file.

    ``model_path``: the model.pt that predicted the frames, or the committee's (a list, as given to infer).
    """
    keep_freed_memory()  # one Jacobian-vector product per frame: reuse the memory of the last (mlepi.ml.memory)
    paths = [model_path] if isinstance(model_path, (str, os.PathLike)) else list(model_path)
    members = [HedgeNet.load(path).double() for path in paths]
    check_committee(members, paths)
    model = members[0]
    frames_file = FramesFile(frames_path)
    if frames_file.basis["orbitals"] != model.basis["orbitals"]:
        raise FramesFileError(f"{frames_path}: basis {frames_file.basis.get('name')} is not the model's "
                              f"({model.basis.get('name')}); give the frames this model predicted")
    reference = read_structure(pristine_path)
    frames = [linearize_frames(members, [frame], reference, str(frames_path))[0]
              for frame in tqdm(list(frames_file), desc="linearize", unit="structure")]
    settings = {"model_path": str(paths[0]), "committee": [str(path) for path in paths],
                "frames": str(frames_path), "pristine": str(pristine_path),
                "epi_order": "linear", "dtype": "float64"}
    write_frames(out_path, frames, basis=frames_file.basis, source="hedgenet",
                 parameters={**frames_file.parameters, "linearize": settings},
                 provenance=record(settings))
