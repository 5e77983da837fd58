"""Electrons of the bilayer from H(R), S(R): Bloch sums and eigensolvers, unfolding to the primitive zone, the
SWMcC model, the ``bands`` and ``renormalization`` stages and the supercell convergence table (``docs/bands.md``)."""
