"""Lattice vibrations: phonopy displacements (``displace``), force constants and phonon bands (``phonons``),
Monte Carlo thermal displacements (``thermal``, ``docs/thermal.md``)."""
