#!/usr/bin/env bash
# Set everything up and run the whole test suite (real GPAW, phonopy, Snakemake and torch; 25-40 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# MLEPI_REQUIRE_SLURM: tests/test_slurm.py fails (instead of skipping) when the test SLURM cannot start.
export PATH="$PWD/.venv/bin:$PATH" OMP_NUM_THREADS=1 MLEPI_REQUIRE_SLURM="${MLEPI_REQUIRE_SLURM:-1}"
.venv/bin/snakemake --lint --cores 1 >/dev/null
# --durations: the slowest tests in every log, so that a CI run nearing its time limit shows where to look.
exec .venv/bin/python -m pytest -ra --durations=25 "$@"
