"""HedgeNet's block readouts: H and S blocks that rotate and reflect exactly as GPAW's orbitals do (O(3)).

Coupled basis
-------------
A block between an l_a shell of atom i and an l_b shell of atom j is written as
B = Σ_L Σ_M C^{l_a l_b L}_{··M} x_{LM}, |l_a − l_b| <= L <= l_a + l_b (:func:`irreps.clebsch_gordan`); over all
shell pairs of two atoms this is an orthogonal change of basis, so nothing is lost. B rotates as D^{l_a} B D^{l_b}ᵀ
exactly when each x_L rotates as Y_L. Each *path* p = (shell a, shell b, L) gets

    x_p = Σ_c α_pc · F_c,L,

invariant weights α (an MLP of rotation-invariant inputs) times equivariant features F of degree L.

Features and parity
-------------------
Under inversion an orbital of degree l changes sign as (−1)^l, so a block of (l_a, l_b) needs features of parity
(−1)^{l_a + l_b}. *Polar* features of degree L have parity (−1)^L: the bond direction Y_L(n), the neighbourhood
moments M_i,L of either atom (:class:`Moments`: Σ_k w_c(r_ik, h_k) Y_L(n_ik), the crystal field that the
invariant atom states lack), and products [Y_k(n) ⊗ M_K]_L with k + K + L even. *Axial* features of degree L
have parity (−1)^{L+1}: products with k + K + L odd, such as [Y_1(n) ⊗ M_1]_1 = n × M_1 (the products in use:
:func:`product_terms`). A path with l_a + l_b + L even takes polar features, one with l_a + l_b + L odd takes
axial ones (for example the antisymmetric part of a p-p hopping, which needs a direction out of the bond axis).
So every block is exactly covariant under all of O(3), rotations and reflections, and every component of every
block can be reached.

- **S** (two-centre integral) uses the bond direction alone as feature: exactly the Slater-Koster form.
- **On-site blocks** use the atom's own moments (polar) and a constant for L = 0: the crystal-field expansion to
  first order in the moments; axial on-site components (those odd in a chiral environment) are zero.
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import groupby

import numpy as np
import torch
from torch import nn

from mlepi.ml import irreps

POLAR, AXIAL = "polar", "axial"
RANK = 8  # rank of the per-edge weights α_pc of path p and feature channel c (:func:`couple`)


def orbital_shells(orbitals) -> list[tuple[int, int]]:
    """(first orbital index, l) of each radial function of an element's basis ``[(label, l), ...]``."""
    shells, start = [], 0
    for _, l in orbitals:
        shells.append((start, int(l)))
        start += 2 * int(l) + 1
    return shells


class Coupling:
    """The coupled basis of the blocks between two atoms' shells, padded to ``n`` orbitals.

    ``groups``: the paths in evaluation order, as (parity, L, count); ``matrix`` [K, n²] maps the concatenated
    coefficients x (path by path, 2L+1 each) onto the flattened block. ``axial=False`` leaves out the paths that
    need axial features (their components are then zero).
    """

    def __init__(self, shells_a, shells_b, n: int, *, axial: bool):
        paths = []
        for (start_a, la), (start_b, lb) in ((a, b) for a in shells_a for b in shells_b):
            for L in range(abs(la - lb), la + lb + 1):
                parity = POLAR if (la + lb + L) % 2 == 0 else AXIAL
                if parity == POLAR or axial:
                    paths.append((parity, L, start_a, la, start_b, lb))
        paths.sort(key=lambda p: (p[0] != POLAR, p[1]))  # polar first, then by L: one group per (parity, L)
        rows = []
        for parity, L, start_a, la, start_b, lb in paths:
            block = np.zeros((2 * L + 1, n, n))
            block[:, start_a:start_a + 2 * la + 1, start_b:start_b + 2 * lb + 1] = \
                irreps.clebsch_gordan(la, lb, L).transpose(2, 0, 1)
            rows.append(block.reshape(2 * L + 1, n * n))
        self.matrix = np.concatenate(rows) if rows else np.zeros((0, n * n))
        self.groups = [(*key, len(list(g))) for key, g in groupby(paths, key=lambda p: p[:2])]

    @property
    def n_paths(self) -> int:
        return sum(count for *_, count in self.groups)

    def isotropic_part(self, block: np.ndarray) -> np.ndarray:
        """The rotation-invariant part of one padded block [n, n] (its L = 0 components)."""
        rows = np.concatenate([np.full(count * (2 * L + 1), L == 0) for _, L, count in self.groups])
        scalar = self.matrix[rows]
        return (scalar.T @ (scalar @ np.asarray(block).ravel())).reshape(block.shape)


def couple(weights: torch.Tensor, mixing, features: dict, groups, matrix: torch.Tensor) -> torch.Tensor:
    """Blocks Σ_p C_p x_p, flattened ``[E, n²]``, with x_p = Σ_r a_pr(edge) Σ_c W_rpc F_c,L.

    weights a [E, n_paths * RANK] (group by group, path-major); mixing: per group W [channels, count * RANK];
    features[(parity, L)] [E, 2L+1, channels] (channels last, so the channel sum is one matrix product over all
    edges and components without a copy); matrix: the coupling matrix with its rows in the order of x here,
    component-major within each group (:func:`component_major`). The per-edge weight of path p and channel c,
    α_pc = Σ_r a_pr W_rpc, has rank RANK.

    Several *sides* share one edge's features (a pair of reverse edges, :class:`_PairHeads`): weights [E, S,
    n_paths * RANK] and each W [channels, S * count * RANK] (the sides' mixings side by side) give the blocks
    of the sides of each edge in turn, ``[E * S, n²]``.
    """
    sides = weights.shape[1] if weights.dim() == 3 else 1
    width = sum(count for *_, count in groups) * RANK
    xs = []
    # split, not slices: the backward pass of a split concatenates the gradients, that of each slice would
    # zero a gradient the size of the whole input (training profile: fill_ 6.5 % of a step).
    per_group = weights.view(len(weights), sides, width).split([count * RANK for *_, count in groups], dim=2)
    for (parity, L, count), w, a in zip(groups, mixing, per_group):
        f = features[(parity, L)]
        e, m, c = f.shape
        mixed = (f.reshape(e * m, c) @ w).view(e, m, sides, count, RANK)
        x = (mixed * a.view(e, 1, sides, count, RANK)).sum(-1)  # [E, 2L+1, S, count]
        xs.append(x.transpose(1, 2).reshape(e, sides, m * count))
    return (torch.cat(xs, dim=2) @ matrix).view(-1, matrix.shape[1])


def by_degree(x: torch.Tensor, dim: int) -> tuple:
    """``x`` [..., (L_max+1)², ...] along ``dim`` as the views of its degrees L = 0..L_max, [..., 2L+1, ...] each
    (one split, whose backward pass is one concatenation; see :func:`couple`)."""
    return x.split([2 * L + 1 for L in range(math.isqrt(x.shape[dim]))], dim=dim)


def component_major(groups) -> np.ndarray:
    """Row order that turns a coupling matrix (:class:`Coupling`: path-major, 2L+1 components per path) into the
    order of :func:`couple`'s coefficients: within each group component-major, path by path."""
    order, start = [], 0
    for _, L, count in groups:
        m = 2 * L + 1
        order.append(start + np.arange(count * m).reshape(count, m).T.ravel())
        start += count * m
    return np.concatenate(order) if order else np.zeros(0, dtype=int)


class SphericalHarmonics(nn.Module):
    """Y_L(n) for L = 0..l_max, ``[E, (l_max+1)²]`` (column L² + m), as monomials of n times a fixed matrix."""

    def __init__(self, l_max: int):
        super().__init__()
        exps, matrix = irreps.harmonics_matrix(l_max)
        self.l_max = l_max
        self.register_buffer("exponents", torch.as_tensor(exps), persistent=False)
        self.register_buffer("matrix", torch.as_tensor(matrix, dtype=torch.float64), persistent=False)
        self.register_buffer("parity", torch.tensor([(-1.0) ** L for L in range(l_max + 1) for _ in range(2 * L + 1)]),
                             persistent=False)  # Y(−n) = parity · Y(n)
        # Sums over m within each degree: [(l_max+1)², l_max+1].
        self.register_buffer("segments", torch.as_tensor(
            np.repeat(np.eye(l_max + 1), [2 * L + 1 for L in range(l_max + 1)], axis=0),
            dtype=torch.float64), persistent=False)

    def forward(self, unit: torch.Tensor) -> torch.Tensor:
        powers = torch.stack([unit**k for k in range(self.l_max + 1)], dim=1)  # [E, l_max + 1, 3]
        mono = powers[:, self.exponents[:, 0], 0] * powers[:, self.exponents[:, 1], 1] \
            * powers[:, self.exponents[:, 2], 2]  # [E, n_monomials]
        return mono @ self.matrix.to(unit.dtype)

    def per_degree(self, products: torch.Tensor) -> torch.Tensor:
        """Σ_m over each degree of ``[..., (l_max+1)²]``: ``[..., l_max+1]`` (invariants from products)."""
        return products @ self.segments.to(products.dtype)

    def dot_per_degree(self, features: torch.Tensor, unit_harmonics: torch.Tensor) -> torch.Tensor:
        """Σ_m F_c,Lm Y_Lm(n) per channel and degree, ``[E, C, l_max+1]`` from features ``[E, C, (l_max+1)²]`` and
        harmonics ``[E, (l_max+1)²]``: :meth:`per_degree` of their product, as one batched matrix product (the
        broadcast product [E, C, (l_max+1)²] it spares took 1.6x longer)."""
        return torch.bmm(features, unit_harmonics.unsqueeze(-1) * self.segments.to(features.dtype))


class Moments(nn.Module):
    """Neighbourhood moments M_i,c,L = Σ_k R_c(r_ik) f(r_ik) (W h_k)_c Y_L(n_ik) / <n>, ``[n_atoms, C, (L+1)²]``."""

    def __init__(self, hidden: int, n_rbf: int, channels: int):
        super().__init__()
        self.radial = nn.Linear(n_rbf, channels, bias=False)
        self.source = nn.Linear(hidden, channels, bias=False)

    def forward(self, h, edge_index, rbf, env, harmonics, norm, chunk: int):
        i, j = edge_index
        w = self.radial(rbf) * env.unsqueeze(-1) * self.source(h).index_select(0, j)  # [E, C]
        moments = h.new_zeros(h.shape[0], w.shape[1], harmonics.shape[1])
        # In chunks of edges: the outer product [E, C, (L+1)²] of a 10^4-atom structure would be a GB.
        for sel in torch.arange(len(i), device=i.device).split(chunk):
            moments.index_add_(0, i[sel], w[sel].unsqueeze(-1) * harmonics[sel].unsqueeze(1))
        return moments / norm


class _PairHeads(nn.Module):
    """Per species pair (or species; ``couplings`` in the order of their codes): a linear head onto the per-path
    weights a, the channel mixing W of each coupling group (:func:`couple`) and the coupling matrix."""

    def __init__(self, hidden: int, couplings: dict, channels: dict):
        super().__init__()
        self.keys = list(couplings)
        self.groups = {key: c.groups for key, c in couplings.items()}
        self.n_orb = math.isqrt(next(iter(couplings.values())).matrix.shape[1])  # blocks are n_orb x n_orb
        self.heads = nn.ModuleDict({key: nn.Linear(hidden, c.n_paths * RANK) for key, c in couplings.items()})
        self.mixing = nn.ParameterDict()
        for key, c in couplings.items():
            self.register_buffer(f"coupling_{key}", torch.as_tensor(c.matrix[component_major(c.groups)],
                                                                    dtype=torch.float64), persistent=False)
            for g, (parity, L, count) in enumerate(c.groups):
                n = channels[(parity, L)]
                self.mixing[f"{key}_{g}"] = nn.Parameter(torch.randn(n, count * RANK) / math.sqrt(n * RANK))

    def forward(self, z, features: dict, codes: torch.Tensor, reverse: "BondFeatures | None" = None
                ) -> torch.Tensor:
        """Flattened blocks [E, n²]; edge e uses the coupling ``self.keys[codes[e]]``.

        ``reverse``: the edges come in pairs (e, reverse of e), and ``features`` are those of the first edge of
        each pair alone; the second's are the same channels up to sign, which ``reverse`` moves into the mixing
        (:meth:`BondFeatures.reverse_mixing`).
        """
        sides = 1 if reverse is None else 2
        rows = len(z) // sides
        z_rows, code_rows = z.view(rows, sides, z.shape[1]), codes.view(rows, sides)  # [P, S, hidden], [P, S]

        def coupling(key, dtype):
            """(channel mixings per group, coupling matrix) of ``key``."""
            mixing = [self.mixing[f"{key}_{g}"] for g in range(len(self.groups[key]))]
            return mixing, getattr(self, f"coupling_{key}").to(dtype)

        def blocks(code, reverse_code, zs, fs):
            """Blocks of the rows ``zs`` [P, S, hidden] of coupling ``code``, ``[P * S, n²]``; with two sides the
            second of each row is the reverse edge, of coupling ``reverse_code`` (species pair (b, a) of (a, b))."""
            key = self.keys[code]
            mixing, matrix = coupling(key, zs.dtype)
            if sides == 2 and reverse_code == code:  # both sides in one product per group (couple's sides)
                mixing = [torch.cat([w, reverse.reverse_mixing(group[:2], w)], dim=1)
                          for group, w in zip(self.groups[key], mixing)]
            elif sides == 2:
                reverse_key = self.keys[reverse_code]
                reverse_mixing, reverse_matrix = coupling(reverse_key, zs.dtype)
                reverse_mixing = [reverse.reverse_mixing(group[:2], w)
                                  for group, w in zip(self.groups[reverse_key], reverse_mixing)]
                return torch.stack([
                    couple(self.heads[key](zs[:, 0]), mixing, fs, self.groups[key], matrix),
                    couple(self.heads[reverse_key](zs[:, 1]), reverse_mixing, fs, self.groups[reverse_key],
                           reverse_matrix)], dim=1).flatten(0, 1)
            return couple(self.heads[key](zs), mixing, fs, self.groups[key], matrix)

        if len(self.keys) == 1:  # one species (pair): elemental crystals need no gathers
            return blocks(0, 0, z_rows, features)
        out = z.new_zeros(rows, sides, self.n_orb**2)
        for code in (torch.unique(code_rows[:, 0]).tolist() if len(codes) else []):
            sel = (code_rows[:, 0] == code).nonzero().squeeze(1)
            out[sel] = blocks(code, int(code_rows[sel[0], -1]), z_rows[sel],
                              {k: f[sel] for k, f in features.items()}).view(len(sel), sides, -1)
        return out.view(len(z), self.n_orb**2)


class BondBlock(nn.Module):
    """Raw off-site blocks g(i, j, r) ``[E, n, n]``: weights α from (atom features of i and j, radial basis,
    invariants of the edge) through one MLP, features of :class:`BondFeatures`, coupled per species pair."""

    def __init__(self, n_node: int, n_invariants: int, hidden: int, n_rbf: int, couplings: dict, channels: dict):
        super().__init__()
        self.src = nn.Linear(n_node, hidden)
        self.dst = nn.Linear(n_node, hidden, bias=False)
        self.radial = nn.Linear(n_rbf, hidden, bias=False)
        self.invariants = nn.Linear(n_invariants, hidden, bias=False) if n_invariants else None
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.heads = _PairHeads(hidden, couplings, channels)

    def project(self, feat) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-atom projections of the source and target features, ``[n_atoms, hidden]`` each (once per structure:
        the wide first layer then runs per atom, not per edge)."""
        return self.src(feat), self.dst(feat)

    def forward(self, atoms, src, dst, rbf, invariants, features, codes, reverse=None):
        """``reverse``: the edges come in pairs and ``features`` are the first edges' (:class:`_PairHeads`)."""
        pre = atoms[0].index_select(0, src) + atoms[1].index_select(0, dst) + self.radial(rbf)
        if self.invariants is not None:
            pre = pre + self.invariants(invariants)
        n = self.heads.n_orb
        return self.heads(self.mlp(pre), features, codes, reverse).view(-1, n, n)


class OnsiteBlock(nn.Module):
    """Raw on-site blocks ``[n_atoms, n, n]``: weights from the atom's features, polar features = (a constant for
    L = 0, the atom's moments), coupled per species."""

    def __init__(self, n_node: int, hidden: int, couplings: dict, moment_channels: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(n_node, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.heads = _PairHeads(hidden, couplings, defaultdict(lambda: 1 + moment_channels))  # polar only

    def forward(self, node, moments, species):
        constant = torch.zeros_like(moments[:, :1])
        constant[:, 0, 0] = 1.0
        polar = torch.cat([constant, moments], dim=1).transpose(1, 2)  # [n_atoms, (L+1)², 1 + C]
        features = {(POLAR, L): f for L, f in enumerate(by_degree(polar, 1))}
        n = self.heads.n_orb
        return self.heads(self.mlp(node), features, species).view(-1, n, n)


OCTUPOLE = 3  # the lowest moment of a three-fold site that is not zero by symmetry (in-plane part)


def product_terms(l_max: int, degrees: int) -> dict:
    """The products [Y_k(n) ⊗ M_K]_L of :class:`BondFeatures`, ``{(parity, L): [(k, K), ...]}`` for L <= ``degrees``
    with harmonics and moments up to ``l_max``; parity (−1)^(k+K+L) even is polar.

    - axial L: [Y_1 ⊗ M_L]_L, and for L = 1 also [Y_K ⊗ M_K]_1 for K = 2..l_max;
    - polar L: [Y_k ⊗ M_3]_L, every k the triangle and parity allow: a three-fold site's dipole and in-plane
      quadrupole vanish, its octupole does not and flips sign between graphene's sublattices, so these carry
      sublattice-odd, inversion-even directions (e.g. the s-p_y element of a second-neighbour bond along a
      zigzag direction, ±0.13 eV in DFT, zero in the Slater-Koster form).
    """
    terms = {}
    for L in range(1, degrees + 1):
        axial = [(1, L)] + ([(K, K) for K in range(2, l_max + 1)] if L == 1 else [])
        terms[(AXIAL, L)] = [(k, K) for k, K in axial if K <= l_max]
    for L in range(degrees + 1):
        terms[(POLAR, L)] = [(k, OCTUPOLE) for k in range(1, l_max + 1)
                             if OCTUPOLE <= l_max and abs(k - OCTUPOLE) <= L <= k + OCTUPOLE
                             and (k + OCTUPOLE + L) % 2 == 0]
    return terms


class BondFeatures(nn.Module):
    """Equivariant features and invariants of bonds (see the module docstring), ``channels`` per (parity, L).

    Inputs: the bond directions' harmonics [E, (l_max+1)²] and the two atoms' moments side by side [E, 2C,
    (l_max+1)²]. Output ({(parity, L): [E, 2L+1, channels]}, invariants [E, 2 C (l_max+1)]): polar = (Y_L(n),
    M_src,L, M_dst,L, then the products of :func:`product_terms` for both atoms), axial = those products only;
    invariants = Y_L(n) · M_L per channel and degree. The axial [Y_3(n) ⊗ M_3]_1 is the pseudo-vector (along the
    layer normal) of a second-neighbour bond, whose p-p block has an antisymmetric part of ±0.26 eV in the
    bilayer's DFT data.
    """

    def __init__(self, l_max: int, needed, moment_channels: int):
        """``needed``: the (parity, L) the coupling groups use; features for others are not computed."""
        super().__init__()
        needed = set(needed)
        degrees = max(L for _, L in needed)
        self.terms = {key: t for key, t in product_terms(l_max, degrees).items() if key in needed}
        self.channels = {key: 2 * moment_channels * len(t) + (1 + 2 * moment_channels) * (key[0] == POLAR)
                         for key, t in self.terms.items()}
        # The products that share the moments' degree K run as one: Y(n) [E, (l_max+1)²] times a fixed matrix
        # gives every term's Y_k·C^{kKL} side by side, [E, 2K+1, Σ(2L+1)], then one batched product with M_K.
        # ``columns[(k, K, L)]``: the first of that term's 2L+1 columns among those of its K.
        self.columns, widths = {}, defaultdict(int)
        for k, K, L in sorted({(k, K, L) for (_, L), t in self.terms.items() for k, K in t}):
            self.columns[(k, K, L)] = widths[K]
            widths[K] += 2 * L + 1
        self.widths = dict(sorted(widths.items()))  # K: Σ(2L+1) over the terms with this K
        self.terms_of = {K: [key for key in self.columns if key[1] == K] for K in self.widths}  # in column order
        for K, width in self.widths.items():
            turn = np.zeros(((l_max + 1) ** 2, 2 * K + 1, width))
            for (k, KK, L), col in self.columns.items():
                if KK == K:
                    turn[k * k:(k + 1) ** 2, :, col:col + 2 * L + 1] = irreps.clebsch_gordan(k, K, L)
            self.register_buffer(f"turn_{K}", torch.as_tensor(turn.reshape(len(turn), -1), dtype=torch.float64),
                                 persistent=False)

        # The reverse (j, i, -r) of an edge (i, j, r): Y_L(-n) = (-1)^L Y_L(n), the two atoms' moments trade
        # places and [Y_k(-n) ⊗ M_K]_L = (-1)^k [Y_k(n) ⊗ M_K]_L, so each of its feature channels is one of the
        # edge's own, F_rev = sign · F[index] (index swaps source and target channels: an involution), and so is
        # each invariant. A pair of edges needs the features of one (``reverse_mixing``, ``reverse_invariants``).
        swap = np.r_[moment_channels:2 * moment_channels, 0:moment_channels]
        for (parity, L), t in self.terms.items():
            index, sign = ([0, *(1 + swap)], [(-1) ** L] + [1] * len(swap)) if parity == POLAR else ([], [])
            for k, _ in t:
                index += list(len(index) + swap)
                sign += [(-1) ** k] * len(swap)
            self.register_buffer(f"reverse_index_{parity}_{L}", torch.as_tensor(index), persistent=False)
            self.register_buffer(f"reverse_sign_{parity}_{L}", torch.tensor(sign, dtype=torch.float64),
                                 persistent=False)
        n_degrees = l_max + 1  # invariants: [2C, l_max + 1] per edge, flattened
        self.register_buffer("reverse_index_invariants", torch.as_tensor(
            (swap[:, None] * n_degrees + np.arange(n_degrees)).ravel()), persistent=False)
        self.register_buffer("reverse_sign_invariants", torch.tensor(
            [(-1.0) ** L for _ in swap for L in range(n_degrees)], dtype=torch.float64), persistent=False)

    def forward(self, harmonics, moments, sh: SphericalHarmonics) -> tuple[dict, torch.Tensor]:
        """``moments``: both atoms' moments, source channels then target channels, [E, 2C, (l_max+1)²]."""
        e = len(harmonics)
        m_by_degree = by_degree(moments, 2)  # [E, 2C, 2K+1] each
        coupled = {}  # [Y_k(n) ⊗ M_K]_L, both atoms' moments, [E, 2C, 2L+1]
        for K, width in self.widths.items():
            turn = (harmonics @ getattr(self, f"turn_{K}").to(harmonics.dtype)).view(e, 2 * K + 1, width)
            terms = self.terms_of[K]
            coupled.update(zip(terms, torch.bmm(m_by_degree[K], turn).split([2 * L + 1 for *_, L in terms], dim=2)))

        # Channels last, [E, 2L+1, channels], as couple() multiplies them by the mixing: the parts are transposed
        # views, and the one copy that concatenates them also transposes them.
        y_by_degree = by_degree(harmonics, 1)
        features = {}
        for (parity, L), terms in self.terms.items():
            parts = [coupled[(k, K, L)].transpose(1, 2) for k, K in terms]
            if parity == POLAR:
                parts = [y_by_degree[L].unsqueeze(2), m_by_degree[L].transpose(1, 2), *parts]
            if parts:
                features[(parity, L)] = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
        invariants = sh.dot_per_degree(moments, harmonics).flatten(1)
        return features, invariants

    def reverse_mixing(self, key, mixing: torch.Tensor) -> torch.Tensor:
        """The channel mixing W' [channels, n] of group ``key`` = (parity, L) with F W' = F_rev W: the reverse
        edges' coefficients from the edges' own features (F_rev = sign · F[index], index an involution that
        keeps the sign, so W' = sign · W[index])."""
        parity, L = key
        index, sign = getattr(self, f"reverse_index_{parity}_{L}"), getattr(self, f"reverse_sign_{parity}_{L}")
        return mixing[index] * sign.to(mixing.dtype).unsqueeze(1)

    def reverse_invariants(self, invariants: torch.Tensor) -> torch.Tensor:
        """The invariants [E, 2C (l_max+1)] of the reverse edges, from those of the edges."""
        return invariants[:, self.reverse_index_invariants] * self.reverse_sign_invariants.to(invariants.dtype)
