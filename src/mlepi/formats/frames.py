"""The frames file: one HDF5 layout for every stage that writes structures with energies, forces and H/S blocks.

``mlepi dft`` writes a file with one frame, ``mlepi dataset`` merges frames into one file, ``mlepi predict``
and ``mlepi infer`` write model frames in the same layout, so that ``mlepi compare`` and the band analysis
read DFT and ML results alike. The full field list with shapes and units is in ``docs/data.md``.

Block convention (GPAW's LCAO phase): for edge e = (i, j, R) with R = ``cell_shift[e]`` in lattice vectors,

    H[e, a, b] = < phi_{i,a}(r - x_i) | H | phi_{j,b}(r - x_j - R @ cell) >      (eV)
    H_ij(k)    = sum_e exp(+2 pi i k . R) H[e]                                    (k reduced)

Orbitals a, b run over the basis functions of the atom's species in the order of ``basis['orbitals'][Z]``
(each entry ``[label, l]``), each expanded over m in GPAW's real-spherical-harmonic order
(l=1: y, z, x; l=2: xy, yz, 3z^2-r^2, zx, x^2-y^2). Blocks are zero-padded to the largest orbital count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from ase import Atoms

from mlepi.errors import MlepiError
from mlepi.formats.provenance import atomic_path

SCHEMA = "mlepi.frames"
SCHEMA_VERSION = 1
UNITS = {"energy": "eV", "length": "Angstrom", "force": "eV/Angstrom", "H": "eV", "S": "1",
         "fermi_level": "eV"}
_REQUIRED_ROOT = ("schema", "schema_version", "units", "basis", "source", "parameters", "provenance",
                  "frame_names")
_GEOMETRY = ("positions", "cell", "pbc", "numbers", "layer")
_OPTIONAL = ("energy", "forces", "fermi_level", "edge_index", "cell_shift", "H", "S",
             "energy_committee", "forces_committee", "H_committee")
_BLOCKS = ("H", "S", "H_committee")  # compressed


class FramesFileError(MlepiError, ValueError):
    """A frames file is missing, foreign, of another schema version, or lacks a field."""


@dataclass
class Frame:
    """One atomic configuration with its DFT or model results (house units: eV, Angstrom)."""

    name: str
    positions: np.ndarray  # [n_atoms, 3] Angstrom (Cartesian)
    cell: np.ndarray  # [3, 3] Angstrom, rows are lattice vectors
    numbers: np.ndarray  # [n_atoms] atomic numbers
    layer: np.ndarray  # [n_atoms] layer index from the unperturbed structure
    pbc: np.ndarray = field(default_factory=lambda: np.array([True, True, True]))  # [3]
    energy: float | None = None  # eV (total, incl. dispersion correction)
    forces: np.ndarray | None = None  # [n_atoms, 3] eV/Angstrom
    fermi_level: float | None = None  # eV
    edge_index: np.ndarray | None = None  # [2, n_edges] (i, j)
    cell_shift: np.ndarray | None = None  # [n_edges, 3] integer R of atom j
    H: np.ndarray | None = None  # [n_edges, n_orb_max, n_orb_max] eV
    S: np.ndarray | None = None  # [n_edges, n_orb_max, n_orb_max] dimensionless
    info: dict = field(default_factory=dict)  # temperature_K, seed, sample_index, ... (JSON-serialisable)
    # A committee's members (mlepi infer with train.committee > 1); energy, forces and H above are their mean.
    energy_committee: np.ndarray | None = None  # [n_members] eV
    forces_committee: np.ndarray | None = None  # [n_members, n_atoms, 3] eV/Angstrom
    H_committee: np.ndarray | None = None  # [n_members, n_edges, n_orb_max, n_orb_max] eV

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    def to_atoms(self):
        """The geometry as an ``ase.Atoms`` (layer index in ``atoms.arrays['layer']``)."""
        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        atoms.set_array("layer", np.asarray(self.layer, dtype=int))
        return atoms

    @classmethod
    def from_atoms(cls, name: str, atoms, **results) -> "Frame":
        """Frame from an ``ase.Atoms`` that carries ``arrays['layer']``; results as keyword arguments."""
        if "layer" not in atoms.arrays:
            raise FramesFileError(f"structure {name!r} has no per-atom 'layer' array; assign layers first "
                                  "(mlepi.geometry.layers.assign_layers)")
        return cls(name=name, positions=atoms.get_positions(), cell=np.array(atoms.cell),
                   numbers=atoms.get_atomic_numbers(), layer=atoms.arrays["layer"].astype(int),
                   pbc=np.array(atoms.pbc), **results)


def orbital_counts(numbers, basis: dict) -> np.ndarray:
    """Number of orbitals of each atom, ``[n_atoms]``, from the basis description of the file."""
    per_z = {int(z): sum(2 * l + 1 for _, l in orbs) for z, orbs in basis["orbitals"].items()}
    try:
        return np.array([per_z[int(z)] for z in numbers])
    except KeyError as err:
        raise FramesFileError(f"basis has no orbitals for element Z={err.args[0]}") from None


def write_frames(path, frames: list[Frame], *, basis: dict, source: str, parameters: dict,
                 provenance: dict) -> None:
    """Write frames atomically. ``source`` is 'dft' or 'hedgenet'; ``parameters`` the settings used."""
    names = [f.name for f in frames]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate frame names in {path}: {names}")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["schema"] = SCHEMA
            h5.attrs["schema_version"] = SCHEMA_VERSION
            h5.attrs["units"] = json.dumps(UNITS)
            h5.attrs["basis"] = json.dumps(basis)
            h5.attrs["source"] = source
            h5.attrs["parameters"] = json.dumps(parameters, default=str)
            h5.attrs["provenance"] = json.dumps(provenance, default=str)
            h5.attrs["frame_names"] = json.dumps(names)
            group = h5.create_group("frames")
            for frame in frames:
                _write_frame(group.create_group(frame.name), frame)


def _write_frame(g, f: Frame) -> None:
    # Fletcher-32 checksums on every array: a flipped bit on disk is a read error, never a silently wrong H.
    for key, dtype in (("positions", np.float64), ("cell", np.float64), ("pbc", bool), ("numbers", np.int32),
                       ("layer", np.int32)):
        g.create_dataset(key, data=np.asarray(getattr(f, key), dtype=dtype), fletcher32=True)
    for key in _OPTIONAL:
        value = getattr(f, key)
        if value is None:
            continue
        dtype = np.int64 if key in ("edge_index", "cell_shift") else np.float64
        kwargs = {"compression": "gzip", "compression_opts": 4} if key in _BLOCKS else {}
        data = np.asarray(value, dtype=dtype)
        if data.ndim and data.size:  # HDF5 checksums need chunks, which scalars and empty arrays cannot have
            kwargs["fletcher32"] = True
        g.create_dataset(key, data=data, **kwargs)
    g.attrs["info"] = json.dumps(f.info, default=str)


class FramesFile:
    """Strict reader of a frames file: checks schema and fields, then gives frames by name or index."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise FramesFileError(f"{self.path}: no such file")
        try:
            with h5py.File(self.path, "r") as h5:
                attrs = dict(h5.attrs)
                has_frames = "frames" in h5
        except OSError as err:
            raise FramesFileError(f"{self.path}: not a readable HDF5 file ({err}); rerun the stage "
                                  "that writes it") from None
        if attrs.get("schema") != SCHEMA:
            raise FramesFileError(f"{self.path}: schema is {attrs.get('schema')!r}, expected {SCHEMA!r}; "
                                  "this is not an mlepi frames file")
        missing = [k for k in _REQUIRED_ROOT if k not in attrs] + ([] if has_frames else ["/frames"])
        if missing:
            raise FramesFileError(f"{self.path}: missing {missing}; the file is incomplete, rerun the stage "
                                  "that writes it")
        if int(attrs["schema_version"]) != SCHEMA_VERSION:
            raise FramesFileError(f"{self.path}: schema_version {attrs['schema_version']} but this mlepi "
                                  f"reads version {SCHEMA_VERSION}; regenerate it with this version")
        try:
            self.units, self.basis, self.parameters, self.provenance, self.names = (
                json.loads(attrs[k]) for k in ("units", "basis", "parameters", "provenance", "frame_names"))
        except (TypeError, ValueError) as err:
            raise FramesFileError(f"{self.path}: a root attribute is not valid JSON ({err}); the file is "
                                  "damaged, rerun the stage that writes it") from None
        self.source = str(attrs["source"])

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        with h5py.File(self.path, "r") as h5:
            for name in self.names:
                yield self._read(h5, name)

    def __getitem__(self, key: int | str) -> Frame:
        name = self.names[key] if isinstance(key, int) else key
        with h5py.File(self.path, "r") as h5:
            return self._read(h5, name)

    def info(self, name: str) -> dict:
        """The info of frame ``name`` alone, no arrays read: to sort frames before loading them."""
        with h5py.File(self.path, "r") as h5:
            return self._info(self._group(h5, name), name)

    def _group(self, h5, name: str):
        if name not in h5["frames"]:
            raise FramesFileError(f"{self.path}: no frame named {name!r}")
        return h5["frames"][name]

    def _info(self, g, name: str) -> dict:
        try:
            return json.loads(g.attrs.get("info", "{}"))
        except ValueError as err:
            raise FramesFileError(f"{self.path}: frame {name!r} is damaged ({err}); rerun the stage that "
                                  "wrote it") from None

    def _read(self, h5, name: str) -> Frame:
        g = self._group(h5, name)
        missing = [k for k in _GEOMETRY if k not in g]
        if missing:
            raise FramesFileError(f"{self.path}: frame {name!r} lacks {missing}")
        try:
            values = {k: g[k][()] for k in _GEOMETRY + _OPTIONAL if k in g}
        except OSError as err:  # a failed checksum or a damaged chunk
            raise FramesFileError(f"{self.path}: frame {name!r} is damaged ({err}); rerun the stage that "
                                  "wrote it") from None
        for key in ("energy", "fermi_level"):
            if key in values:
                values[key] = float(values[key])
        return Frame(name=name, info=self._info(g, name), **values)
