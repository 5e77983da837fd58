"""Stage ``dataset``: all DFT frames of a system -> one ``dataset.h5`` (frames schema, docs/data.md).

Frames must share the basis and the DFT parameters: a dataset mixing, say, ``sz(dzp)`` and ``dzp`` frames
would train a model on two different Hamiltonians, so that is an error naming the offending file.
The same frames are also exported as extended XYZ with energies and forces (``--extxyz``), the format
MACE and NequIP train on.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
from ase.calculators.singlepoint import SinglePointCalculator

from mlepi.formats import provenance
from mlepi.formats.frames import FramesFile, FramesFileError, write_frames


def collect(paths) -> tuple[list, dict, dict]:
    """Frames of all files, with the basis and DFT parameters they must share."""
    frames, basis, parameters = [], None, None
    for path in paths:
        source = FramesFile(path)
        if source.source != "dft":
            raise FramesFileError(f"{path}: source is {source.source!r}; a training dataset takes DFT frames")
        if basis is None:
            basis, parameters, first = source.basis, source.parameters, path
        elif source.basis != basis or source.parameters != parameters:
            raise FramesFileError(f"{path}: basis or DFT parameters differ from {first}; rerun the DFT "
                                  "stage so that all frames use one setting")
        frames.extend(source)
    if not frames:
        raise FramesFileError("no DFT frames given to the dataset stage")
    return frames, basis, parameters


def write_extxyz(path, frames) -> None:
    """Energies (eV) and forces (eV/A) as extended XYZ, one structure per frame, with ``layer``."""
    images = []
    for frame in frames:
        atoms = frame.to_atoms()
        atoms.calc = SinglePointCalculator(atoms, energy=frame.energy, forces=frame.forces)
        atoms.info["config_name"] = frame.name
        atoms.info.update({k: v for k, v in frame.info.items() if isinstance(v, (int, float, str))})
        images.append(atoms)
    with provenance.atomic_path(path) as tmp:
        ase.io.write(tmp, images, format="extxyz")


def run(frame_paths, out_path, extxyz_path=None) -> int:
    """Merge DFT frames files into ``out_path``; return the number of frames."""
    frames, basis, parameters = collect([Path(p) for p in frame_paths])
    record = provenance.record(parameters, inputs=[str(p) for p in frame_paths])
    write_frames(out_path, frames, basis=basis, source="dft", parameters=parameters, provenance=record)
    if extxyz_path is not None:
        write_extxyz(extxyz_path, frames)
    return len(frames)

