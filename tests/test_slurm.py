"""The tiny workflow through ``--profile profiles/slurm`` on a real single-node SLURM.

``scripts/slurm_test_cluster.sh start`` brings up munge, slurmctld and slurmd (partitions ``cpu`` and
``gpu``, one GPU GRES backed by /dev/null). The checks read the scheduler's own records: the job
completion log for the partition each job ran in, ``scontrol show job`` for its GPU request. Snakemake's
SLURM logs (``.snakemake/slurm_logs/rule_<name>/.../<jobid>.log``) say which rule each job id was.

Where SLURM cannot start (not root, no apt), the test skips and says why; ``scripts/test.sh`` sets
``MLEPI_REQUIRE_SLURM=1``, which turns that into a failure, so CI always runs it.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workflow_helpers import ROOT, TINY, subprocess_env

CLUSTER = ROOT / "scripts" / "slurm_test_cluster.sh"
JOBCOMP = Path("/var/log/slurm/jobcomp.log")
GPU_RULES = {"train", "infer", "train_round", "infer_candidates", "peers"}  # profiles/slurm: set-resources


@pytest.fixture(scope="module")
def slurm_cluster():
    result = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        reason = f"the SLURM test cluster did not start (exit {result.returncode}): {result.stderr[-2000:]}"
        if os.environ.get("MLEPI_REQUIRE_SLURM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return result


def run_with_sigint_on_timeout(cmd, cwd, env, timeout):
    """Run ``cmd``; past ``timeout``, SIGINT it (Snakemake then cancels its SLURM jobs; SIGTERM would not)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        raise AssertionError(f"the SLURM workflow ran past {timeout} s and was interrupted:\n{out[-6000:]}")
    return proc.returncode, out


def jobs_by_rule(slurm_logs: Path) -> dict[str, list[str]]:
    """Rule name → SLURM job ids, from the plugin's log layout."""
    jobs = {}
    for log in slurm_logs.rglob("*.log"):
        rule = next(p for p in log.relative_to(slurm_logs).parts if p.startswith("rule_"))[len("rule_"):]
        jobs.setdefault(rule, []).append(log.stem)
    return jobs


def jobcomp_records(job_ids) -> dict[str, dict[str, str]]:
    """Job id → its fields (Partition, ProcCnt, ...) in slurmctld's job completion log."""
    found = {}
    for line in JOBCOMP.read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("JobId") in job_ids:
            found[fields["JobId"]] = fields
    return found


@pytest.mark.slow
def test_tiny_workflow_runs_on_slurm_in_the_profiles_partitions(slurm_cluster, tmp_path):
    cfg = yaml.safe_load(TINY.read_text())
    # Request the (fake) GPU, and run each DFT job as an MPI job of two ranks (mpiexec inside the allocation);
    # the training process gets two threads.
    cfg.setdefault("resources", {}).update(train_gpus=1, infer_gpus=1, dft_ranks=2, dft_threads=1, train_threads=2)
    config = tmp_path / "config_slurm.yaml"
    config.write_text(yaml.safe_dump(cfg))
    shutil.copytree(ROOT / "config", tmp_path / "config")
    env = subprocess_env()  # the test cluster runs jobs as root: Open MPI's permissions included
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--profile",
           str(ROOT / "profiles" / "slurm"), "--configfile", str(config), "--jobs", "4",
           # test-cluster settings: no account, keep every job's log (the job ids are read from it)
           "--slurm-no-account", "--slurm-keep-successful-logs", "--slurm-init-seconds-before-status-checks", "5"]
    code, out = run_with_sigint_on_timeout(cmd, tmp_path, env, timeout=3000)
    assert code == 0, out[-8000:]
    assert (tmp_path / "results" / cfg["system"]["name"] / "bands" / "vf.csv").stat().st_size > 0

    jobs = jobs_by_rule(tmp_path / ".snakemake" / "slurm_logs")
    expected_rules = {"structure", "displace", "dft", "phonons", "thermal_train", "thermal_infer", "dataset",
                      "train", "infer", "linearize", "parity", "phonons_ml", "bands", "bands_linear",
                      "renormalization", "supercell_bands", "supercell_convergence", "thermal_test",
                      "thermal_candidates", "infer_candidates", "select", "dft_selected", "dataset_round",
                      "train_round", "testset", "learning"}
    assert expected_rules <= set(jobs), f"rules without a SLURM job: {expected_rules - set(jobs)}"
    all_ids = {job for ids in jobs.values() for job in ids}
    records = jobcomp_records(all_ids)
    assert set(records) == all_ids, f"jobs missing from {JOBCOMP}: {all_ids - set(records)}"
    partitions = {job: fields["Partition"] for job, fields in records.items()}
    for rule, ids in jobs.items():
        want = "gpu" if rule in GPU_RULES else "cpu"
        assert {partitions[j] for j in ids} == {want}, (rule, {j: partitions[j] for j in ids})
    # The GPU request itself, as slurmctld holds it (MinJobAge keeps finished jobs for an hour).
    for job in jobs["train"] + jobs["infer"] + jobs["train_round"]:
        record = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
        assert re.search(r"gres[:/]gpu[:=]1", record), record
    # The training job held two CPUs (one process of two threads), and torch used both.
    assert {records[j]["ProcCnt"] for j in jobs["train"]} == {"2"}
    train_log = (tmp_path / "results" / cfg["system"]["name"] / "logs" / "train_0.log").read_text()
    assert re.search(r"torch threads per process: 2\b", train_log), train_log[-2000:]
    # Each DFT job held two CPUs (two tasks of one CPU), and GPAW ran on two MPI ranks in it.
    assert {records[j]["ProcCnt"] for j in jobs["dft"]} == {"2"}
    gpaw_logs = sorted((tmp_path / "results" / cfg["system"]["name"] / "logs" / "dft").glob("*.gpaw.txt"))
    assert len(gpaw_logs) == len(jobs["dft"])
    for log in gpaw_logs:
        assert re.search(r"^cores: +2$", log.read_text(), re.MULTILINE), log
