"""What the benchmark scripts share: their two options and the default workflow's results folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mlepi import config  # noqa: E402


def arguments(doc: str, argv=None, add=None) -> tuple[argparse.Namespace, dict, Path]:
    """Parse ``--configfile`` and ``--out-dir`` (and what ``add(parser)`` adds); return them, the loaded config
    and ``results/<system>``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    if add is not None:
        add(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config.load(args.configfile)
    except config.ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    return args, cfg, ROOT / "results" / cfg["system"]["name"]


def require(*paths: Path) -> None:
    """Stop with one line naming what the default workflow has not produced yet."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"missing {', '.join(map(str, missing))}: run the default workflow first (scripts/run.sh)")
