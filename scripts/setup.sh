#!/usr/bin/env bash
# One-time setup on Debian/Ubuntu: apt prerequisites for GPAW, a .venv with the pinned packages, mlepi.
# Idempotent: a stamp in .venv records what was installed, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

# Open MPI first: GPAW then builds with MPI (mpiexec -n N mlepi dft; resources.dft_ranks).
APT_PACKAGES="libxc-dev libopenblas-dev libopenmpi-dev openmpi-bin pkg-config g++ git"
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

stamp=".venv/.mlepi-setup-$(cat requirements.txt pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi

if ! dpkg -s $APT_PACKAGES >/dev/null 2>&1; then
  echo "setup: installing Debian packages: $APT_PACKAGES"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $APT_PACKAGES >/dev/null
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of torch first and by exact pin, so nothing below pulls a multi-GB CUDA build.
.venv/bin/python -m pip install -q "$(grep '^torch==' requirements.txt)"
# GPAW compiles its C sources as C++ with mpic++ (MPI build).
.venv/bin/python -m pip install -q -r requirements.txt
if ! .venv/bin/python -c "import sys, gpaw.cgpaw as c; sys.exit(not c.have_mpi)"; then
  # pip reused a GPAW wheel it had built before Open MPI was there: build it again, with MPI.
  .venv/bin/python -m pip install -q --no-cache-dir --force-reinstall --no-deps "$(grep '^gpaw==' requirements.txt)"
fi
.venv/bin/python -m pip install -q --no-deps -e .
.venv/bin/gpaw info >/dev/null
rm -f .venv/.mlepi-setup-*
touch "$stamp"
echo "setup: done (.venv ready; activate with: source .venv/bin/activate)"
