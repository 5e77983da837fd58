import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

# Tests import shared helpers from each other (e.g. the spring-network force constants).
sys.path.insert(0, str(Path(__file__).parent))
# Two cores on CI: keep BLAS/torch from oversubscribing them when GPAW or torch run in subprocesses.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def workflow_run(tmp_path_factory):
    """The tiny workflow run once, uninterrupted (tests/config_tiny.yaml): (workdir, config)."""
    from workflow_helpers import ROOT, TINY, snakemake

    workdir = tmp_path_factory.mktemp("workflow")
    shutil.copytree(ROOT / "config", workdir / "config")
    snakemake(workdir)
    return workdir, yaml.safe_load(TINY.read_text())
