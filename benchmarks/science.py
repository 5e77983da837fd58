"""Benchmark: ``config/science.yaml`` end to end (issue 25), its answer kept in ``benchmarks/results/science/``.

    python benchmarks/science.py                          # run it (benchmarks/workflow.py), then collect
    python benchmarks/science.py --workdir DIR --collect  # collect a finished run's folder

The run is :mod:`benchmarks.workflow`'s on ``--configfile config/science.yaml`` (a fresh folder, wall time and
peak memory of the whole process tree, per-rule times; ``workflow.json`` and ``workflow.png`` here). Then the
answer and what it rests on are copied from ``results/<system>/`` of that folder: v_F(T) and the
renormalization with its error budget, the DFT cross-check, the test set's errors per active-learning round
and the goals, the supercell table, and their figures. ``run.json`` records the date, the machine, the git
revision and the config, so that a committed run says where and when it ran.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mlepi.formats.provenance import record  # noqa: E402

# what is kept, relative to results/<system>/: the answer first, then what it rests on
KEPT = ["bands/vf.csv", "bands/vf.png", "bands/spectral_function.png",
        "renormalization/renormalization.csv", "renormalization/renormalization.json",
        "renormalization/crosscheck.csv", "renormalization/vf_orders.png", "renormalization/crosscheck.png",
        "supercells/convergence.csv", "supercells/convergence.png",
        "active/learning.csv", "active/learning.png", "parity/parity.png", "phonons_ml/phonons_ml_vs_dft.png"]
REQUIRED = ("bands/vf.csv", "renormalization/renormalization.csv")


def system_name(configfile: Path) -> str:
    """results/<name>/ of the config on top of config/config.yaml, as Snakemake merges them."""
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    return (yaml.safe_load(configfile.read_text()).get("system") or {}).get("name", base["system"]["name"])


def machine() -> str:
    """Host, CPU model and core count, and memory: what a reader needs to compare a time."""
    cpuinfo = Path("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if cpuinfo.exists() else platform.processor()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()}: {model or '?'}, {os.cpu_count()} cores, {memory:.0f} GiB, {platform.platform()}"


def collect(workdir: Path, configfile: Path, out_dir: Path) -> dict:
    results = workdir / "results" / system_name(configfile)
    missing = [name for name in REQUIRED if not (results / name).is_file()]
    if missing:
        raise SystemExit(f"{results}: no {', '.join(missing)}; the run has not finished (run without --collect)")
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = []
    for name in KEPT + sorted(str(p.relative_to(results)) for p in results.glob("active/round_*/testset.json")):
        if (results / name).is_file():
            target = out_dir / name.replace("/", "__")  # one flat folder: round_1__testset.json etc.
            shutil.copyfile(results / name, target)
            kept.append(target.name)
    run = {"date": datetime.date.today().isoformat(), "machine": machine(),
           "config": str(configfile), "results": str(results), "files": kept,
           "provenance": record(yaml.safe_load(configfile.read_text()))}
    workflow = out_dir / "workflow.json"
    if workflow.is_file():
        document = json.loads(workflow.read_text())
        run.update(wall_s=document.get("default_workflow_wall_s"), peak_gib=document.get("default_workflow_peak_gib"),
                   run_git_revision=document.get("provenance", {}).get("git_revision"))  # the code that ran it
    (out_dir / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", type=Path, default=ROOT / "config" / "science.yaml")
    parser.add_argument("--workdir", type=Path, help="the run's folder (default: a new one in /tmp)")
    parser.add_argument("--collect", action="store_true", help="only copy a finished run's answer")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results" / "science")
    args = parser.parse_args(argv)
    configfile = args.configfile.resolve()
    if not args.collect:
        command = [sys.executable, str(ROOT / "benchmarks" / "workflow.py"), "--configfile", str(configfile),
                   "--out", str(args.out_dir / "workflow.json")]
        subprocess.run(command + (["--workdir", str(args.workdir)] if args.workdir else []), check=True)
        if args.workdir is None:  # workflow.py made the folder: it is in its JSON
            args.workdir = Path(json.loads((args.out_dir / "workflow.json").read_text())["workdir"])
    elif args.workdir is None:
        parser.error("--collect needs --workdir, the finished run's folder")
    run = collect(args.workdir.resolve(), configfile, args.out_dir)
    print(f"wrote {len(run['files'])} files and run.json to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
