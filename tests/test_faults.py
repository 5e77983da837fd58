"""Kill anywhere: the tiny workflow is SIGKILLed (Snakemake and every job process at once, as a node failure
or a scheduler's hard kill does) while it runs dft, dataset, train and infer, then rerun. The rerun must
finish, redo only the interrupted jobs, leave no temporary behind, and give the outputs of an uninterrupted
run: bitwise for every data file, and a resumed training with the same final metrics.

The killed run starts from a copy of the uninterrupted one without two DFT results and everything downstream of
them (:func:`_seed`): the kills hit the same stages, and the structure, phonons and the other DFT jobs (~3 of the
test's ~7 minutes) are not computed a second time.
"""

import contextlib
import csv
import hashlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from workflow_helpers import ROOT, TINY, snakemake, subprocess_env

pytestmark = pytest.mark.slow


def _cmdline(proc) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:  # gone, a zombie, or not ours
        return []


def _mlepi_jobs(root: psutil.Process) -> list[tuple[psutil.Process, str, list[str]]]:
    """The running mlepi jobs under ``root``: (process, stage, command line); torchrun's ``mlepi.cli train``
    counts too, as ``train_round`` when it trains on from a previous model (an active-learning round)."""
    jobs = []
    for proc in root.children(recursive=True):
        cmd = _cmdline(proc)
        for k, word in enumerate(cmd[:-1]):
            if word.endswith("/mlepi") or word in ("mlepi", "mlepi.cli"):
                stage = "train_round" if cmd[k + 1] == "train" and "--init" in cmd else cmd[k + 1]
                jobs.append((proc, stage, cmd))
                break
    return jobs


def _argument(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def _age(proc) -> float:
    try:
        return time.time() - proc.create_time()
    except psutil.Error:  # already gone
        return 0.0


# When a running job is far enough into its work for the kill to hurt (paths relative to the workdir).
READY = {
    # GPAW is inside its SCF: the text log shows iterations.
    "dft": lambda proc, cmd, wd: "iter:" in _read(wd / _argument(cmd, "--log")),
    # writing the merged file (its temporary exists), or at least past the interpreter's start (the whole
    # job takes ~2 s, so waiting for the temporary alone could miss it).
    "dataset": lambda proc, cmd, wd: _age(proc) > 0.6 or any((wd / _argument(cmd, "--out")).parent.glob(".*.tmp*")),
    # several epochs done and checkpointed: the rerun must resume, not restart.
    "train": lambda proc, cmd, wd: len(_read(wd / _argument(cmd, "--out-dir") / "metrics.csv").splitlines()) > 10,
    # model loaded, predicting.
    "infer": lambda proc, cmd, wd: _age(proc) > 3.0,
}
READY["train_round"] = READY["train"]  # an active-learning round's training: resumes from its checkpoint too


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _kill_during(workdir: Path, stage: str, timeout: float = 1500) -> tuple[list, list]:
    """Run the workflow until a ``stage`` job is well under way, then SIGKILL the whole process tree at once.
    Returns the command lines of the killed jobs of that stage, and of every mlepi job killed."""
    env = subprocess_env()
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(TINY), "--cores", "2", "--rerun-incomplete"]
    log_path = workdir / f"snakemake_killed_in_{stage}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    root, start = psutil.Process(proc.pid), time.monotonic()
    try:
        while True:
            jobs = _mlepi_jobs(root)
            if any(s == stage and READY[stage](p, c, workdir) for p, s, c in jobs):
                break
            assert proc.poll() is None, f"the workflow ended before a {stage} job ran:\n{_read(log_path)}"
            assert time.monotonic() - start < timeout, f"no {stage} job within {timeout} s"
            time.sleep(0.05)
    finally:
        tree = [root, *root.children(recursive=True)]
        for p in tree:  # freeze first, so that nothing reacts to its neighbours dying, then kill all
            with contextlib.suppress(psutil.Error):  # already gone
                p.send_signal(signal.SIGSTOP)
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(tree, timeout=30)
        proc.wait()
    return [c for _, s, c in jobs if s == stage], [c for _, _, c in jobs]


def _outputs_of(cmd: list[str]) -> list[str]:
    return [_argument(cmd, flag) for flag in ("--out", "--out-dir") if flag in cmd]


def _snapshot(results: Path) -> dict[Path, tuple[int, str]]:
    return {p: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in results.rglob("*") if p.is_file()}


RECORDS = {"logs", "benchmarks"}  # folders of results/<name> that every run rewrites: logs and timings


def _is_record(path: Path, results: Path) -> bool:
    return bool(RECORDS & set(path.relative_to(results).parts))


def _data_files(results: Path) -> list[Path]:
    """Every output compared bitwise with the uninterrupted run: all files except figures, logs, timings,
    the torch files (zip archives naming their temporary; compared by tensors) and the metrics (wall times)."""
    skip_names = {"metrics.csv", "model.pt", "checkpoint.pt"}
    return sorted(p.relative_to(results) for p in results.rglob("*")
                  if p.is_file() and p.suffix != ".png" and p.name not in skip_names and not _is_record(p, results))


# What the killed run keeps of the uninterrupted one (results/<name>/...): the stages before the training data.
# Every other stage reads the dataset, directly or not, so it is removed along with the DFT results of REDO.
UPSTREAM = {"structure", "displace", "phonons", "thermal", "dft"} | RECORDS
REDO = ("mc_T0_s000", "mc_T300_s001")  # training samples: the dataset waits for them


def _seed(reference: Path, workdir: Path, name: str) -> dict[Path, tuple[int, str]]:
    """Copy the uninterrupted run (modification times and Snakemake's records kept, so nothing copied is out of
    date) without the DFT results of ``REDO`` and every stage after them. Returns the snapshot of what was kept."""
    shutil.copytree(reference, workdir, symlinks=True)
    results = workdir / "results" / name
    for stage in results.iterdir():
        if stage.name not in UPSTREAM:
            shutil.rmtree(stage)
    for job in REDO:
        (results / "dft" / f"{job}.h5").unlink()
    return _snapshot(results)


def test_killed_in_every_stage_the_rerun_redoes_only_that_and_matches_an_uninterrupted_run(
        workflow_run, tmp_path):
    reference, cfg = workflow_run
    name = cfg["system"]["name"]
    workdir = tmp_path / "killed"
    results = workdir / "results" / name
    kept = {p: v for p, v in _seed(reference, workdir, name).items() if not _is_record(p, results)}
    faults, protected = [], {}
    # infer: the first inference after training is round 1's candidates (the answer's waits for round 1)
    for stage in ("dft", "dataset", "train", "infer", "train_round"):
        killed, interrupted = _kill_during(workdir, stage)
        faults.append((stage, len({tuple(_outputs_of(cmd)) for cmd in killed})))  # jobs (torchrun: 2 processes)
        after = _snapshot(results)
        # Nothing that had finished before an earlier kill was redone since (nor touched by this one).
        assert {p: after.get(p) for p in protected} == protected, "a finished job was redone"
        # The kill hit the stage: its outputs are not there (a complete file appears only by a rename).
        # Training's model.pt is the best epoch so far, so its checkpointed epochs are the evidence there.
        for cmd in killed:
            if stage.startswith("train"):
                epochs = cfg["active"]["epochs"] if stage == "train_round" else cfg["train"]["epochs"]
                assert len(_read(workdir / _argument(cmd, "--out-dir") / "metrics.csv").splitlines()) <= \
                    epochs, "training had finished before the kill"
            else:
                assert not (workdir / _argument(cmd, "--out")).exists(), f"{cmd}: the kill came too late"
        # What any killed job was writing is redone; everything else must stay as it is.
        redone = [workdir / out for cmd in interrupted for out in _outputs_of(cmd)]
        protected = {p: v for p, v in after.items() if ".tmp" not in p.name and not _is_record(p, results)
                     and not any(p == r or r in p.parents for r in redone)}
        # A killed Snakemake leaves its lock: the user unlocks and reruns (the profiles set rerun-incomplete).
        snakemake(workdir, "--unlock")
    snakemake(workdir, "--rerun-incomplete")
    final = _snapshot(results)
    assert {p: final.get(p) for p in protected} == protected, "a finished job was redone"
    assert {p: final.get(p) for p in kept} == kept, "a stage copied from the uninterrupted run was redone"
    assert [p.name for p in results.rglob("*.tmp*")] == [], "a temporary (half-written) file survived the rerun"

    ref_results = reference / "results" / name
    assert _data_files(results) == _data_files(ref_results)
    differ = [str(p) for p in _data_files(results) if (results / p).read_bytes() != (ref_results / p).read_bytes()]
    assert not differ, f"outputs differ from the uninterrupted run: {differ}"
    for model in (Path("train"), Path("active") / "round_1" / "train"):
        a = torch.load(ref_results / model / "member_0" / "model.pt", weights_only=True)["state_dict"]
        b = torch.load(results / model / "member_0" / "model.pt", weights_only=True)["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"the resumed {model} differs"
    ref_rows = list(csv.DictReader((ref_results / "train" / "member_0" / "metrics.csv").open()))
    rows = list(csv.DictReader((results / "train" / "member_0" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in ref_rows]
    assert float(rows[-1]["val_loss"]) == pytest.approx(float(ref_rows[-1]["val_loss"]), rel=0.01)
    print("faults injected and survived:", faults)
