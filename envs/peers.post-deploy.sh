#!/usr/bin/env sh
# Snakemake runs this inside the freshly created conda environment (--software-deployment-method conda).
# It installs mlepi from this checkout; conda already provides every dependency. ($0 is this file: the env
# file itself is copied to .snakemake/conda/ first, so a relative `pip: -e ..` there would miss the checkout.)
set -e
pip install --no-deps -e "$(dirname "$0")/.."
