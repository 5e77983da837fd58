"""GPAW under an MPI launcher: ``mpiexec -n N mlepi dft ...`` or ``srun -n N mlepi dft ...``.

GPAW 26 starts MPI only inside ``gpaw python`` or when ``GPAW_MPI_BACKEND=cgpaw`` is set before GPAW is
first imported, and it refuses to run at all when it sees a launcher without either. GPAW is imported
early and indirectly: ``import ase.io`` loads GPAW's ASE I/O plugin. So :func:`prepare` must run before
the first ``import ase.io``; ``mlepi.cli.main`` calls it first thing. This module imports nothing heavy.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

# Variables by which GPAW itself recognises an MPI launcher (gpaw/_broadcast_imports.py).
_LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "I_MPI_MPIRUN")
# Variables holding the number of ranks and this process's rank (Open MPI's mpiexec; PMI: MPICH/Hydra,
# srun --mpi=pmi2; PMIx: srun --mpi=pmix).
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


def _first_integer(variables) -> int | None:
    """The value of the first of ``variables`` in the environment that holds a non-negative integer."""
    return next((int(os.environ[v]) for v in variables if os.environ.get(v, "").isdigit()), None)


def launched() -> bool:
    """True when an MPI launcher (mpiexec, srun with PMI/PMIx) started this process."""
    return any(variable in os.environ for variable in _LAUNCHER_VARIABLES)


def launched_ranks() -> int | None:
    """The number of ranks the launcher started; 1 without a launcher; None when the launcher does not say.

    ``srun -n N`` says N in ``SLURM_STEP_NUM_TASKS`` even when it gave the tasks no PMI (``--mpi=none``): then
    N independent processes would each compute alone, which :func:`gpaw_world` refuses.
    """
    ranks = _first_integer((*_SIZE_VARIABLES, "SLURM_STEP_NUM_TASKS"))
    if ranks is not None:
        return ranks
    return None if launched() else 1


def launched_rank() -> int:
    """This process's rank as the launcher numbered it; 0 without a launcher (the rank that writes)."""
    rank = _first_integer((*_RANK_VARIABLES, "SLURM_PROCID"))
    return 0 if rank is None else rank


def launcher_command(launcher: str, ranks: int, threads: int, environ=None) -> str:
    """The command prefix that starts ``ranks`` MPI ranks of ``threads`` cores each (``resources.mpi_launcher``).

    ``auto`` is ``srun`` inside a SLURM job (``SLURM_JOB_ID`` set: Snakemake's SLURM executor runs the rule in
    the batch script, where srun starts the ranks in the job's own allocation and MPI finds them through the
    site's PMI, ``MpiDefault``) and ``mpiexec`` elsewhere. srun also gets ``--cpus-per-task``: it does not
    inherit the job's value (the executor clears the job's SLURM_* variables), and without it a rank's BLAS
    threads would share one core.
    """
    environ = os.environ if environ is None else environ
    if launcher == "auto":
        launcher = "srun" if "SLURM_JOB_ID" in environ else "mpiexec"
    words = shlex.split(launcher)
    if Path(words[0]).name == "srun":
        words.append(f"--cpus-per-task={threads}")
    return shlex.join([*words, "-n", str(ranks)])


def prepare() -> None:
    """Let GPAW start MPI when a launcher started this process (a user's own GPAW_MPI_BACKEND wins).

    This also covers a single process under ``srun`` with PMIx (Snakemake's SLURM jobs run every rule in
    ``srun -n1``): GPAW sees the launcher and, without its MPI backend, refuses to import. A torchrun worker
    is the exception: it inherited the launcher variables of the one task that started torchrun, and is no
    MPI rank of its own; those variables are dropped there, so that GPAW stays serial in each worker.
    """
    if "TORCHELASTIC_RUN_ID" in os.environ:
        serial_worker()
    elif launched():
        os.environ.setdefault("GPAW_MPI_BACKEND", "cgpaw")


def serial_worker() -> None:
    """Keep GPAW serial in a process that inherited a launched process's environment but is no MPI rank of its
    own: a torchrun worker, or a spawned worker of ``mlepi infer --workers`` (the initializer of its pool). It
    would otherwise start MPI as the same rank as its parent, which fails (under SLURM's PMIx and mpiexec)."""
    for variable in (*_LAUNCHER_VARIABLES, *_RANK_VARIABLES, "GPAW_MPI_BACKEND"):
        os.environ.pop(variable, None)


def gpaw_world():
    """GPAW's world communicator, checked against the launcher's number of ranks.

    Raises
    ------
    RuntimeError
        GPAW's world is smaller than the launch: :func:`prepare` ran after GPAW was imported, or srun started
        the tasks without PMI; either way each rank would compute and write the same result alone.
    """
    prepare()
    from gpaw.mpi import (
        world,  # only after prepare(): GPAW picks its MPI backend when gpaw.mpi is first imported
    )

    ranks = launched_ranks()
    if ranks is not None and world.size != ranks:
        raise RuntimeError(
            f"started as one of {ranks} ranks but GPAW's world has {world.size}: the ranks would each compute "
            "alone. Under srun, give the tasks PMI (srun --mpi=pmix, or pmi2: set resources.mpi_launcher); "
            "otherwise GPAW was imported before mlepi.dft.mpi.prepare() set GPAW_MPI_BACKEND=cgpaw (call it first, "
            "as `mlepi` does).")
    return world
