"""Benchmark: the default workflow end to end on this machine (wall time, peak memory, per rule).

    python benchmarks/workflow.py                      # writes benchmarks/results/workflow.{json,png}

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
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mlepi.formats.provenance import atomic_path, record, write_json  # noqa: E402


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
    """Per job, from Snakemake's ``benchmark:`` files: wall seconds, CPU seconds, max RSS (MiB), and when it
    ran: ``end_s`` is the file's modification time (Snakemake writes it as the job ends), ``start_s`` that less
    the wall time, both counted from the first job's start."""
    rules, folder = {}, workdir / "results" / system / "benchmarks"
    for path in sorted(folder.rglob("*.tsv")):  # dft/<config>.tsv: one file per DFT job
        with open(path) as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        rules[str(path.relative_to(folder).with_suffix(""))] = {
            "s": float(row["s"]), "cpu_s": float(row["cpu_time"]), "max_rss_MiB": float(row["max_rss"]),
            "end_s": path.stat().st_mtime}
    t0 = min((r["end_s"] - r["s"] for r in rules.values()), default=0.0)
    for r in rules.values():
        r["end_s"] = round(r["end_s"] - t0, 2)
        r["start_s"] = round(r["end_s"] - r["s"], 2)
    return rules


def plot_timeline(result: dict, path: Path) -> None:
    """One bar per job over the run (colour: the rule; darker where its CPU time fills more of its wall time),
    and the resident memory of all processes together below."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    jobs = sorted(result["rules"].items(), key=lambda item: item[1]["start_s"])
    rule_of = {name: name.split("/")[0].split("_T")[0] for name, _ in jobs}  # dft/fd_000 -> dft, infer_T0 -> infer
    rules = sorted(set(rule_of.values()))
    cores = result["machine"]["cores_used"]
    fig = Figure(figsize=(10, 7.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(4, 1))
    for row, (name, job) in enumerate(jobs):
        colour = f"C{rules.index(rule_of[name]) % 10}"
        busy = min(job["cpu_s"] / max(job["s"], 1e-9) / cores, 1.0)  # CPU time over wall time, of all cores
        top.barh(row, job["s"], left=job["start_s"], color=colour, alpha=0.35 + 0.6 * busy)
    top.set_yticks(range(len(jobs)), [name for name, _ in jobs], fontsize=6)
    top.invert_yaxis()
    top.set_title(f"default workflow: {result['default_workflow_wall_s']:.0f} s on {cores} "
                  f"cores, peak {result['default_workflow_peak_gib']:.2f} GiB", fontsize=9)
    t, rss = zip(*result["rss_samples_s_bytes"]) if result["rss_samples_s_bytes"] else ((), ())
    bottom.plot(t, np.asarray(rss) / 2**30, color="k", lw=0.8)
    bottom.set_ylabel("RSS (GiB)")
    bottom.set_xlabel("time since the first job started (s); memory: since Snakemake started")
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "workflow.json")
    parser.add_argument("--workdir", type=Path, help="an empty folder for the run (default: a new one in /tmp)")
    parser.add_argument("--replot", action="store_true",
                        help="run nothing: read the per-job files again from the folder named in --out, redraw")
    args = parser.parse_args(argv)
    if args.replot:
        result = json.loads(args.out.read_text())
        system = yaml.safe_load(Path(result["config"]).read_text())["system"]["name"]
        result["rules"] = rule_benchmarks(Path(result["workdir"]), system)
        write_json(args.out, result)
        plot_timeline(result, args.out.with_suffix(".png"))
        return
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
    plot_timeline(result, args.out.with_suffix(".png"))
    print(f"workflow: {measured['wall_s']:.0f} s, peak {measured['peak_rss_gib']:.2f} GiB -> {args.out}")


if __name__ == "__main__":
    main()
