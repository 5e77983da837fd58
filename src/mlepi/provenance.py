"""Provenance records and crash-safe writing.

Every file mlepi writes carries a provenance record (software versions, git revision, hash of the config
section that produced it, the command line) and is written under a temporary name and renamed into place,
so that a killed job never leaves a half-written output that Snakemake or a reader would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the suffix so that writers which infer the format from it (ase.io, h5py,
    matplotlib) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path, data: dict) -> None:
    """Write a JSON file atomically (sorted keys, indented)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
