"""HedgeNet (graphs, the network and its block readout) and the stages that run it: ``train``, ``infer``,
``linearize``, ``phonons_ml``, ``supercell_bands``; its ASE calculator (``docs/hedgenet.md``)."""
