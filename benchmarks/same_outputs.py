"""Do two workflow runs hold the same outputs? Every result file, compared by content (a refactor's check).

    python benchmarks/same_outputs.py RESULTS_A RESULTS_B [--json OUT]

RESULTS_A and RESULTS_B are ``results/<system>`` folders of two runs of the same config (e.g. before and after a
change that should change nothing). Each file of A must be in B, and equal:

- HDF5 (frames, dataset, spectra): every dataset bit for bit, every attribute;
- JSON, extended XYZ info, torch files (``model.pt``, ``checkpoint.pt``): every value, tensors bit for bit;
- CSV, YAML (phonopy), FORCE_SETS, PNG: byte for byte, except the timing columns of ``metrics.csv``.

What records *how* a file was made rather than what it holds is not compared: ``provenance`` records and
records copied from an input's (``model_provenance``, ``dataset_provenance``: git revision, time, command line,
config hash), the epoch times ``epoch_time_s`` (``metrics.csv``, the checkpoint's history), and logs and per-rule
benchmark files. ``--expect-key KEY`` (repeatable) names a record key the change meant to add or remove (e.g. a
config key a stage no longer reads): it is left out of the comparison wherever it occurs, and listed in the
report. The report lists every other difference, file by file; the exit status is 1 if there is any.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import h5py
import numpy as np

SKIPPED_DIRS = {"logs", "benchmarks"}
TIMING_COLUMNS = {"epoch_time_s"}
EXPECTED_KEYS: set[str] = set()  # --expect-key


def _is_record(key) -> bool:
    """How a file was made, not what it holds."""
    key = str(key)
    return key == "provenance" or key.endswith("_provenance") or key in TIMING_COLUMNS or key in EXPECTED_KEYS


def _strip(value):
    """``value`` without provenance records, at any depth (JSON strings of attributes parsed first)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not _is_record(k)}
    if isinstance(value, (list, tuple)):
        return [_strip(v) for v in value]
    return value


def _differences(a, b, where: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}: key {k!r} only in one" for k in sorted(set(a) ^ set(b), key=str)]
        for k in sorted(set(a) & set(b), key=str):
            out += _differences(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"]
        return [d for k, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{k}]")]
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype or a.tobytes() != b.tobytes():
            diff = float(np.max(np.abs(a - b))) if a.shape == b.shape and a.dtype.kind in "fc" else None
            return [f"{where}: arrays differ" + (f" (max |diff| {diff:.3g})" if diff is not None else "")]
        return []
    if hasattr(a, "numpy") and hasattr(b, "numpy"):  # torch tensors
        return _differences(a.numpy(), b.numpy(), where)
    if a != a and b != b:  # both NaN
        return []
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def _attr(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return _strip(json.loads(value))
        except json.JSONDecodeError:
            pass
    return np.asarray(value) if isinstance(value, np.ndarray) else value


def _hdf5(path: Path) -> dict:
    content = {}
    with h5py.File(path, "r") as h5:
        def visit(name, obj):
            attrs = {k: _attr(v) for k, v in obj.attrs.items() if not _is_record(k)}
            content[f"{name}@attrs"] = attrs
            if isinstance(obj, h5py.Dataset):
                content[name] = obj[()]
        content["/@attrs"] = {k: _attr(v) for k, v in h5.attrs.items() if not _is_record(k)}
        h5.visititems(visit)
    return content


def _extxyz(path: Path) -> list:
    import ase.io

    frames = []
    for atoms in ase.io.read(path, index=":", format="extxyz"):
        info = {k: _attr(v) for k, v in atoms.info.items() if not _is_record(k)}
        frames.append({"info": info, "cell": np.array(atoms.cell), "pbc": atoms.pbc.copy(),
                       **{k: v.copy() for k, v in atoms.arrays.items()}})
    return frames


def _torch(path: Path):
    import torch

    return _strip(torch.load(path, map_location="cpu", weights_only=False))


def _csv(path: Path) -> list:
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    return [{k: v for k, v in row.items() if not _is_record(k)} for row in rows]


READERS = {".h5": _hdf5, ".json": lambda p: _strip(json.loads(p.read_text())), ".extxyz": _extxyz,
           ".pt": _torch, ".csv": _csv}


def compare(a_dir: Path, b_dir: Path) -> dict:
    files = sorted(p.relative_to(a_dir) for p in a_dir.rglob("*")
                   if p.is_file() and not SKIPPED_DIRS & set(p.relative_to(a_dir).parts[:1]))
    report = {"compared": [], "differences": {}, "missing_in_b": []}
    for rel in files:
        a, b = a_dir / rel, b_dir / rel
        if not b.exists():
            report["missing_in_b"].append(str(rel))
            continue
        reader = READERS.get(a.suffix)
        diffs = (_differences(reader(a), reader(b), str(rel)) if reader is not None
                 else ([] if a.read_bytes() == b.read_bytes() else [f"{rel}: bytes differ"]))
        report["compared"].append(str(rel))
        if diffs:
            report["differences"][str(rel)] = diffs
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="results/<system> of the first run")
    parser.add_argument("b", type=Path, help="results/<system> of the second run")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--expect-key", action="append", default=[], metavar="KEY",
                        help="a record key the change meant to add or remove: not compared (repeatable)")
    args = parser.parse_args(argv)
    EXPECTED_KEYS.update(args.expect_key)
    report = compare(args.a, args.b)
    report.update(a=str(args.a), b=str(args.b), expected_keys=sorted(EXPECTED_KEYS),
                  n_compared=len(report["compared"]),
                  n_differing=len(report["differences"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    for rel, diffs in report["differences"].items():
        print(f"{rel}: {len(diffs)} difference(s)")
        for d in diffs[:8]:
            print(f"  {d}")
    print(f"{report['n_compared']} files compared, {report['n_differing']} differ, "
          f"{len(report['missing_in_b'])} missing in {args.b}")
    return 1 if report["differences"] or report["missing_in_b"] else 0


if __name__ == "__main__":
    sys.exit(main())
