"""HedgeNet as an ASE calculator: energy (eV) and forces (eV/Å), so that phonopy, an ASE optimizer or an MD
run drives the trained model directly.

    from mlepi.ml.calculator import HedgeNetCalculator
    atoms.calc = HedgeNetCalculator("results/blg_ab/train/model.pt")
    atoms.get_forces()

The forces are minus the autograd gradient of the same energy (conservative by construction). Hamiltonian
blocks are not computed here (``mlepi predict`` writes them). Message-passing edges distinguish intra- and
inter-layer pairs, so every atom needs a layer index: the atoms' ``layer`` array when it has one, else the
z clustering of :func:`mlepi.geometry.layers.assign_layers` on the first structure the calculator sees, kept for
every later step (an MD run must not relabel atoms as they move).
"""

from __future__ import annotations

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from mlepi.formats.frames import Frame
from mlepi.geometry.layers import assign_layers
from mlepi.ml.graph import frame_to_data
from mlepi.ml.model import HedgeNet


class HedgeNetCalculator(Calculator):
    """ASE calculator of a trained HedgeNet.

    Parameters
    ----------
    model : HedgeNet or path of a ``model.pt`` written by ``mlepi train``.
    device : torch device ('cpu', 'cuda').
    dtype : evaluation precision; float64 (default) keeps finite differences of the forces smooth.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model, *, device: str = "cpu", dtype: torch.dtype = torch.float64, **kwargs):
        super().__init__(**kwargs)
        model = model if isinstance(model, HedgeNet) else HedgeNet.load(model)
        self.model = model.to(device=device, dtype=dtype).eval()
        self.device = device
        self._layer = None

    def _layers(self, atoms) -> np.ndarray:
        if "layer" in atoms.arrays:
            return np.asarray(atoms.arrays["layer"])
        if self._layer is None or len(self._layer) != len(atoms):
            self._layer = assign_layers(atoms)
        return self._layer

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        tagged = self.atoms.copy()
        tagged.set_array("layer", self._layers(self.atoms))
        cfg = self.model.config
        data = frame_to_data(Frame.from_atoms("calc", tagged), self.model.basis, cfg["cutoff_intra"],
                             cfg["cutoff_inter"], targets=False, blocks=False)
        out = self.model(data.to(self.device), forces=True, blocks=False)
        energy = float(out["energy"].detach()[0])
        self.results = {"energy": energy, "free_energy": energy,
                        "forces": out["forces"].detach().cpu().double().numpy()}
