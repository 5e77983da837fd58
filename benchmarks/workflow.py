"""Benchmark: the default workflow end to end on this machine (wall time, peak memory, per rule).

    python benchmarks/workflow.py                      # writes benchmarks/results/workflow.json

Runs ``snakemake --profile profiles/local`` on ``config/config.yaml`` (or ``--configfile``) in a fresh
working folder, so that every rule runs, training included (in a folder with a finished checkpoint it would
only resume), samples the resident memory of the whole process tree (Snakemake and every job it starts,
summed, so parallel DFT jobs add up) every 0.5 s, and collects the per-rule ``benchmark:`` files Snakemake
writes under ``results/<system>/benchmarks/``. Set-up (``scripts/setup.sh``) is not part of the measurement.
The folder is kept (its path is in the JSON); your own ``results/`` is not touched.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mlepi.provenance import record, write_json  # noqa: E402


def tree_rss(process: psutil.Process) -> int:
    """Resident memory (bytes) of a process and all its descendants."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # a job that ended between listing and reading
            pass
    return total


def run_workflow(args) -> dict:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
           str(args.workdir), "--profile", str(ROOT / "profiles" / "local"), "--cores", str(args.cores),
           "--configfile", str(args.configfile.resolve())]
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    peak, samples = 0, []
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=args.workdir, env=env)
    watched = psutil.Process(proc.pid)

    def sample():
        nonlocal peak
        while proc.poll() is None:
            rss = tree_rss(watched)
            peak = max(peak, rss)
            samples.append((round(time.perf_counter() - start, 1), rss))
            time.sleep(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    rc = proc.wait()
    wall = time.perf_counter() - start
    thread.join()
    if rc:
        raise SystemExit(f"snakemake failed (exit {rc}); nothing written")
    return {"wall_s": wall, "peak_rss_gib": peak / 2**30, "rss_samples": samples[:: max(1, len(samples) // 400)]}


def rule_benchmarks(workdir: Path, system: str) -> dict:
    """Per-rule seconds and max RSS (MiB) from Snakemake's ``benchmark:`` files."""
    rules, folder = {}, workdir / "results" / system / "benchmarks"
    for path in sorted(folder.rglob("*.tsv")):  # dft/<config>.tsv: one file per DFT job
        with open(path) as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        rules[str(path.relative_to(folder).with_suffix(""))] = {"s": float(row["s"]),
                                                                 "max_rss_MiB": float(row["max_rss"])}
    return rules


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "workflow.json")
    parser.add_argument("--workdir", type=Path, help="an empty folder for the run (default: a new one in /tmp)")
    args = parser.parse_args(argv)
    args.workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="mlepi-workflow-"))).resolve()
    if (args.workdir / "results").exists():
        raise SystemExit(f"{args.workdir} already holds results/: give an empty folder, or none")
    shutil.copytree(ROOT / "config", args.workdir / "config", dirs_exist_ok=True)
    system = yaml.safe_load(args.configfile.read_text())["system"]["name"]
    measured = run_workflow(args)
    result = {
        "default_workflow_wall_s": measured["wall_s"],
        "default_workflow_peak_gib": measured["peak_rss_gib"],
        "rules": rule_benchmarks(args.workdir, system),
        "workdir": str(args.workdir),
        "rss_samples_s_bytes": measured["rss_samples"],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "cores_used": args.cores,
                    "memory_gib": psutil.virtual_memory().total / 2**30},
        "config": str(args.configfile),
        "provenance": record({"configfile": str(args.configfile), "cores": args.cores}),
    }
    write_json(args.out, result)
    print(f"workflow: {measured['wall_s']:.0f} s, peak {measured['peak_rss_gib']:.2f} GiB -> {args.out}")


if __name__ == "__main__":
    main()
