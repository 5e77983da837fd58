"""The peer Hamiltonian model of stage ``peers_h``: an O(3)-equivariant e3nn network of DeepH-E3's design
(Gong et al., Nat. Commun. 14, 2848 (2023)), at a size that trains in minutes on two cores.

DeepH-E3 itself is not on PyPI, so this is its design rebuilt on e3nn (the version mace-torch brings):

- every atom carries irreps features of degrees 0..``h_l_max``, both parities, started from a species embedding;
- each of ``h_layers`` layers sends messages h_j ⊗ Y(r̂_ij) along every edge (e3nn tensor product, one weight
  per channel and path from an MLP of Bessel functions of |r_ij|, as NequIP), sums them, mixes channels and
  applies a gated non-linearity, with a residual;
- the block of edge (i, j, R) comes from both atoms' features seen from the edge, h_i ⊗ Y and h_j ⊗ Y with
  radial weights, plus the product of the two atoms' features (DeepH-E3's edge update), times a smooth envelope
  that reaches zero at the sum of the two orbital cutoffs; on-site blocks come from the atom's own features;
- each block of two shells is Σ_L C^{l_a l_b L} x_L with e3nn's Wigner 3j symbols, changed to GPAW's real
  harmonics by the orthogonal matrix that maps e3nn's harmonics onto GPAW's (:func:`harmonics_change`).

The graph is the blocks' own edges (every pair whose orbitals overlap), as in DeepH. H is made Hermitian by
averaging each block with its reverse edge's transpose (DeepH-E3 predicts both and leaves them); S is DFT's
(DeepH computes it exactly, as mlepi does). No spin-orbit coupling, no spinful H.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mlepi.ml.block_readout import SphericalHarmonics
from mlepi.ml.model import reverse_edges

try:  # e3nn comes with mace-torch (requirements.txt); its constants file holds slices, which torch's
    # weights-only loader refuses by default: allow exactly that, instead of turning the check off everywhere.
    with torch.serialization.safe_globals([slice]):
        import e3nn
        from e3nn import o3
        from e3nn.math import soft_one_hot_linspace
        from e3nn.nn import FullyConnectedNet, Gate
except ImportError as err:  # pragma: no cover - the project's requirements install it
    raise ImportError("the peer Hamiltonian model needs e3nn: `pip install -r requirements.txt` installs it "
                      "(with mace-torch)") from err

# e3nn compiles its tensor products with TorchScript by default, whose profiling executor swaps in a fused graph
# after some calls: float32 results then change in the last digits part way through a run, and a resumed
# training would not reproduce an uninterrupted one. Plain torch.fx code is deterministic (and as fast here).
e3nn.set_optimization_defaults(jit_script_fx=False)

RADIAL_HIDDEN = 32  # width of the MLPs of Bessel functions that give the tensor products' weights


def harmonics_change(l: int, n_points: int = 64, seed: int = 0) -> torch.Tensor:
    """Q [2l+1, 2l+1] with Y_GPAW(n) = Q Y_e3nn(n): orthogonal (both are orthonormal real bases of degree l)."""
    unit = torch.nn.functional.normalize(torch.randn(n_points, 3, generator=torch.Generator().manual_seed(seed),
                                                     dtype=torch.float64), dim=1)
    gpaw = SphericalHarmonics(l)(unit)[:, l * l:]
    e3nn = o3.spherical_harmonics(l, unit, normalize=True, normalization="integral")
    q = torch.linalg.lstsq(e3nn, gpaw).solution.T
    if not torch.allclose(q @ q.T, torch.eye(2 * l + 1, dtype=q.dtype), atol=1e-8):
        raise RuntimeError(f"e3nn's and GPAW's harmonics of degree {l} are not related by a rotation")
    return q


def coupling(ls_i: list[int], ls_j: list[int]) -> tuple[o3.Irreps, torch.Tensor]:
    """The coupled irreps of the blocks between shells ``ls_i`` and ``ls_j`` (a 1x(L, parity) per shell pair and
    L, in order) and T [dim, n_orb_i, n_orb_j]: block = Σ_d x_d T_d, in GPAW's orbital order."""
    offsets_i, offsets_j = np.cumsum([0, *(2 * l + 1 for l in ls_i)]), np.cumsum([0, *(2 * l + 1 for l in ls_j)])
    change = {l: harmonics_change(l) for l in {*ls_i, *ls_j}}
    irreps, columns = [], []
    for a, la in enumerate(ls_i):
        for b, lb in enumerate(ls_j):
            for L in range(abs(la - lb), la + lb + 1):
                c = torch.einsum("am,bn,mnk->kab", change[la], change[lb], o3.wigner_3j(la, lb, L, dtype=torch.float64))
                column = torch.zeros(2 * L + 1, offsets_i[-1], offsets_j[-1], dtype=torch.float64)
                column[:, offsets_i[a]:offsets_i[a + 1], offsets_j[b]:offsets_j[b + 1]] = c * np.sqrt(2 * L + 1)
                irreps.append((1, (L, (-1) ** (la + lb))))
                columns.append(column)
    # The least-squares fit of Q leaves rounding noise (~1e-17) where T is zero, and LAPACK's noise depends on
    # the memory alignment of its inputs: two models built in one process differed there (CI, 2026-12-07), so a
    # resumed training's buffers were not the uninterrupted one's. Zeros made exact, T is the same every time.
    t = torch.cat(columns)
    return o3.Irreps(irreps), torch.where(t.abs() < 1e-12, torch.zeros_like(t), t).float()


def node_irreps(channels: int, l_max: int) -> o3.Irreps:
    """``channels`` scalars of each parity and half as many of every higher degree and parity."""
    return o3.Irreps([(channels if l == 0 else max(channels // 2, 1), (l, p)) for l in range(l_max + 1)
                      for p in (1, -1)])


def scalar_gate(irreps: o3.Irreps) -> Gate:
    """A gated non-linearity onto ``irreps``: silu/tanh on its scalars, sigmoid gates on the rest."""
    scalars = o3.Irreps([(m, ir) for m, ir in irreps if ir.l == 0])
    gated = o3.Irreps([(m, ir) for m, ir in irreps if ir.l > 0])
    acts = [torch.nn.functional.silu if ir.p == 1 else torch.tanh for _, ir in scalars]
    return Gate(scalars, acts, o3.Irreps(f"{gated.num_irreps}x0e"), [torch.sigmoid], gated)


class DirectionalTP(nn.Module):
    """h ⊗ Y(r̂) with one weight per channel and path from an MLP of the radial basis (NequIP's convolution),
    then a linear map onto ``irreps_out``."""

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_out: o3.Irreps, n_rbf: int):
        super().__init__()
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(irreps_in):
            for j, (_, ir_sh) in enumerate(irreps_sh):
                for ir in ir_in * ir_sh:
                    if ir in irreps_out:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir))
        self.tp = o3.TensorProduct(irreps_in, irreps_sh, o3.Irreps(mid), instructions, shared_weights=False,
                                   internal_weights=False)
        self.radial = FullyConnectedNet([n_rbf, RADIAL_HIDDEN, self.tp.weight_numel], torch.nn.functional.silu)
        self.linear = o3.Linear(self.tp.irreps_out, irreps_out)

    def forward(self, h, sh, rbf):
        return self.linear(self.tp(h, sh, self.radial(rbf)))


class Layer(nn.Module):
    """Messages h_j ⊗ Y(r̂_ij), summed over j, a self-interaction, a gate and a residual."""

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_node: o3.Irreps, n_rbf: int):
        super().__init__()
        self.gate = scalar_gate(irreps_node)
        self.message = DirectionalTP(irreps_in, irreps_sh, self.gate.irreps_in, n_rbf)
        self.self_interaction = o3.Linear(irreps_in, self.gate.irreps_in)
        self.residual = irreps_in == irreps_node

    def forward(self, h, src, dst, sh, rbf, norm):
        agg = torch.zeros(h.shape[0], self.message.linear.irreps_out.dim, dtype=h.dtype, device=h.device)
        agg.index_add_(0, dst, self.message(h[src], sh, rbf))
        out = self.gate(self.self_interaction(h) + agg / norm)
        return out + h if self.residual else out


class E3Hamiltonian(nn.Module):
    """H blocks of a structure from its atoms and the edges (i, j, R) of its blocks (module docstring).

    ``orbital_types``: {Z: the l of each radial function}; ``rcut``: {Z: orbital cutoff, Å}; ``cfg``: the
    ``peers`` config keys ``h_channels``, ``h_l_max``, ``h_layers``, ``h_n_rbf``."""

    def __init__(self, orbital_types: dict[int, list[int]], rcut: dict[int, float], cfg: dict):
        super().__init__()
        self.species = sorted(int(z) for z in orbital_types)
        self.orbital_types = {int(z): list(ls) for z, ls in orbital_types.items()}
        self.n_orb = max(sum(2 * l + 1 for l in ls) for ls in self.orbital_types.values())
        lookup = torch.full((max(self.species) + 1,), -1, dtype=torch.long)
        lookup[self.species] = torch.arange(len(self.species))
        self.register_buffer("index_of_z", lookup)
        self.register_buffer("rcut", torch.tensor([float(rcut[z]) for z in self.species]))
        self.r_max = 2 * max(float(r) for r in rcut.values())  # Å: no block is longer
        l_max, self.n_rbf = int(cfg["h_l_max"]), int(cfg["h_n_rbf"])
        irreps_node = node_irreps(int(cfg["h_channels"]), l_max)
        self.irreps_sh = o3.Irreps.spherical_harmonics(l_max)
        self.embedding = nn.Embedding(len(self.species), irreps_node[0].mul)
        embedded = o3.Irreps([irreps_node[0]])
        self.layers = nn.ModuleList(Layer(embedded if k == 0 else irreps_node, self.irreps_sh, irreps_node, self.n_rbf)
                                    for k in range(int(cfg["h_layers"])))
        small = node_irreps(max(int(cfg["h_channels"]) // 4, 1), l_max)  # the atoms' features in the pair product
        self.pair_down = o3.Linear(irreps_node, small)
        self.heads, self.onsite, self.pair_product = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
        for zi in self.species:
            irreps, t = coupling(self.orbital_types[zi], self.orbital_types[zi])
            self.register_buffer(f"T_{zi}_{zi}_onsite", t)
            self.onsite[str(zi)] = o3.Linear(irreps_node, irreps)
            for zj in self.species:
                irreps, t = coupling(self.orbital_types[zi], self.orbital_types[zj])
                key = f"{zi}_{zj}"
                self.register_buffer(f"T_{key}", t)
                self.heads[key + "_i"] = DirectionalTP(irreps_node, self.irreps_sh, irreps, self.n_rbf)
                self.heads[key + "_j"] = DirectionalTP(irreps_node, self.irreps_sh, irreps, self.n_rbf)
                self.pair_product[key] = o3.FullyConnectedTensorProduct(small, small, irreps)
        self.register_buffer("scale", torch.tensor(1.0))  # eV: the spread of the training blocks
        self.register_buffer("onsite_shift", torch.zeros(len(self.species), self.n_orb, self.n_orb))  # eV
        self.register_buffer("norm", torch.tensor(1.0))  # mean neighbour count, the messages' normalization

    def forward(self, numbers, positions, cell, edge_index, cell_shift):
        """H blocks [n_edges, n_orb, n_orb] (eV, GPAW order, zero-padded) of the edges (i, j, R), on-site edges
        (i, i, 0) included; tensors as in :class:`mlepi.formats.frames.Frame`."""
        species = self.index_of_z[numbers]
        i, j = edge_index
        onsite = (i == j) & (cell_shift == 0).all(dim=1)
        src, dst = j[~onsite], i[~onsite]
        vec = positions[src] + cell_shift[~onsite].to(positions.dtype) @ cell - positions[dst]
        r = vec.norm(dim=1)
        sh = o3.spherical_harmonics(self.irreps_sh, vec, normalize=True, normalization="component")
        rbf = soft_one_hot_linspace(r, 0.0, self.r_max, self.n_rbf, basis="bessel", cutoff=True)
        h = self.embedding(species)
        for layer in self.layers:
            h = layer(h, src, dst, sh, rbf, self.norm)

        H = positions.new_zeros(edge_index.shape[1], self.n_orb, self.n_orb)
        x = r / self.rcut[species[dst]].add(self.rcut[species[src]])
        envelope = torch.where(x < 1, (1 - x.clamp(max=1) ** 2) ** 2, 0.0)
        small = self.pair_down(h)
        off = torch.nonzero(~onsite).squeeze(1)
        for zi in self.species:
            at = torch.nonzero(onsite & (numbers[i] == zi)).squeeze(1)
            t = getattr(self, f"T_{zi}_{zi}_onsite")
            block = torch.einsum("ed,dab->eab", self.onsite[str(zi)](h[i[at]]), t)
            n = t.shape[1]
            block = self.scale * 0.5 * (block + block.transpose(1, 2)) + self.onsite_shift[species[i[at]], :n, :n]
            H[at, :n, :n] = block
            for zj in self.species:
                key, sel = f"{zi}_{zj}", torch.nonzero((numbers[dst] == zi) & (numbers[src] == zj)).squeeze(1)
                x_ij = (self.heads[key + "_i"](h[dst[sel]], sh[sel], rbf[sel])
                        + self.heads[key + "_j"](h[src[sel]], sh[sel], rbf[sel])
                        + self.pair_product[key](small[dst[sel]], small[src[sel]]))
                t = getattr(self, f"T_{key}")
                block = torch.einsum("ed,dab->eab", x_ij, t) * (self.scale * envelope[sel])[:, None, None]
                H[off[sel], :t.shape[1], :t.shape[2]] = block
        return H


def hermitian(H: torch.Tensor, reverse: torch.Tensor) -> torch.Tensor:
    """(H_ij(R) + H_ji(−R)ᵀ) / 2 for every edge; ``reverse[e]`` is the edge (j, i, −R) of edge e."""
    return 0.5 * (H + H[reverse].transpose(1, 2))


def reverse_index(edge_index: np.ndarray, cell_shift: np.ndarray) -> np.ndarray:
    """For every edge (i, j, R) the index of (j, i, −R) (HedgeNet's :func:`mlepi.ml.model.reverse_edges`);
    every block list of a frame holds both."""
    i, j = torch.as_tensor(np.asarray(edge_index), dtype=torch.long)
    reverse = reverse_edges(i, j, torch.as_tensor(np.asarray(cell_shift), dtype=torch.long),
                            int(torch.cat([i, j]).max()) + 1 if len(i) else 0)
    if reverse is None:
        raise ValueError("the blocks hold an edge without its reverse; not a full block list")
    return reverse.numpy()
