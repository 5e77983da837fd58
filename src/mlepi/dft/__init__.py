"""GPAW LCAO calculations: the ``structure`` (relaxation) and ``dft`` stages, the H(R), S(R) blocks read from
GPAW, PAW setups, and starting GPAW's MPI (``docs/dft.md``)."""
