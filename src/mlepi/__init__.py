"""mlepi: machine-learning electron-phonon interactions from finite differences.

Subpackages by role, lower layers first (a module imports only from its own layer or below):

- ``config``: the JSON Schema of the workflow config, its validation, and which keys each stage reads;
- ``formats``: the files between stages (frames, structures, torch files, DeepH export) and their provenance;
- ``geometry``: layered structures and their layers, neighbour lists, supercell maps and tiling, Brillouin zones;
- ``electrons``: tight-binding algebra of H(R), S(R), unfolding, the SWMcC model, the band analysis stages;
- ``dft``: GPAW LCAO calculations (the structure and dft stages, H and S from GPAW, MPI);
- ``vibrations``: phonopy displacements and force constants, thermal sampling;
- ``ml``: HedgeNet and the stages that run it (train, infer, linearize, phonons_ml, supercell_bands);
- ``evaluation``: errors against DFT, the parity stage and the accuracy and performance benchmarks.

``errors`` (the one base class of user errors), ``figures`` (every plot) and ``cli`` (``mlepi <stage>``) sit
beside them.
"""
