"""Provenance records and crash-safe writing.

Every file mlepi writes carries a provenance record (software versions, git revision, hash of the config
section that produced it, the command line) and is written under a temporary name and renamed into place,
so that a killed job never leaves a half-written output that Snakemake or a reader would trust.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ase.io
import h5py

from mlepi.errors import MlepiError

_PACKAGES = ("mlepi", "numpy", "scipy", "ase", "gpaw", "phonopy", "torch", "torch_geometric", "h5py", "dftd3")


def software_versions() -> dict[str, str]:
    """Installed versions of the packages whose numbers can change a result."""
    versions = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_revision() -> str:
    """Revision of the mlepi checkout (with ``-dirty`` for local changes), or ``unknown`` outside git."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def config_hash(section) -> str:
    """Stable short hash of a JSON-serialisable config section (key order does not matter)."""
    text = json.dumps(section, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record(config_section=None, seed: int | None = None, **extra) -> dict:
    """The provenance record stored in every output file (as a JSON string attribute)."""
    rec = {
        "versions": software_versions(),
        "git_revision": git_revision(),
        "command": " ".join(sys.argv),
        "config_hash": config_hash(config_section) if config_section is not None else None,
    }
    if seed is not None:
        rec["seed"] = int(seed)
    rec.update(extra)
    return rec


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries of ``path`` left by writers that were killed (SIGKILL, node failure): the rerun
    that writes ``path`` again sweeps them, so no half-written file outlives the job that redoes it. A
    temporary whose process is alive on this host is another writer's and stays. (On a shared file system a
    PID means nothing on other nodes: the temporary of an orphaned job still running elsewhere is swept too,
    and that job's rename then fails; Snakemake never runs two jobs for one output.)"""
    prefix = f".{path.stem}.tmp"
    for stale in path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(path.suffix)}"):
        pid = stale.name[len(prefix):len(stale.name) - len(path.suffix)]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(stale)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the suffix so that writers which infer the format from it (ase.io, h5py,
    matplotlib) still work. A folder output works the same way: create the temporary as a folder, fill it,
    and it replaces the old folder as a whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)  # os.replace cannot replace a non-empty folder
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def write_json(path, data: dict) -> None:
    """Write a JSON file atomically (sorted keys, indented)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(path, rows, columns) -> None:
    """Write a CSV table atomically: ``columns`` in order (other keys of a row ignored), floats as ``%.10g``,
    missing values and None as empty fields."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.10g}" if isinstance(v, float) else "" if v is None else v) for k, v in row.items()})
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())


class ProvenanceError(MlepiError, ValueError):
    """A file carries no provenance record mlepi can read."""


def _from_hdf5(path):
    with h5py.File(path, "r") as h5:
        text = h5.attrs.get("provenance")
        return str(h5.attrs.get("schema", "hdf5")), json.loads(text) if text is not None else None


def _from_extxyz(path):
    info = ase.io.read(path, index=0, format="extxyz").info
    text = info.get("provenance")
    return str(info.get("schema", "extxyz")), json.loads(text) if isinstance(text, str) else text


def _from_torch(path):
    # torch (1-4 s to import) only for .pt files: `mlepi inspect` of frames and JSON files should not wait for it
    from mlepi.formats.torch_files import read_torch_file

    state = read_torch_file(path, None, "a model or checkpoint written by mlepi")
    return str(state.get("schema", "torch file")), state.get("metadata", {}).get("provenance")


def _from_json(path):
    data = json.loads(Path(path).read_text())
    return "json", data.get("provenance") if isinstance(data, dict) else None


_READERS = {".h5": _from_hdf5, ".hdf5": _from_hdf5, ".extxyz": _from_extxyz, ".xyz": _from_extxyz,
            ".pt": _from_torch, ".json": _from_json}


def read(path) -> dict:
    """The provenance record of an mlepi output: frames and spectral HDF5 files (root attribute), structure
    files (extended-XYZ info of the first frame), ``model.pt`` (metadata) and JSON results (``provenance``).

    Returns ``{"file", "kind", "provenance"}``; raises :class:`ProvenanceError` naming the file and where
    its record would be.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ProvenanceError(f"{path}: mlepi stores provenance in .h5, .extxyz, .pt and .json files; for a "
                              "figure or table, inspect the JSON or HDF5 file its stage wrote beside it")
    try:
        kind, rec = reader(path)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ProvenanceError(f"{path}: cannot be read as {path.suffix} ({err}); the file is damaged or not an "
                              "mlepi output") from None
    if not rec:
        raise ProvenanceError(f"{path}: has no provenance record (not written by mlepi, or by a version "
                              "before records were kept); regenerate it with the stage that writes it")
    return {"file": str(path), "kind": kind, "provenance": rec}


def format_record(found: dict) -> str:
    """``read``'s result as the text ``mlepi inspect`` prints."""
    rec = found["provenance"]
    lines = [f"file:          {found['file']}", f"kind:          {found['kind']}",
             f"git revision:  {rec.get('git_revision', '?')}", f"config hash:   {rec.get('config_hash')}",
             f"command:       {rec.get('command', '?')}"]
    if "seed" in rec:
        lines.append(f"seed:          {rec['seed']}")
    for key, value in rec.items():
        if key not in ("versions", "git_revision", "config_hash", "command", "seed"):
            lines.append(f"{key + ':':<15}{json.dumps(value, default=str)}")
    lines.append("versions:      " + ", ".join(f"{k} {v}" for k, v in rec.get("versions", {}).items()))
    return "\n".join(lines)
