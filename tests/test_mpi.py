"""``mlepi dft`` on several MPI ranks (``mlepi.dft.mpi`` and the ``dft`` rule's launch).

The reference of the parallel run is the same calculation on one rank: GPAW's k-point and domain
decompositions must not change the energy, the forces or a single H(R), S(R) element beyond rounding.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from mlepi import config
from mlepi.dft import mpi, scf
from mlepi.formats.frames import FramesFile
from mlepi.formats.structures import write_structure
from mlepi.geometry import layers

from workflow_helpers import TINY, snakemake, subprocess_env

MPIEXEC = shutil.which("mpiexec")


# ------------------------------------------------------------------------------ launcher detection
@pytest.mark.parametrize("env, launched, ranks, rank", [
    ({}, False, 1, 0),
    ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3"}, True, 4, 3),  # Open MPI's mpiexec
    ({"PMI_SIZE": "2", "PMI_RANK": "1"}, True, 2, 1),  # MPICH/Hydra, srun --mpi=pmi2
    ({"PMIX_RANK": "5"}, True, None, 5),  # srun --mpi=pmix: the size is not in the environment
])
def test_launcher_detection(monkeypatch, env, launched, ranks, rank):
    for variable in ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_SIZE", "PMI_RANK", "PMIX_RANK",
                     "I_MPI_MPIRUN", "GPAW_MPI_BACKEND"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    assert (mpi.launched(), mpi.launched_ranks(), mpi.launched_rank()) == (launched, ranks, rank)
    mpi.prepare()
    assert os.environ.get("GPAW_MPI_BACKEND") == ("cgpaw" if launched else None)


def test_torchrun_worker_drops_the_launcher_it_inherited(monkeypatch):
    """A torchrun worker under ``srun -n1`` (PMIx) keeps GPAW serial instead of claiming the task's MPI rank."""
    monkeypatch.delenv("GPAW_MPI_BACKEND", raising=False)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    monkeypatch.setenv("PMIX_RANK", "0")
    mpi.prepare()
    assert "PMIX_RANK" not in os.environ and "GPAW_MPI_BACKEND" not in os.environ
    assert (mpi.launched(), mpi.launched_ranks()) == (False, 1)


def test_gpaw_world_smaller_than_the_launch_is_refused(monkeypatch):
    """GPAW already imported serially in this process: two launched ranks would each compute alone."""
    import gpaw.mpi

    assert gpaw.mpi.world.size == 1
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="one of 2 ranks but GPAW's world has 1"):
        mpi.gpaw_world()


def test_srun_without_pmi_is_refused(monkeypatch):
    """``srun --mpi=none -n 2``: no PMI variables, GPAW stays serial, but the step has 2 tasks."""
    for variable in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "I_MPI_MPIRUN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert (mpi.launched(), mpi.launched_ranks(), mpi.launched_rank()) == (False, 2, 1)
    with pytest.raises(RuntimeError, match="srun --mpi=pmix"):
        mpi.gpaw_world()


@pytest.mark.parametrize("launcher, environ, expected", [
    ("auto", {}, "mpiexec -n 4"),
    ("auto", {"SLURM_JOB_ID": "17"}, "srun --cpus-per-task=2 -n 4"),  # inside a SLURM job
    ("srun --mpi=pmix", {}, "srun --mpi=pmix --cpus-per-task=2 -n 4"),
    ("/opt/openmpi/bin/mpirun --bind-to none", {"SLURM_JOB_ID": "17"}, "/opt/openmpi/bin/mpirun --bind-to none -n 4"),
])
def test_launcher_command(launcher, environ, expected):
    assert mpi.launcher_command(launcher, 4, 2, environ) == expected


# ----------------------------------------------------------------------------------- real MPI runs
@pytest.mark.slow
@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec: scripts/setup.sh installs Open MPI")
def test_four_ranks_equal_one_rank(tmp_path):
    """4 ranks on the 4-atom cell with a 3x3 k mesh: GPAW splits 2 k-point groups x 2 domains (9 k points
    do not divide evenly), so both the k-point gather and the domain sum of the H(R) extraction are used."""
    atoms = layers.build_bilayer("AB")
    atoms.rattle(0.05, seed=3)
    path = tmp_path / "rattled.extxyz"
    write_structure(path, atoms)
    dft_cfg = config.section_config("dft")
    dft_cfg.update(basis="sz(dzp)", kpts_primitive=[3, 3], symmetry="off")
    cfg = {"dft": dft_cfg, "system": config.section_config("system")}

    serial = scf.run(path, tmp_path / "serial.h5", cfg)
    out = tmp_path / "ranks4.h5"
    result = subprocess.run(
        [MPIEXEC, "--oversubscribe", "-n", "4", "mlepi", "dft", str(path), "--params", json.dumps(cfg),
         "--out", str(out), "--log", str(tmp_path / "ranks4.gpaw.txt")],
        capture_output=True, text=True, env=subprocess_env(), timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    gpaw_log = (tmp_path / "ranks4.gpaw.txt").read_text()
    assert "kpt:    2" in gpaw_log and "domain: 2" in gpaw_log, gpaw_log[:3000]
    assert result.stderr.count("mlepi.dft.scf INFO dft rattled") == 1, "ranks other than 0 should not log"
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".h5") == ["ranks4.h5", "serial.h5"]

    a, b = FramesFile(serial)[0], FramesFile(out)[0]
    assert b.energy == pytest.approx(a.energy, abs=1e-9)
    assert b.fermi_level == pytest.approx(a.fermi_level, abs=1e-8)
    np.testing.assert_allclose(b.forces, a.forces, atol=1e-8)
    np.testing.assert_array_equal(b.edge_index, a.edge_index)
    np.testing.assert_array_equal(b.cell_shift, a.cell_shift)
    np.testing.assert_allclose(b.H, a.H, atol=1e-9)
    np.testing.assert_allclose(b.S, a.S, atol=1e-12)


def test_dft_rule_launches_its_ranks(tmp_path):
    """dft_ranks > 1 makes the dft rule an MPI job of that many tasks, started by the configured launcher."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg.setdefault("resources", {}).update(dft_ranks=3, dft_threads=2, mpi_launcher="srun --mpi=pmix")
    path = tmp_path / "ranks.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "-n", "-p", "--cores", "6", config=path).stdout
    dft_jobs = [block for block in out.split("\n\n") if "rule dft:" in block]
    assert dft_jobs, out[-3000:]
    for block in dft_jobs:
        assert "threads: 6" in block and "tasks=3" in block and "cpus_per_task=2" in block, block
        assert "mpi=srun --mpi=pmix --cpus-per-task=2 -n 3" in block, block
        assert "OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 srun --mpi=pmix --cpus-per-task=2 -n 3 mlepi dft" in block
    # One rank: a plain process, not an MPI job (the SLURM plugin refuses mpi with a single task).
    plain = snakemake(tmp_path, "-n", "-p").stdout
    block = next(b for b in plain.split("\n\n") if "rule dft:" in b)
    assert "mpi=" not in block and "-n 1" not in block and "OPENBLAS_NUM_THREADS=1 mlepi dft" in block


# Like the `mlepi` entry point: nothing at import time (spawned workers import the main module again).
WORKER_UNDER_MPIEXEC = """
import numpy as np

if __name__ == "__main__":
    from mlepi.dft import mpi
    mpi.prepare()  # as mlepi.cli does: GPAW starts MPI in this launched process
    from mlepi import config
    from mlepi.dft import matrices, scf
    from mlepi.geometry import layers
    from mlepi.ml import infer

    atoms = layers.build_bilayer("AB")
    cfg = config.section_config("dft")
    cfg["basis"] = "sz(dzp)"
    here = matrices.overlap_blocks(atoms, cfg)[2]
    from gpaw.mpi import world
    assert world.size == 1 and "GPAW_MPI_BACKEND" in __import__("os").environ
    with infer.worker_pool(2) as pool:
        there = [result[2] for result in pool.map(matrices.overlap_blocks, [atoms, atoms], [cfg, cfg])]
    assert all(np.array_equal(S, here) for S in there)
    print("workers ok")
"""


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec: scripts/setup.sh installs Open MPI")
def test_infer_workers_under_a_launcher_keep_gpaw_serial(tmp_path):
    """`mlepi infer --workers` inside an MPI launch (every SLURM job step is one, through PMIx): the spawned
    workers inherit the launcher's variables but are no ranks; they compute GPAW's S serially, as the parent
    does, instead of dying in MPI_Init (found in the test cluster's supercell_bands job)."""
    script = tmp_path / "workers.py"
    script.write_text(WORKER_UNDER_MPIEXEC)
    result = subprocess.run([MPIEXEC, "-n", "1", sys.executable, str(script)], capture_output=True, text=True,
                            env=subprocess_env(), timeout=300, check=False)
    assert result.returncode == 0 and "workers ok" in result.stdout, result.stderr[-4000:]


def test_serial_worker_drops_the_launcher_and_gpaws_mpi_backend(monkeypatch):
    for name, value in (("PMIX_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "1"), ("GPAW_MPI_BACKEND", "cgpaw")):
        monkeypatch.setenv(name, value)
    mpi.serial_worker()
    assert not mpi.launched() and "GPAW_MPI_BACKEND" not in os.environ
