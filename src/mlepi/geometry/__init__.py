"""Geometry of layered structures: building bilayers and labelling layers, neighbour lists, supercells and
their map to the primitive cell, tiling a primitive frame, Brillouin-zone points and paths."""
