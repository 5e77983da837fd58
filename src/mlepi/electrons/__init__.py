"""Electrons of the bilayer from H(R), S(R): Bloch sums and eigensolvers, unfolding to the primitive zone, the
SWMcC model, and the ``bands`` and ``renormalization`` stages (``docs/bands.md``)."""
