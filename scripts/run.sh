#!/usr/bin/env bash
# Set everything up and run the default workflow (config/config.yaml) on this machine.
# Extra arguments go to snakemake, e.g. `scripts/run.sh --configfile config/paper.yaml`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" OMP_NUM_THREADS=1
exec snakemake --profile profiles/local "$@"
