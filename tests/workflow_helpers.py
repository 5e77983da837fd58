"""Running the workflow in a subprocess from tests: the tiny config, this interpreter's environment."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "config_tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def subprocess_env() -> dict:
    """This interpreter's environment for `mlepi`, Snakemake or mpiexec in a subprocess: its bin on PATH, one
    BLAS thread per process, and, as root (CI, containers), Open MPI's two permissions to run as root."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


def snakemake(workdir, *args, config=TINY, check=True, env=None):
    """Snakemake on ``workdir`` with the tiny config (or ``config``); ``env`` adds to this interpreter's."""
    env = {**subprocess_env(), **(env or {})}
    cmd = [*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(config), "--cores", "2", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3000)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    return result


def planned_rules(output: str) -> set[str]:
    """Rule names in the 'Job stats' table of a dry run."""
    rules, in_table = set(), False
    for line in output.splitlines():
        if line.startswith("Job stats"):
            in_table = True
        elif in_table:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("job", "total"):
                rules.add(parts[0])
            elif parts and parts[0] == "total":
                break
    return rules
