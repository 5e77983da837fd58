"""Structure files between stages: extended XYZ with a per-atom ``layer`` array and schema/provenance info.

Extended XYZ is what users already have and what phonopy, ASE, MACE and NequIP read. Each frame's info
carries ``schema='mlepi.structure'``, ``schema_version``, ``kind`` (``relaxed``, ``pristine``,
``finite_difference``, ``thermal``) and, where randomness was used, ``seed``, ``temperature_K`` and
``sample_index``. Provenance is stored as a JSON string in ``info['provenance']``.
"""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np

from mlepi.errors import MlepiError
from mlepi.formats.provenance import atomic_path
from mlepi.geometry.layers import assign_layers

SCHEMA = "mlepi.structure"
SCHEMA_VERSION = 1


class StructureFileError(MlepiError, ValueError):
    """A structure file is missing, unreadable or lacks what a stage needs."""


def _tag(atoms, info: dict):
    atoms = atoms.copy()
    atoms.info = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION}
    for key, value in info.items():
        value = json.dumps(value, default=str) if isinstance(value, (dict, list)) else value
        # ASE's extxyz reader drops one level of backslashes (JSON escapes them, a command line may hold them):
        # doubled here, they read back as written (tests/test_provenance.py).
        atoms.info[key] = value.replace("\\", "\\\\") if isinstance(value, str) else value
    return atoms


def write_structures(path, frames: list, infos: list[dict] | None = None) -> None:
    """Write frames (``ase.Atoms`` with a ``layer`` array) to one extended-XYZ file, atomically."""
    infos = infos or [{} for _ in frames]
    tagged = [_tag(atoms, info) for atoms, info in zip(frames, infos)]
    with atomic_path(path) as tmp:
        ase.io.write(tmp, tagged, format="extxyz")


def write_structure(path, atoms, **info) -> None:
    """Write one structure with info keys (e.g. ``kind``, ``seed``, ``provenance``)."""
    write_structures(path, [atoms], [info])


def read_structures(path) -> list:
    """All frames of an extended-XYZ file; frames without a ``layer`` array get one by z clustering."""
    path = Path(path)
    if not path.exists():
        raise StructureFileError(f"{path}: no such structure file")
    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as err:  # ase raises many types for malformed files
        raise StructureFileError(f"{path}: cannot read as extended XYZ ({err}); regenerate it with the stage "
                                 "that writes it, or check the file you gave") from None
    if not frames:
        raise StructureFileError(f"{path}: contains no structures")
    for atoms in frames:
        if "layer" not in atoms.arrays:
            atoms.set_array("layer", assign_layers(atoms))
        atoms.arrays["layer"] = np.asarray(atoms.arrays["layer"], dtype=int)
        if not atoms.pbc[:2].all():
            raise StructureFileError(f"{path}: a layered structure must be periodic in-plane (pbc x, y)")
    return frames


def read_structure(path, index: int | None = None):
    """The single structure of ``path`` (an error if there are several), or structure ``index`` of several."""
    frames = read_structures(path)
    if index is not None:
        if not 0 <= index < len(frames):
            raise StructureFileError(f"{path}: holds {len(frames)} structures, no index {index}")
        return frames[index]
    if len(frames) != 1:
        raise StructureFileError(f"{path}: expected one structure, found {len(frames)}")
    return frames[0]
