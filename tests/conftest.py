import os
import sys
from pathlib import Path

# Tests import shared helpers from each other (e.g. the spring-network force constants).
sys.path.insert(0, str(Path(__file__).parent))
# Two cores on CI: keep BLAS/torch from oversubscribing them when GPAW or torch run in subprocesses.
os.environ.setdefault("OMP_NUM_THREADS", "1")
