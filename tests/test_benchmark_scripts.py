"""The benchmark scripts that read a finished run (benchmarks/supercells.py, benchmarks/science.py), on the tiny
workflow's run (the session's ``workflow_run``)."""

import json
import subprocess
import sys

import pytest
from workflow_helpers import ROOT, subprocess_env


@pytest.mark.slow
def test_supercells_benchmark_runs_on_a_finished_run(workflow_run, tmp_path):
    """benchmarks/supercells.py on the tiny run: the convergence table, each size's cost, and the mean-square
    displacements from the DFT force constants as they are and with the invariances imposed."""
    workdir, cfg = workflow_run
    out = workdir / "results" / cfg["system"]["name"]
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "supercells.py"), "--configfile",
                    str(ROOT / "tests" / "config_tiny.yaml"), "--results", str(out), "--msd-sizes", "2", "4",
                    "--out-dir", str(tmp_path)], check=True, env=subprocess_env(), timeout=600)
    result = json.loads((tmp_path / "supercells.json").read_text())
    assert len(result["convergence"]) == 2 * len(cfg["thermal"]["temperatures"])
    assert set(result["cost"]) == {f"{n}x{n}" for n in cfg["thermal"]["ml_supercells"]}
    assert set(result["msd"]) == set(result["msd_sum_rules"]) == {"2", "4"}
    effect = result["sum_rules"]
    assert effect["violation_after"] < 1e-8 * effect["violation_before"]
    assert 0 < effect["fc_change_relative"] < 0.1
    assert (tmp_path / "sum_rules.png").stat().st_size > 0


@pytest.mark.slow
def test_science_benchmark_keeps_a_finished_runs_answer(workflow_run, tmp_path):
    """benchmarks/science.py --collect: the answer's files, unchanged, in one flat folder with run.json; a folder
    without a finished run is refused, naming what is missing."""
    workdir, cfg = workflow_run
    out = workdir / "results" / cfg["system"]["name"]
    command = [sys.executable, str(ROOT / "benchmarks" / "science.py"), "--configfile",
               str(ROOT / "tests" / "config_tiny.yaml"), "--collect", "--out-dir", str(tmp_path / "kept")]
    subprocess.run(command + ["--workdir", str(workdir)], check=True, env=subprocess_env(), timeout=300)
    run = json.loads((tmp_path / "kept" / "run.json").read_text())
    assert {"bands__vf.csv", "renormalization__renormalization.csv"} <= set(run["files"])
    assert (tmp_path / "kept" / "bands__vf.csv").read_bytes() == (out / "bands" / "vf.csv").read_bytes()
    assert run["date"] and "cores" in run["machine"]
    empty = subprocess.run(command + ["--workdir", str(tmp_path)], env=subprocess_env(), capture_output=True,
                           text=True, timeout=300)
    assert empty.returncode != 0 and "bands/vf.csv" in empty.stderr
