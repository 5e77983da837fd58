"""HedgeNet: heterogeneous message passing for energies, forces and LCAO Hamiltonian/overlap blocks.

Architecture
------------
- **Embeddings.** Each atom starts from a learned embedding of its species. ``num_interactions`` interaction
  layers then add messages from neighbours. A message along edge (i, j) is a continuous filter of the bond
  length (Bessel radial basis times a smooth polynomial envelope that vanishes with two continuous derivatives at
  the cutoff) multiplied with a linear map of h_j. **Intra-layer and inter-layer edges have separate filter and
  message modules** (``heterogeneous: true``), each with its own cutoff (``cutoff_intra``, ``cutoff_inter``);
  their aggregated messages are summed into one update of h_i. With ``heterogeneous: false`` one shared module
  takes all edges (same edges, same cutoffs, same features): the ablation of the paper's central idea.
  The message-passing modules are in :mod:`mlepi.ml.interactions`.
- **Energy and forces.** E = sum_i [E0(Z_i) + s * e(h_i)], with per-species reference energies E0 and a scale
  s set from the training data (then learned / fixed, see :meth:`HedgeNet.set_standardisation`). Forces are
  -dE/dx by autograd, so force constants are second derivatives of one energy, consistent by construction.
- **Hamiltonian blocks** (:mod:`mlepi.ml.block_readout`). Every block is written in the coupled basis of its two
  orbital shells (Clebsch-Gordan couplings to degree L) with coefficients = invariant weights times equivariant
  features: the bond direction's harmonics Y_L(n), the two atoms' neighbourhood moments M_L (Σ_k over
  message-passing neighbours of a learned radial/feature weight times Y_L(n_ik)), and products of the two,
  [Y_k(n) ⊗ M_K]_L, polar or axial as parity asks (:class:`mlepi.ml.block_readout.BondFeatures`). The weights come from
  an MLP of (h_i, h_j, the moments' norms, Y_L(n)·M_L, bond length). On-site blocks: the per-species mean (its
  rotation-invariant part) plus a correction from h_i and i's moments; off-site blocks vanish at rc_i + rc_j
  (envelope). Intra-layer and inter-layer bonds have separate off-site heads and separate moments when
  heterogeneous (hoppings within a layer, gamma0 ~ 3 eV, and between layers, gamma1 ~ 0.4 eV, differ in kind,
  not only in distance).
- **Overlap.** S is exactly a two-centre integral: S_ij(R) depends only on the two species and the bond
  vector, not on the environment or the density. HedgeNet therefore predicts S from (species pair, bond length,
  bond direction) alone, with no message passing: the Slater-Koster form, exact in the coupled basis. On-site S
  blocks are a per-species constant matrix (the overlap of an atom's own orbitals). Inference takes GPAW's exact
  S instead (docs/hedgenet.md).

What is guaranteed
------------------
By construction (tests in ``tests/test_model.py``):

- permutation equivariance of all outputs; invariance under lattice translations and under re-wrapping an atom
  into another periodic image (blocks follow their (i, j, R) label);
- O(3) covariance: under any rotation or reflection R of the whole structure the energy is invariant, forces
  rotate as vectors and every H and S block as its orbitals, H'_ij = U_i H_ij U_j^T (U: GPAW's real-harmonic
  Wigner matrices, :mod:`mlepi.ml.wigner`), to rounding;
- forces = -dE/dx exactly (autograd), smooth (C2) in positions within the graph;
- Hermiticity H_ij(R) = H_ji(-R)^T and S_ij(R) = S_ji(-R)^T exactly: every off-site block is
  1/2 [g(i, j, r) + g(j, i, -r)^T] and every on-site block is symmetrised;
- blocks are zero outside each atom's orbital count (zero-padded layout of ``docs/data.md``) and vanish
  smoothly at |r| = rc_i + rc_j.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from mlepi.config import section_config
from mlepi.formats.frames import orbital_counts
from mlepi.formats.provenance import atomic_path
from mlepi.formats.torch_files import TorchFileError, read_torch_file
from mlepi.ml.block_readout import (
    POLAR,
    BondBlock,
    BondFeatures,
    Coupling,
    Moments,
    OnsiteBlock,
    SphericalHarmonics,
    by_degree,
    orbital_shells,
)
from mlepi.ml.graph import INTER, INTRA
from mlepi.ml.interactions import EDGE_CHUNK, BesselBasis, Interaction, chunk_size, envelope, mlp
from mlepi.ml.irreps import L_MAX

MODEL_SCHEMA = "mlepi.hedgenet"
# 2: O(3)-equivariant block readout (mlepi.ml.block_readout); 3: polar octupole products, H decay
MODEL_SCHEMA_VERSION = 5  # 4: model.energy_degree (angular energy branch); 5: model.energy_vectors
# Older versions this mlepi still reads, with the keys they predate set to what those models were.
OLDER_SCHEMA_KEYS = {4: {"energy_vectors": 0}}
DECAY_DEGREE = 3  # polynomial degree in r of log |H| of off-site blocks (HedgeNet.H_decay)

PAIR_CHUNK = 1024  # edge pairs (e, reverse e) per chunk of the block readout: a working set that stays in cache


def reverse_edges(i: torch.Tensor, j: torch.Tensor, cell_shift: torch.Tensor, n_atoms: int
                  ) -> torch.Tensor | None:
    """Position of the reverse (j, i, -R) of each edge (i, j, R), ``[E]``, or None if any is missing."""
    if len(i) == 0:
        return torch.zeros(0, dtype=torch.long, device=i.device)
    m = int(cell_shift.abs().max()) + 1
    base = 2 * m + 1

    def key(a, b, shift):
        k = a * n_atoms + b
        for c in range(3):
            k = k * base + (shift[:, c] + m)
        return k

    keys = key(i, j, cell_shift)
    sorted_keys, order = torch.sort(keys)
    wanted = key(j, i, -cell_shift)
    pos = torch.searchsorted(sorted_keys, wanted).clamp(max=len(keys) - 1)
    if not bool((sorted_keys[pos] == wanted).all()):
        return None
    return order[pos]


# --------------------------------------------------------------------------------------------------------- model
class HedgeNet(nn.Module):
    """Heterogeneous edge network for E, F, H(R) and S(R) of LCAO calculations (see the module docstring).

    Parameters
    ----------
    config : dict
        The ``model`` config section (missing keys take the schema defaults, unknown keys are an error).
    basis : dict
        The frames-file basis description (``orbitals``, ``rcut``, ``valence`` per element Z); fixes the species,
        the orbital layout (n_orb_max) and the block range rc_i + rc_j.
    """

    def __init__(self, config: dict, basis: dict):
        super().__init__()
        self.config = section_config("model", config, source="HedgeNet")
        self.basis = basis
        self.metadata: dict = {}
        cfg = self.config
        self.species = sorted(int(z) for z in basis["orbitals"])
        n_species = len(self.species)
        lookup = torch.full((max(self.species) + 1,), -1, dtype=torch.long)
        lookup[self.species] = torch.arange(n_species)
        self.register_buffer("species_of_z", lookup)
        self.register_buffer("n_orb_of_species", torch.as_tensor(orbital_counts(self.species, basis)))
        rcut = {int(z): float(r) for z, r in basis["rcut"].items()}
        self.register_buffer("rcut_of_species", torch.tensor([rcut[z] for z in self.species]))  # Angstrom
        self.n_orb = int(self.n_orb_of_species.max())
        l_max = max(l for orbs in basis["orbitals"].values() for _, l in orbs)
        if l_max > 2:
            raise ValueError(f"basis {basis.get('name')!r} has orbitals of l = {l_max}; HedgeNet's block readout "
                             "couples orbitals up to l = 2 (d): choose a basis without f functions")

        hidden, n_rbf = int(cfg["hidden"]), int(cfg["n_rbf"])
        self.kinds = ("intra", "inter") if cfg["heterogeneous"] else ("shared",)
        self.embedding = nn.Embedding(n_species, hidden)
        self.rbf = BesselBasis(n_rbf, max(cfg["cutoff_intra"], cfg["cutoff_inter"]))
        # Angular invariants in the energy branch (model.energy_degree > 0); none keeps the invariant
        # continuous-filter model (and its parameters, so a seed gives the same initial weights as before).
        energy_degree = int(cfg["energy_degree"])
        angular = (int(cfg["moment_channels"]), energy_degree) if energy_degree else None
        self.energy_harmonics = SphericalHarmonics(energy_degree) if energy_degree else None
        # Equivariant vector features between interactions (model.energy_vectors > 0); none adds no parameters.
        self.interactions = nn.ModuleList(Interaction(hidden, n_rbf, self.kinds, angular, int(cfg["energy_vectors"]))
                                          for _ in range(int(cfg["num_interactions"])))
        self.energy_head = mlp(hidden, hidden, 1)

        # Equivariant block readouts (mlepi.ml.block_readout): blocks of two l_max shells couple to degrees up to
        # 2 l_max; harmonics and moments go one degree higher, for a three-fold site's octupole (BondFeatures). Moments
        # per edge kind; couplings per species pair (off-site, with axial paths) and per species (on-site, polar
        # only; S, polar only: the Slater-Koster form).
        self.harmonics = SphericalHarmonics(min(2 * l_max + 1, L_MAX))
        channels = int(cfg["moment_channels"])
        self.moments = nn.ModuleDict({k: Moments(hidden, n_rbf, channels) for k in self.kinds})
        n_moments = channels * len(self.kinds)
        n_degrees = self.harmonics.l_max + 1
        shells = [orbital_shells(basis["orbitals"][str(z)]) for z in self.species]
        bond = {f"{a}_{b}": Coupling(shells[a], shells[b], self.n_orb, axial=True)
                for a in range(n_species) for b in range(n_species)}
        bond_polar = {f"{a}_{b}": Coupling(shells[a], shells[b], self.n_orb, axial=False)
                      for a in range(n_species) for b in range(n_species)}
        self.onsite_couplings = {str(a): Coupling(shells[a], shells[a], self.n_orb, axial=False)
                                 for a in range(n_species)}
        n_node = hidden + n_moments * n_degrees  # h_i and the norms of its moments per degree
        self.bond_features = BondFeatures(self.harmonics.l_max, {g[:2] for c in bond.values() for g in c.groups},
                                          n_moments)
        self.H_bond = nn.ModuleDict({
            k: BondBlock(n_node, 2 * n_moments * n_degrees, hidden, n_rbf, bond, self.bond_features.channels)
            for k in self.kinds})
        self.H_onsite = OnsiteBlock(n_node, hidden, self.onsite_couplings, n_moments)
        # Overlap: two-centre, so only species embeddings and bond geometry (no message passing).
        n_s = max(4, hidden // 4)
        self.S_species = nn.Embedding(n_species, n_s)
        self.S_bond = BondBlock(n_s, 0, hidden, n_rbf, bond_polar, {(POLAR, L): 1 for L in range(2 * l_max + 1)})
        self.block_rbf = BesselBasis(n_rbf, 2.0 * float(self.rcut_of_species.max()))

        # Standardisation, fixed from training data by set_standardisation and saved with the weights. Shifts
        # in eV are buffers, not parameters: an optimizer step of lr in absolute eV would be far coarser than
        # the meV/atom accuracy wanted; the network learns the residual in units of the scales.
        self.register_buffer("energy_shift", torch.zeros(n_species))  # eV per atom, E0(Z)
        self.register_buffer("energy_scale", torch.tensor(1.0))  # eV
        self.register_buffer("avg_neighbors", torch.ones(3))  # intra, inter, all
        self.register_buffer("H_onsite_mean", torch.zeros(n_species, self.n_orb, self.n_orb))  # eV
        self.register_buffer("H_scale", torch.tensor(1.0))  # eV
        # Off-site H scale per edge kind: H_scale * exp(p_k(r)), p_k a polynomial fitted to log of the training
        # blocks' RMS against bond length over [r_lo, r_hi] (zero until set_standardisation: scale H_scale).
        self.register_buffer("H_decay", torch.zeros(len(self.kinds), DECAY_DEGREE + 1))  # highest power first
        self.register_buffer("H_decay_range", torch.tensor([[0.0, 1e3]] * len(self.kinds)))  # Angstrom
        # On-site S is the overlap of an atom's own orbitals: a per-species constant, taken from the data.
        self.register_buffer("S_onsite", torch.eye(self.n_orb).repeat(n_species, 1, 1) * self._species_mask())
        self.register_buffer("S_scale", torch.tensor(0.1))

    # ------------------------------------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, config: dict, basis: dict) -> "HedgeNet":
        """A fresh model from the ``model`` config section and the dataset's basis description."""
        return cls(config, basis)

    def save(self, path, **metadata) -> None:
        """Write config, basis, weights and ``metadata`` (e.g. DFT parameters, provenance) atomically."""
        state = {"schema": MODEL_SCHEMA, "schema_version": MODEL_SCHEMA_VERSION, "config": self.config,
                 "basis": self.basis, "metadata": {**self.metadata, **metadata},
                 "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, path, map_location="cpu") -> "HedgeNet":
        """A model written by :meth:`save`, in eval mode; ``model.metadata`` holds the saved metadata."""
        path = Path(path)
        state = read_torch_file(path, MODEL_SCHEMA, "a HedgeNet model file (model.pt of `mlepi train`)")
        version = state.get("schema_version")
        if version != MODEL_SCHEMA_VERSION and version not in OLDER_SCHEMA_KEYS:
            raise TorchFileError(f"{path}: model schema_version {version}, this mlepi reads "
                                 f"{sorted([*OLDER_SCHEMA_KEYS, MODEL_SCHEMA_VERSION])}; retrain the model")
        model = cls({**OLDER_SCHEMA_KEYS.get(version, {}), **state["config"]}, state["basis"])
        dtype = next(v.dtype for v in state["state_dict"].values() if v.is_floating_point())
        model.to(dtype)  # keep the precision the weights were saved in
        model.load_state_dict(state["state_dict"])
        model.metadata = state["metadata"]
        return model.eval()

    def set_standardisation(self, stats: dict) -> None:
        """Set output shifts and scales from training statistics (keys as returned by ``train.statistics``).

        Mean on-site blocks keep only their rotation-invariant part: a mean over structures of one orientation
        (layers in the xy plane) is anisotropic, and a constant anisotropic block would break rotation
        covariance; the moments of the on-site readout carry the anisotropy instead.
        """
        with torch.no_grad():
            for key in ("energy_shift", "energy_scale", "avg_neighbors", "H_onsite_mean", "H_scale", "H_decay",
                        "H_decay_range", "S_onsite", "S_scale"):
                if key in stats:
                    value = np.asarray(stats[key], dtype=float)
                    if key in ("H_onsite_mean", "S_onsite"):
                        value = np.stack([self.onsite_couplings[str(a)].isotropic_part(block)
                                          for a, block in enumerate(value)])
                    getattr(self, key).copy_(torch.as_tensor(value))

    # ----------------------------------------------------------------------------------------------- helpers
    def decay(self, r: torch.Tensor, same_layer: torch.Tensor) -> torch.Tensor:
        """exp(p_k(r)) of off-site bonds of length ``r`` (Å), k their edge kind (``same_layer``: intra): how the
        training blocks' magnitude falls with distance. Without it the readout's output is of one scale at every
        length, and its errors on the many long bonds where DFT is ~0 (1e-5 eV) add up in H(k): 5-9 meV per
        element beyond 5 Å in the bilayer, 10 % of the static v_F (benchmarks/NOTES.md §17)."""
        k = torch.zeros_like(same_layer, dtype=torch.long) if self.kinds == ("shared",) else (~same_layer).long()
        lo, hi = self.H_decay_range[k].to(r.dtype).unbind(1)
        x = torch.minimum(torch.maximum(r, lo), hi)  # the fit holds where there were data
        coef = self.H_decay[k].to(r.dtype)
        p = coef[:, 0]
        for c in range(1, coef.shape[1]):
            p = p * x + coef[:, c]
        return torch.exp(p)

    def _species_mask(self) -> torch.Tensor:
        n = self.n_orb_of_species  # [n_species]
        rows = torch.arange(self.n_orb)
        valid = rows.unsqueeze(0) < n.unsqueeze(1)  # [n_species, n_orb]
        return (valid.unsqueeze(2) & valid.unsqueeze(1)).to(torch.get_default_dtype())

    @property
    def dtype(self) -> torch.dtype:
        """Precision of the weights (float32 when trained so, the default)."""
        return self.energy_scale.dtype

    def species_index(self, numbers: torch.Tensor) -> torch.Tensor:
        """Species index of each atom, ``[n_atoms]``; fails for an element the basis does not describe."""
        if int(numbers.max()) >= len(self.species_of_z) or bool((self.species_of_z[numbers] < 0).any()):
            raise ValueError(f"structure contains elements {sorted(set(numbers.tolist()))} but the model's basis "
                             f"only has {self.species}")
        return self.species_of_z[numbers]

    def fills_padding(self, numbers: torch.Tensor) -> bool:
        """Whether every atom has the padded orbital count (one species, or species of equal counts): then every
        element of every block is a real orbital pair and :meth:`block_mask` is all True."""
        return bool((self.n_orb_of_species[self.species_index(numbers)] == self.n_orb).all())

    def block_mask(self, numbers: torch.Tensor, block_edge_index: torch.Tensor) -> torch.Tensor:
        """True where a padded block element is a real orbital pair, ``[n_blocks, n_orb, n_orb]``."""
        n = self.n_orb_of_species[self.species_index(numbers)]  # [n_atoms]
        rows = torch.arange(self.n_orb, device=n.device)
        valid = rows.unsqueeze(0) < n.unsqueeze(1)  # [n_atoms, n_orb]
        i, j = block_edge_index
        return valid[i].unsqueeze(2) & valid[j].unsqueeze(1)

    def real_pairs(self, blocks: torch.Tensor, numbers: torch.Tensor, block_edge_index: torch.Tensor) -> torch.Tensor:
        """The elements of ``blocks`` [n_blocks, n_orb, n_orb] that are real orbital pairs, flattened in
        :meth:`block_mask`'s order. Without padding that is the flattening: a boolean selection would cost ~7 ms
        per training step and target (forward and backward) for two 36-atom frames, ~10 % of the step."""
        if self.fills_padding(numbers):
            return blocks.reshape(-1)
        return blocks[self.block_mask(numbers, block_edge_index)]

    @staticmethod
    def _bond_vectors(pos, cell, batch, edge_index, cell_shift):
        i, j = edge_index
        offset = torch.einsum("ec,ecd->ed", cell_shift.to(pos.dtype), cell[batch[i]])  # [E, 3]
        return pos.index_select(0, j) - pos.index_select(0, i) + offset  # [E, 3] Angstrom

    # ----------------------------------------------------------------------------------------------- forward
    def forward(self, data, *, forces: bool = True, create_graph: bool = False, blocks: bool = True,
                overlap: bool = True) -> dict:
        """Predict from a graph (``graph.frame_to_data``, batched or not).

        Parameters
        ----------
        forces : compute forces = -dE/dpos (autograd).
        create_graph : keep the graph of the force computation (training on forces, Hessians).
        blocks : compute H (and S) for the block edges.
        overlap : also compute S (inference with GPAW's exact S skips it: a quarter of the block cost).

        Returns
        -------
        dict with ``energy`` [n_graphs] eV, ``node_energy`` [n_atoms] eV, ``forces`` [n_atoms, 3] eV/Å,
        ``H`` [n_blocks, n_orb, n_orb] eV and ``S`` (same, 1, if ``overlap``), zero outside each atom's orbitals.
        """
        dtype = self.dtype
        # A caller that already tracks pos (Hessians, external derivatives) keeps its graph.
        pos = data.pos if data.pos.requires_grad else data.pos.detach().to(dtype).requires_grad_(forces)
        pos = pos.to(dtype)  # [n_atoms, 3]
        n_atoms = pos.shape[0]
        batch = getattr(data, "batch", None)
        if batch is None:
            batch = torch.zeros(n_atoms, dtype=torch.long, device=pos.device)
        cell = data.cell.to(dtype).view(-1, 3, 3)  # [n_graphs, 3, 3]
        n_graphs = cell.shape[0]
        species = self.species_index(data.numbers)  # [n_atoms]

        with torch.enable_grad():
            vec = self._bond_vectors(pos, cell, batch, data.edge_index, data.edge_cell_shift)  # [E, 3]
            r = vec.norm(dim=-1)  # [E]
            rbf = self.rbf(r)  # [E, n_rbf]
            cut = torch.where(data.edge_type == INTRA, self.config["cutoff_intra"], self.config["cutoff_inter"])
            env = envelope(r / cut.to(dtype))  # [E]
            per_edge = {"rbf": rbf, "env": env}
            unit = vec / r.unsqueeze(-1)  # [E, 3], with its gradient: forces see angles
            if self.energy_harmonics is not None:
                per_edge["harmonics"] = self.energy_harmonics(unit)  # [E, (L+1)^2]
            if self.config["energy_vectors"]:
                per_edge["unit"] = unit
            groups = self._edge_groups(data.edge_index, data.edge_type, **per_edge)
            h, v = self.embedding(species), None  # [n_atoms, hidden], vector features [n_atoms, C, 3]
            for interaction in self.interactions:
                h, v = interaction(h, groups, v)
            node_energy = self.energy_shift[species] + self.energy_scale * self.energy_head(h).squeeze(-1)
            energy = node_energy.new_zeros(n_graphs).index_add_(0, batch, node_energy)  # [n_graphs]
            total = energy.sum()  # inside enable_grad: forces work under an outer no_grad (inference)
        if not torch.is_grad_enabled():  # the caller asked for no graph; energies were built with one for forces
            energy, node_energy = energy.detach(), node_energy.detach()
        out = {"energy": energy, "node_energy": node_energy}
        if forces:
            # Keep the graph when a later backward may pass through it (H loss in training).
            keep = create_graph or (blocks and torch.is_grad_enabled())
            (grad,) = torch.autograd.grad(total, pos, create_graph=create_graph, retain_graph=keep)
            out["forces"] = -grad  # [n_atoms, 3]
        if blocks:
            out.update(self._blocks(data, pos, cell, batch, species, h, vec, r, rbf, env, overlap))
        return out

    def _edge_groups(self, edge_index, edge_type, **per_edge) -> dict:
        """Edges per module kind: {``edges``: edge_index, each of ``per_edge`` restricted to them, ``norm``: the
        mean neighbour count}."""
        if self.kinds == ("shared",):
            return {"shared": {"edges": edge_index, **per_edge, "norm": self.avg_neighbors[2]}}
        groups = {}
        for kind, code in (("intra", INTRA), ("inter", INTER)):
            sel = (edge_type == code).nonzero().squeeze(1)  # once: each boolean mask would search again
            groups[kind] = {"edges": edge_index[:, sel], **{k: t.index_select(0, sel) for k, t in per_edge.items()},
                            "norm": self.avg_neighbors[code]}
        return groups

    def _blocks(self, data, pos, cell, batch, species, h, vec, r, rbf, env, overlap: bool) -> dict:
        """H (and S) on the block edges (module docstrings here and of :mod:`mlepi.ml.block_readout`)."""
        block_index = data.block_edge_index  # [2, B]
        # Blocks depend on positions directly only when the caller tracks pos (dH/du for electron-phonon
        # couplings); otherwise the bond geometry is detached, which spares the training backward pass the
        # unused gradient with respect to positions.
        tracked = data.pos.requires_grad
        geometry_pos = pos if tracked else pos.detach()
        bvec = self._bond_vectors(geometry_pos, cell, batch, block_index, data.block_cell_shift)  # [B, 3]
        i, j = block_index
        onsite = (i == j) & (data.block_cell_shift == 0).all(dim=1)  # [B]
        on, off = onsite.nonzero().squeeze(1), (~onsite).nonzero().squeeze(1)  # [B_on], [B_off]
        io, jo = i[off], j[off]
        bv = bvec[off]
        br = bv.norm(dim=-1)  # [B_off]
        harmonics = self.harmonics(bv / br.unsqueeze(-1))  # [B_off, (L+1)^2]
        brbf = self.block_rbf(br)  # [B_off, n_rbf]
        benv = envelope(br / (self.rcut_of_species[species[io]] + self.rcut_of_species[species[jo]]))
        n_species = len(self.species)
        pair = species[io] * n_species + species[jo]  # [B_off]: the code of the species pair (a, b)
        rev = reverse_edges(io, jo, data.block_cell_shift[off], len(species))
        n = self.n_orb
        # Off-site edges in chunks whose working set stays in cache whatever the size of the structure (linear
        # scaling, docs/performance.md). With reverse edges, each edge e sits next to rev(e) (e < rev(e) first),
        # so g runs once per edge and the pair form needs no gather across the structure.
        if rev is not None:
            first = (torch.arange(len(rev), device=rev.device) < rev).nonzero().squeeze(1)
            pairs = torch.stack([first, rev[first]], dim=1).reshape(-1)
            chunks = pairs.split(2 * chunk_size(PAIR_CHUNK, rev.device))
        else:
            chunks = torch.arange(len(off), device=off.device).split(2 * chunk_size(PAIR_CHUNK, off.device))

        def inputs(idx, reverse: bool):
            """(source atoms, target atoms, radial basis, direction harmonics, species pair) of off-site edges
            ``idx``, for g(i, j, r) or, ``reverse``, g(j, i, -r)."""
            if reverse:
                return (jo[idx], io[idx], brbf[idx], harmonics[idx] * self.harmonics.parity.to(bv.dtype),
                        species[jo[idx]] * n_species + species[io[idx]])
            return io[idx], jo[idx], brbf[idx], harmonics[idx], pair[idx]

        def assemble(atom_blocks, bond, scale):
            """On-site: ``atom_blocks[i]``. Off-site: the pair form 1/2 [g(i, j, r) + g(j, i, -r)^T], Hermitian
            by construction, times ``scale`` [B_off] and the envelope; ``bond(idx, reverse)`` is g on off-site edges
            ``idx``. The reverse edge (j, i, -R) supplies g(j, i, -r) when present (always, for the block edges
            of docs/data.md), otherwise it is evaluated directly."""
            # Every block is added once to zeros: the backward pass of an in-place add passes the gradient on, that
            # of an in-place write would copy all blocks once per chunk (training profile, benchmarks/NOTES.md §22).
            blocks = bvec.new_zeros(block_index.shape[1], n, n)
            blocks.index_add_(0, on, atom_blocks.index_select(0, i[on]))
            for sel in chunks:
                g = bond(sel, False)  # [C, n, n]; with reverse edges: e, rev(e), e', rev(e'), ...
                g_rev = g.view(-1, 2, n, n).flip(1).reshape(g.shape) if rev is not None else bond(sel, True)
                blocks.index_add_(0, off[sel], (scale * benv)[sel].view(-1, 1, 1) * 0.5 * (g + g_rev.transpose(1, 2)))
            return blocks

        # Neighbourhood moments of every atom, per edge kind, over the message-passing edges.
        mp_unit = vec / r.unsqueeze(-1)
        mp_harmonics = self.harmonics(mp_unit if tracked else mp_unit.detach())  # [E, (L+1)^2]
        groups = self._edge_groups(data.edge_index, data.edge_type, rbf=rbf, env=env, harmonics=mp_harmonics)
        chunk = chunk_size(EDGE_CHUNK, h.device)
        moments = torch.cat([self.moments[kind](h, g["edges"], g["rbf"], g["env"], g["harmonics"], g["norm"], chunk)
                             for kind, g in groups.items()], dim=1)  # [n_atoms, C, ..]
        node = torch.cat([h, self.harmonics.per_degree(moments * moments).flatten(1)], dim=1)  # invariants

        # H on-site: the per-species (isotropic) mean plus an environment-dependent, symmetrised correction.
        raw = self.H_onsite(node, moments, species)  # [n_atoms, n, n]
        raw = 0.5 * (raw + raw.transpose(1, 2))
        H_atom = 0.5 * (self.H_onsite_mean + self.H_onsite_mean.transpose(1, 2))[species] + self.H_scale * raw
        same_layer = data.layer[io] == data.layer[jo]
        h_proj = {kind: head.project(node) for kind, head in self.H_bond.items()}

        # Edges in pairs (e, rev(e)) when the reverse edges are present: the bond features are computed for e
        # alone, those of rev(e) are the same channels up to sign (BondFeatures.reverse_mixing).
        paired = rev is not None
        first = slice(None, None, 2) if paired else slice(None)

        def H_bond(idx, reverse):
            src, dst, radial, sh, codes = inputs(idx, reverse)

            def kind_blocks(kind, sel=slice(None)):
                s, d = src[sel], dst[sel]
                ends = torch.stack([s[first], d[first]], dim=1).flatten()  # one gather for both atoms' moments
                pair = moments.index_select(0, ends).view(len(ends) // 2, 2 * moments.shape[1], moments.shape[2])
                features, invariants = self.bond_features(sh[sel][first], pair, self.harmonics)
                if paired:
                    invariants = torch.stack([invariants, self.bond_features.reverse_invariants(invariants)],
                                             dim=1).flatten(0, 1)
                return self.H_bond[kind](h_proj[kind], s, d, radial[sel], invariants, features, codes[sel],
                                         self.bond_features if paired else None)

            if "shared" in self.H_bond:
                return kind_blocks("shared")
            g = bv.new_zeros(len(idx), n, n)
            intra = same_layer[idx]
            for kind, sel in (("intra", intra), ("inter", ~intra)):
                sel = sel.nonzero().squeeze(1)
                g.index_put_((sel,), kind_blocks(kind, sel))
            return g

        out = {"H": assemble(H_atom, H_bond, self.H_scale * self.decay(br, same_layer))}
        if overlap:
            s_proj = self.S_bond.project(self.S_species(species))  # species embeddings, [n_atoms, n_s] -> hidden

            def S_bond(idx, reverse):
                src, dst, radial, sh, codes = inputs(idx, reverse)
                features = {(POLAR, L): y.unsqueeze(2) for L, y in enumerate(by_degree(sh, 1))}
                return self.S_bond(s_proj, src, dst, radial, None, features, codes)

            S_atom = 0.5 * (self.S_onsite + self.S_onsite.transpose(1, 2))[species]
            out["S"] = assemble(S_atom, S_bond, self.S_scale.expand_as(br))
        return out
