"""HedgeNet's message passing: radial basis and envelope, the per-edge-kind convolutions, angular invariants and
vector messages of the energy branch, and the interaction layer that combines them (:mod:`mlepi.ml.model`)."""

from __future__ import annotations

import math

import torch
from torch import nn

from mlepi.ml.block_readout import Moments, by_degree

EDGE_CHUNK = 4096  # message-passing edges per chunk of the on-site moments ([chunk, n_ang, hidden] stays small)
# On a GPU each chunk costs some 50 kernel launches and two host synchronisations, so chunks are this many times
# larger there (intermediates of a few 100 MB; benchmarks/NOTES.md §13).
GPU_CHUNK_SCALE = 32


def chunk_size(base: int, device: torch.device) -> int:
    """Edges (or pairs) per chunk on ``device``: ``base`` on a CPU, ``GPU_CHUNK_SCALE`` times more on a GPU."""
    return base * GPU_CHUNK_SCALE if device.type == "cuda" else base


# ---------------------------------------------------------------------------------------------------- features
def envelope(x: torch.Tensor) -> torch.Tensor:
    """Polynomial cutoff (p = 6) of x = r / r_cut: 1 at 0, 0 with value, slope and curvature at x >= 1.

    C2 smoothness keeps force constants (second derivatives of E) continuous when a neighbour crosses the cutoff.
    """
    p = 6.0
    x = x.clamp(min=0.0, max=1.0)
    u = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    return u


class BesselBasis(nn.Module):
    """Radial basis sqrt(2/r_max) sin(n pi r / r_max) / r, n = 1..n_rbf; input r [E] (Å), output [E, n_rbf]."""

    def __init__(self, n_rbf: int, r_max: float):
        super().__init__()
        self.r_max = float(r_max)
        self.register_buffer("freq", math.pi * torch.arange(1, n_rbf + 1) / self.r_max)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)  # [E, 1]
        return math.sqrt(2.0 / self.r_max) * torch.sin(self.freq.to(r.dtype) * r) / r  # [E, n_rbf]


def mlp(n_in: int, n_hidden: int, n_out: int, *, final_activation: bool = False) -> nn.Sequential:
    """Two-layer perceptron with SiLU (smooth, so second derivatives exist)."""
    layers = [nn.Linear(n_in, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_out)]
    if final_activation:
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------------- message passing
class EdgeConv(nn.Module):
    """Continuous-filter convolution over one edge kind: m_i = sum_j W(rbf_ij) * f(r_ij) * (A h_j) / <n>.

    No bias after the sum, so a kind with no edges contributes exactly zero (and gets zero gradient).
    """

    def __init__(self, hidden: int, n_rbf: int):
        super().__init__()
        self.filter = mlp(n_rbf, hidden, hidden)
        self.source = nn.Linear(hidden, hidden, bias=False)
        self.out = nn.Linear(hidden, hidden, bias=False)

    def forward(self, h, edge_index, rbf, env, norm):
        # h [n_atoms, hidden]; edge_index [2, E] (message j -> i); rbf [E, n_rbf]; env [E]
        i, j = edge_index
        msg = self.filter(rbf) * env.unsqueeze(-1) * self.source(h).index_select(0, j)  # [E, hidden]
        agg = torch.zeros_like(h).index_add_(0, i, msg) / norm  # [n_atoms, hidden]
        return self.out(agg)


class AngularInvariants(nn.Module):
    """Rotation invariants of an atom's neighbourhood of one edge kind: the power spectrum of its moments,
    P_i,c,L = Σ_m A_i,c,Lm (Σ_c' W_L,cc' A_i,c',Lm), ``[n_atoms, C (L_max+1)]``, with A the moments of
    :class:`mlepi.ml.block_readout.Moments` (degrees 0..L_max). A product of two neighbours' harmonics of one
    degree sees the angle between two bonds, which distances alone cannot (three-body terms, as in ACE and
    MACE); both factors rotate with the same Wigner matrix, also under reflections, so P is O(3) invariant."""

    def __init__(self, hidden: int, n_rbf: int, channels: int, l_max: int):
        super().__init__()
        self.moments = Moments(hidden, n_rbf, channels)
        # Channel mixing per degree, from the identity (the plain power spectrum) at initialisation.
        self.mixing = nn.Parameter(torch.eye(channels).repeat(l_max + 1, 1, 1))

    def forward(self, h, edge_index, rbf, env, harmonics, norm):
        moments = self.moments(h, edge_index, rbf, env, harmonics, norm, chunk_size(EDGE_CHUNK, h.device))
        spectrum = [(a * torch.einsum("dc,ncm->ndm", w, a)).sum(-1)  # [n_atoms, C] per degree
                    for a, w in zip(by_degree(moments, 2), self.mixing)]
        return torch.cat(spectrum, dim=1)  # [n_atoms, C (L_max+1)]


class VectorMessages(nn.Module):
    """Equivariant (l = 1) messages over one edge kind, as in PaiNN:
    dv_i,c = Σ_j f(r_ij) [a_c(r_ij, h_j) n_ij + b_c(r_ij, h_j) v_j,c] / <n>, ``[n_atoms, C, 3]``.
    The b term carries j's own directional environment along the bond, which scalar messages cannot: after two
    interactions <v_i, v_i> sees the dihedral between i's bonds and j's (four-body terms, what MACE's l >= 1
    messages add over a power spectrum). Polar vectors, so reflections too leave their dot products invariant."""

    def __init__(self, hidden: int, n_rbf: int, channels: int):
        super().__init__()
        self.filter = mlp(n_rbf, hidden, 2 * channels)
        self.source = nn.Linear(hidden, 2 * channels, bias=False)

    def forward(self, h, v, edge_index, rbf, env, unit, norm):
        # h [n_atoms, hidden]; v [n_atoms, C, 3] or None (before the first interaction); unit [E, 3]: n_ij
        i, j = edge_index
        w = self.filter(rbf) * env.unsqueeze(-1) * self.source(h).index_select(0, j)  # [E, 2C]
        a, b = w.unsqueeze(-1).chunk(2, dim=1)  # [E, C, 1] each
        msg = a * unit.unsqueeze(1)  # [E, C, 3]
        if v is not None:
            msg = msg + b * v.index_select(0, j)
        return h.new_zeros(h.shape[0], a.shape[1], 3).index_add_(0, i, msg) / norm


class Interaction(nn.Module):
    """One interaction layer: per-kind convolutions, summed, then a residual update of h. With ``angular``
    = (channels, L_max) the update also reads each kind's :class:`AngularInvariants`; with ``vectors`` = C
    channels, each kind's :class:`VectorMessages` add to the atoms' vector features v, which are gated by h, and
    the update reads their invariants <U v, V v> (U, V: channel mixings)."""

    def __init__(self, hidden: int, n_rbf: int, kinds: tuple[str, ...], angular: tuple[int, int] | None = None,
                 vectors: int = 0):
        super().__init__()
        self.convs = nn.ModuleDict({k: EdgeConv(hidden, n_rbf) for k in kinds})
        n_in = 2 * hidden
        self.angular = None
        if angular is not None:
            channels, l_max = angular
            self.angular = nn.ModuleDict({k: AngularInvariants(hidden, n_rbf, channels, l_max) for k in kinds})
            n_in += len(kinds) * channels * (l_max + 1)
        self.vectors = None
        if vectors:
            self.vectors = nn.ModuleDict({k: VectorMessages(hidden, n_rbf, vectors) for k in kinds})
            self.vector_mixing = nn.Linear(vectors, 2 * vectors, bias=False)  # U and V, over channels
            self.vector_gate = nn.Linear(hidden, vectors)
            n_in += vectors
        self.update = mlp(n_in, hidden, hidden)

    def forward(self, h, groups: dict, v=None):
        """``groups``: per kind, the edges' ``edges``, ``rbf``, ``env``, ``norm`` and, for the angular
        invariants and the vectors, ``harmonics`` and ``unit`` (:meth:`HedgeNet._edge_groups`). Returns the new
        h and v (None without vectors)."""
        features = [h, sum(conv(h, groups[kind]["edges"], groups[kind]["rbf"], groups[kind]["env"],
                                groups[kind]["norm"]) for kind, conv in self.convs.items())]
        for kind, angular in (self.angular or {}).items():
            g = groups[kind]
            features.append(angular(h, g["edges"], g["rbf"], g["env"], g["harmonics"], g["norm"]))
        if self.vectors is not None:
            dv = sum(messages(h, v, groups[kind]["edges"], groups[kind]["rbf"], groups[kind]["env"],
                              groups[kind]["unit"], groups[kind]["norm"])
                     for kind, messages in self.vectors.items())  # [n_atoms, C, 3]
            v = dv if v is None else v + dv
            # Gated by the incoming h (so every layer's gate shapes the invariants it reads).
            v = v * (1 + self.vector_gate(h)).unsqueeze(-1)
            u, w = self.vector_mixing(v.transpose(1, 2)).chunk(2, dim=-1)  # [n_atoms, 3, C] each
            features.append((u * w).sum(1))  # <U v, V v>: smooth at v = 0, unlike a norm
        return h + self.update(torch.cat(features, dim=-1)), v
