"""Plain torch drug-pair predictors: RECOVER's bilinear net and a DeepSynergy-style MLP.

Every layer here accepts weights with optional leading *sample* dimensions, so that a Bayesian version
(:mod:`recover_pyro.bnn.layers`) can run ``S`` weight samples in one vectorised pass: a weight of
shape ``(S, out, in)`` applied to inputs ``(N, in)`` or ``(S, N, in)`` gives ``(S, N, out)``. With
ordinary unbatched weights the layers behave like :class:`torch.nn.Linear`.

Inputs to a predictor are indices (see :class:`recover_pyro.data.screen.Pairs`) into fixed feature
matrices held as buffers: ``drug_features`` ``(D, F)`` and ``cell_features`` ``(C, G)``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recover_pyro.models.weight_moments import local_reparam_linear, weight_moments

# Merge pairs from a per-group all-pairs table when (rows in the group)^2 <= ratio x (pairs in it): the table
# is dense matrix products, gathering (K, r) projections per pair (and scattering their gradients back) is
# memory-bound. Only while the table (samples x K x rows^2 elements) stays below ~256 MB, and only where the
# gather it replaces has at least DENSE_MERGE_MIN_GATHER elements, since each table group costs a few dozen
# small operations (a training minibatch of the default net has a few pairs in each of many cell lines;
# RECOVER's rank-128 merge without FiLM has one group of large projections). Otherwise gather in pieces.
DENSE_MERGE_RATIO = 16
DENSE_MERGE_MIN_GATHER = 2**18
DENSE_MERGE_MAX_ELEMENTS = 2**26
GATHER_MAX_ELEMENTS = 2**24
# Scoring (no gradients) gathers in cache-sized pieces: 2^18-element pieces scored 20k random candidates ~6 %
# faster than 2^20 and ~35 % faster than 2^24 (one thread).
GATHER_PIECE_ELEMENTS = 2**18
# RecoverPredictor.drug_projection_cache keeps per-cell-line tables of every drug's projections up to this size
# (a 14,000-drug table of the default net is 57 MB).
PROJECTION_CACHE_BYTES = 2**28
# ... computed in blocks of this many drugs.
PROJECTION_BLOCK = 1024


def batched_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """:math:`x W^T + b` broadcasting leading sample dims of ``weight`` ``(*S, out, in)`` and ``x``."""
    out = torch.matmul(x, weight.transpose(-1, -2))
    if bias is not None:
        bias = bias.unsqueeze(-2)
        # In place where the bias fits the product's shape: the product is a fresh tensor, and the saved
        # (*S, N, out) copy is a large part of posterior scoring time. Same values either way.
        # (An unbatched weight's bias always fits; torch.broadcast_shapes is Python-level and costs ~5 % of a
        # training step.)
        fits = weight.dim() == 2 or torch.broadcast_shapes(out.shape, bias.shape) == out.shape
        out = out.add_(bias) if fits else out + bias
    return out


class Linear(nn.Module):
    r"""Affine layer that also accepts sample-batched weights (see module docstring).

    With ``factors`` it carries rank-1 multiplicative factors :math:`s` (``in_factor``, ``(in,)``) and :math:`r`
    (``out_factor``, ``(out,)``), both ones at first: :math:`y = ((x \odot s) W^T) \odot r + b`, i.e. the weight
    :math:`W \odot r s^T` (Dusenberry et al. 2020). A plain fit learns them as a reparameterisation; a Bayesian
    model may make them random (``RecoverPredictor.random_effects``), a posterior over the whole layer for
    ``in + out`` numbers. Batched factors ``(*S, in)`` / ``(*S, out)`` give batched outputs.
    """

    spectral_u: Tensor  # a buffer with spectral_bound (register_buffer in __init__), declared for the type checker

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        factors: bool = False,
        spectral_bound: float | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()
        self.factors = factors
        if factors:
            self.in_factor = nn.Parameter(torch.ones(in_features))
            self.out_factor = nn.Parameter(torch.ones(out_features))
        if spectral_bound is not None and not spectral_bound > 0:
            raise ValueError(f"Linear: spectral_bound must be positive, got {spectral_bound}")
        self.spectral_bound = spectral_bound
        if spectral_bound is not None:
            # Power-iteration estimate of the weight's leading left singular vector (saved: exact resume).
            self.register_buffer("spectral_u", F.normalize(torch.randn(out_features), dim=0))

    def reset_parameters(self) -> None:
        # Same initialisation as torch.nn.Linear.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def spectrally_normalised(self, weight: Tensor) -> Tensor:
        r""":math:`W / \max(1, \hat\sigma / c)` with :math:`\hat\sigma` the power-iteration estimate of ``weight``'s
        largest singular value and :math:`c` = ``spectral_bound`` (Miyato et al. 2018, soft as in SNGP: a layer
        already inside the bound is left alone). One power-iteration step per forward pass with gradients (training);
        a weight that is not the layer's own parameter (a Bayesian model's weight sample) is returned as it is: the
        bound is for a point-estimated trunk."""
        if self.spectral_bound is None or not isinstance(weight, nn.Parameter):
            return weight
        u, update = self.spectral_u, torch.is_grad_enabled()
        with torch.no_grad():
            v = F.normalize(weight.t() @ u, dim=0)
            if update:
                u = F.normalize(weight.detach() @ v, dim=0)
                self.spectral_u.copy_(u)
                v = F.normalize(weight.t() @ u, dim=0)
        sigma = u @ weight @ v
        return weight / torch.clamp(sigma / self.spectral_bound, min=1.0)

    def forward(self, x: Tensor) -> Tensor:
        """``(*S, N, in) -> (*S, N, out)``. When an active moment lookup (:mod:`recover_pyro.models.weight_moments`,
        e.g. the Pyro wing's ``LocalReparam`` during SVI) recorded the weight as a guide's Normal sample, the
        output is sampled per row from its closed form instead (the bias likewise, or kept as given)."""
        weight, bias = self.spectrally_normalised(self.weight), self.bias
        if self.factors:
            out = batched_linear(x * self.in_factor.unsqueeze(-2), weight, None) * self.out_factor.unsqueeze(-2)
            return out if bias is None else out + bias.unsqueeze(-2)
        moments = weight_moments(weight)
        if moments is not None:
            bias_moments = weight_moments(bias)
            return local_reparam_linear(x, moments, bias if bias_moments is None else bias_moments)
        return batched_linear(x, weight, bias)


class SymmetricBilinear(nn.Module):
    r"""Permutation-invariant bilinear merge of two drug embeddings.

    For each output unit :math:`k`:

    .. math:: z_k = \sum_j d_{kj} (W_k h_a)_j (W_k h_b)_j = h_a^T W_k^T \mathrm{diag}(d_k) W_k h_b

    with :math:`W_k \in R^{r \times H}`. The form is symmetric in :math:`(h_a, h_b)` so ``z(a, b) == z(b, a)``
    exactly. With ``allow_neg_eigval`` the diagonal :math:`d_k` is learned (indefinite forms allowed),
    otherwise it is fixed to ones (positive semi-definite forms only).

    Shapes: ``weight`` ``(*S, K, r, H)``, ``diag`` ``(*S, K, r)``.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, allow_neg_eigval: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.weight = nn.Parameter(torch.randn(out_features, rank, in_features) / math.sqrt(in_features))
        if allow_neg_eigval:
            self.diag = nn.Parameter(torch.ones(out_features, rank) / math.sqrt(rank))
        else:
            self.register_buffer("diag", torch.ones(out_features, rank) / math.sqrt(rank))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def project(self, h: Tensor) -> Tensor:
        """``(*S, U, H) -> (*S, U, K, r)``: each embedding projected by every :math:`W_k`."""
        # One (U, H) x (H, K r) product: broadcasting h against (K, r, H) would copy it K times.
        k, r = self.out_features, self.rank
        w = self.weight.reshape(*self.weight.shape[:-3], k * r, self.in_features)
        return torch.matmul(h, w.transpose(-1, -2)).unflatten(-1, (k, r))

    def merge(self, pa: Tensor, pb: Tensor) -> Tensor:
        """``(*S, N, K, r) x2 -> (*S, N, K)`` from projections of the two drugs."""
        return (pa * pb * self.diag.unsqueeze(-3)).sum(-1) + self.bias.unsqueeze(-2)

    def table(self, proj: Tensor) -> Tensor:
        r"""``(*S, U, K, r) -> (*S, K, U, U)``: the merge of every pair of ``U`` projections at once.

        :math:`T_{kuv} = \sum_j p_{ukj} d_{kj} p_{vkj}`, one ``(U, r) x (r, U)`` matrix product per output
        unit ``k``. Read only its upper triangle (``u <= v``) so that both drug orders get the same bits.
        """
        p = proj.movedim(-3, -2)  # (*S, K, U, r)
        return torch.matmul(p * self.diag.unsqueeze(-2), p.transpose(-1, -2))

    def merge_pairs(self, proj: Tensor, ia: Tensor, ib: Tensor, group: Tensor) -> Tensor:
        """``(*S, N, K)`` merge of the pairs ``(proj[ia], proj[ib])`` of projections ``proj`` ``(*S, U, K, r)``.

        ``group`` ``(U,)`` (sorted) labels the rows of ``proj`` (e.g. by cell line); both rows of a pair share a
        group. Where a group's all-pairs :meth:`table` costs less than gathering its pairs' ``(K, r)``
        projections (many pairs among few rows, as when scoring a whole screen), its pairs are read from
        the table (dense matrix products). All other pairs are merged elementwise in one gather, whatever
        their group: a training minibatch spreads over many groups with a few pairs each, and a gather per
        group would cost a full-size zero-filled gradient buffer per group in the backward pass. Same
        function either way.
        """
        n, k = ia.shape[0], proj.shape[-2]
        sample_dims = proj.shape[:-3]
        gather_size = math.prod(sample_dims) * k * proj.shape[-1]  # elements gathered per pair
        if n * gather_size < DENSE_MERGE_MIN_GATHER:
            # No group can qualify for a table (a training minibatch of the default net): skip the bookkeeping.
            return self._merge_gathered(proj, ia, ib)
        # Pieces bound the (*S, pairs, K, r) products of the gather: cache-sized when scoring; up to ~64 MB with
        # gradients, where every piece's backward zero-fills a gradient buffer the size of all projections.
        training = torch.is_grad_enabled() and proj.requires_grad
        step = max(1, (GATHER_MAX_ELEMENTS if training else GATHER_PIECE_ELEMENTS) // gather_size)
        labels, rows_per_group = torch.unique_consecutive(group, return_counts=True)
        pair_group = torch.searchsorted(labels, group[ia])  # (N,) group number of each pair
        pairs_per_group = torch.bincount(pair_group, minlength=len(labels))
        table_size = math.prod(sample_dims) * k * rows_per_group.pow(2)
        dense = (
            (rows_per_group.pow(2) <= DENSE_MERGE_RATIO * pairs_per_group)
            & (table_size <= DENSE_MERGE_MAX_ELEMENTS)
            & (gather_size * pairs_per_group >= DENSE_MERGE_MIN_GATHER)
        )
        if not bool(dense.any()) and n <= step:
            return self._merge_gathered(proj, ia, ib)
        out = proj.new_empty(*sample_dims, n, k)
        bias = self.bias.unsqueeze(-2)
        starts = (torch.cumsum(rows_per_group, 0) - rows_per_group).tolist()
        for g in torch.nonzero(dense).flatten().tolist():
            start, rows = starts[g], int(rows_per_group[g])
            idx = torch.nonzero(pair_group == g).squeeze(-1)
            a, b = ia[idx] - start, ib[idx] - start
            lo, hi = torch.minimum(a, b), torch.maximum(a, b)
            table = self.table(proj[..., start : start + rows, :, :]).flatten(-2)  # (*S, K, U_g * U_g)
            out[..., idx, :] = table[..., lo * rows + hi].transpose(-1, -2) + bias
        for piece in torch.nonzero(~dense[pair_group]).squeeze(-1).split(step):
            out[..., piece, :] = self.merge(proj[..., ia[piece], :, :], proj[..., ib[piece], :, :])
        return out

    def _merge_gathered(self, proj: Tensor, ia: Tensor, ib: Tensor) -> Tensor:
        """:meth:`merge` of every pair from one gather of both drugs' projections (one zero-filled
        ``(*S, U, K, r)`` gradient buffer in the backward pass instead of two)."""
        pa, pb = proj[..., torch.cat([ia, ib]), :, :].split(ia.shape[0], dim=-3)
        return self.merge(pa, pb)

    def forward(self, ha: Tensor, hb: Tensor) -> Tensor:
        return self.merge(self.project(ha), self.project(hb))


class FiLM(nn.Module):
    r"""Feature-wise linear modulation :math:`h \mapsto \gamma(c) \odot h + \beta(c)` from cell-line input.

    :math:`\gamma, \beta` are a linear map of the cell-line representation (one-hot gives a per-cell-line
    embedding, expression features give a shared map). :math:`\gamma` is parameterised as ``1 + delta``
    so that a zero-initialised map starts as the identity.
    """

    def __init__(self, cell_dim: int, features: int) -> None:
        super().__init__()
        self.features = features
        self.linear = Linear(cell_dim, 2 * features)
        nn.init.zeros_(self.linear.weight)
        assert self.linear.bias is not None  # Linear has a bias by default
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: Tensor, cell: Tensor) -> Tensor:
        """``h`` ``(*S, U, H)``, ``cell`` ``(U, G)`` or ``(*S, U, G)``."""
        gamma_beta = self.linear(cell)
        delta, beta = gamma_beta[..., : self.features], gamma_beta[..., self.features :]
        return (1.0 + delta) * h + beta


def _mlp_sizes(in_dim: int, hidden: Sequence[int]) -> list[tuple[int, int]]:
    sizes = [in_dim, *hidden]
    return list(zip(sizes[:-1], sizes[1:]))


class RecoverPredictor(nn.Module):
    r"""RECOVER's permutation-invariant drug-pair network.

    per-drug MLP (shared by both drugs, FiLM-conditioned on the cell line after every hidden layer)
    -> :class:`SymmetricBilinear` merge -> MLP head with one output.

    The per-drug part depends only on (drug, cell line, weight sample), so :meth:`forward` computes it
    once per unique (drug, cell line) in the batch and gathers. ``forward = head(trunk(...))``: with a
    Bayesian head only, :func:`~recover_pyro.bnn.predictive.sample_predictive` runs the deterministic
    :meth:`trunk` once and only :meth:`head` per weight sample.

    Args:
        drug_features: ``(D, F)`` drug representation (fingerprint [+ one-hot]).
        cell_features: ``(C, G)`` cell-line representation (one-hot or expression).
        drug_hidden: per-drug MLP widths; the last is the embedding size ``H`` (RECOVER: ``[2048, 128]``).
        merge_dim: bilinear output units ``K`` (RECOVER: 128).
        merge_rank: rank ``r`` of each bilinear form.
        head_hidden: hidden widths of the head before the single output (RECOVER: ``[64]``).
        film: condition on the cell line by FiLM; without it the cell line enters only the head input.
        dropout: dropout rate on hidden activations (used by the MC-dropout baseline).
        allow_neg_eigval: learn the bilinear diagonal (indefinite forms).
        normalize_pair: rescale every pair representation (the trunk's output) to norm ``sqrt(K)``, so that a
            Bayesian head's uncertainty cannot follow its size (off by default; a pilot in docs/benchmarks.md).
        rank1_factors: give every per-drug layer rank-1 multiplicative factors (:class:`Linear` ``factors``); a
            Bayesian model makes them random effects with prior :math:`N(1, \text{rank1\_prior\_scale}^2)` each, so
            the whole per-drug trunk carries a posterior, and a fingerprint bit no training drug has keeps its
            factor's prior spread (off by default).
        rank1_prior_scale: that prior's standard deviation.
        identity_dim: ``k > 0`` gives every drug a learned code :math:`u_d \in R^k` (``drug_codes`` ``(D, k)``,
            zeros at first) added to its first hidden layer through ``identity_proj`` (:math:`P`, ``(H_1, k)``):
            :math:`h_1 = W x_d + b + P u_d`, the drug's identity as a low-rank embedding instead of one-hot input
            columns. ``random_effects`` names ``drug_codes``: a Bayesian model gives them the prior
            :math:`N(0, I)`, so :math:`P u_d` is a random effect with covariance :math:`P P^T` learned from the
            data, and a drug never measured keeps that prior spread (0: none, the default).
        gp_features: ``M > 0`` makes the head a random-feature Gaussian process (SNGP, Liu et al. 2020): the
            hidden head layers join the trunk, whose output :math:`z` (``H``) is mapped to the fixed features
            :math:`\phi(z) = \sqrt{2/M}\cos(\Omega z + b)`, :math:`\Omega_{mh} \sim N(0, 1 / (\ell^2 H))`,
            :math:`b_m \sim U(0, 2\pi)` (buffers ``gp_omega`` ``(M, H)``, ``gp_phase`` ``(M,)``), so that
            :math:`\phi(z)^T\phi(z') \approx \exp(-\|z - z'\|^2 / 2\ell^2 H)`; the output is the bias-free
            ``head_layers.0``, :math:`\beta^T\phi(z)`. With a Gaussian prior on :math:`\beta` and a guide that keeps
            its covariance (:class:`~recover_pyro.bnn.guides.RowMultivariateNormalGuide`), the predictive variance
            grows with the distance from the training pairs' representations (0: none, the default).
        gp_lengthscale: :math:`\ell`, the kernel's lengthscale in units of :math:`\sqrt{H}`.
        spectral_norm: a bound :math:`c` on the largest singular value of every per-drug and hidden head layer of
            the trunk (:meth:`Linear.spectrally_normalised`), so that distances between drugs survive into
            :math:`z` (``None``: unbounded, the default).
    """

    # Buffers (register_buffer in __init__), declared for the type checker.
    drug_features: Tensor
    cell_features: Tensor
    gp_omega: Tensor
    gp_phase: Tensor

    def __init__(
        self,
        drug_features: Tensor,
        cell_features: Tensor,
        drug_hidden: Sequence[int] = (2048, 128),
        merge_dim: int = 128,
        merge_rank: int = 32,
        head_hidden: Sequence[int] = (64,),
        film: bool = True,
        dropout: float = 0.0,
        allow_neg_eigval: bool = True,
        normalize_pair: bool = False,
        identity_dim: int = 0,
        rank1_factors: bool = False,
        rank1_prior_scale: float = 0.5,
        gp_features: int = 0,
        gp_lengthscale: float = 1.0,
        spectral_norm: float | None = None,
    ) -> None:
        super().__init__()
        if gp_features < 0 or not gp_lengthscale > 0:
            raise ValueError(
                f"RecoverPredictor: need gp_features >= 0 and gp_lengthscale > 0, got {gp_features}, {gp_lengthscale}"
            )
        if not rank1_prior_scale > 0:
            raise ValueError(f"RecoverPredictor: rank1_prior_scale must be positive, got {rank1_prior_scale}")
        self.rank1_prior_scale = float(rank1_prior_scale)
        if identity_dim < 0 or (identity_dim and not drug_hidden):
            raise ValueError(
                f"RecoverPredictor: identity_dim must be >= 0 and needs at least one drug_hidden layer, got "
                f"identity_dim={identity_dim}, drug_hidden={list(drug_hidden)}"
            )
        self.normalize_pair = normalize_pair
        self.register_buffer("drug_features", drug_features.float())
        self.register_buffer("cell_features", cell_features.float())
        self.dropout = dropout
        self.mc_dropout = False
        n_drug_in, n_cell_in = drug_features.shape[1], cell_features.shape[1]
        self.drug_layers = nn.ModuleList(
            Linear(i, o, factors=rank1_factors, spectral_bound=spectral_norm)
            for i, o in _mlp_sizes(n_drug_in, drug_hidden)
        )
        self.film = nn.ModuleList(FiLM(n_cell_in, o) for _, o in _mlp_sizes(n_drug_in, drug_hidden)) if film else None
        emb = drug_hidden[-1] if drug_hidden else n_drug_in
        self.merge = SymmetricBilinear(emb, merge_dim, merge_rank, allow_neg_eigval)
        head_in = merge_dim + (0 if film else n_cell_in)
        self.gp_features = int(gp_features)
        if gp_features:
            self.gp_hidden = nn.ModuleList(
                Linear(i, o, spectral_bound=spectral_norm) for i, o in _mlp_sizes(head_in, head_hidden)
            )
            gp_in = head_hidden[-1] if head_hidden else head_in
            self.register_buffer("gp_omega", torch.randn(gp_features, gp_in) / (gp_lengthscale * math.sqrt(gp_in)))
            self.register_buffer("gp_phase", 2 * math.pi * torch.rand(gp_features))
            self.head_layers = nn.ModuleList([Linear(gp_features, 1, bias=False)])
        else:
            self.head_layers = nn.ModuleList(Linear(i, o) for i, o in _mlp_sizes(head_in, [*head_hidden, 1]))
        # {cell line (None without FiLM): (D, K, r) projections of every drug}, while drug_projection_cache is on.
        self._projection_cache: dict[int | None, Tensor] | None = None
        self._projection_cache_bytes = PROJECTION_CACHE_BYTES
        self.identity_proj = Linear(identity_dim, drug_hidden[0], bias=False) if identity_dim else None
        if identity_dim:
            self.drug_codes = nn.Parameter(torch.zeros(drug_features.shape[0], identity_dim))

    @property
    def random_effects(self) -> dict[str, tuple[float, float]]:
        """``{parameter: (prior mean, prior sd)}``: what a Bayesian model makes random whatever its weight prior,
        each entry independently Normal: the drug codes :math:`N(0, 1)`, rank-1 factors :math:`N(1, s^2)`."""
        out = {"drug_codes": (0.0, 1.0)} if self.identity_proj is not None else {}
        for i, layer in enumerate(self.drug_layers):
            if isinstance(layer, Linear) and layer.factors:
                for name in ("in_factor", "out_factor"):
                    out[f"drug_layers.{i}.{name}"] = (1.0, self.rank1_prior_scale)
        return out

    def _dropout(self, h: Tensor) -> Tensor:
        if self.dropout > 0:
            return F.dropout(h, self.dropout, training=self.training or self.mc_dropout)
        return h

    def embed(self, drug: Tensor, cell: Tensor | None) -> Tensor:
        """``(*S, U, H)`` per-drug embeddings for (drug, cell line) index pairs of shape ``(U,)`` (``cell`` may
        be ``None`` without FiLM, where the embedding does not depend on the cell line)."""
        if self.film is not None and cell is None:
            raise ValueError("embed: a FiLM-conditioned predictor needs the cell lines")
        c = None if cell is None or self.film is None else self.cell_features[cell]
        if not self.drug_layers:
            return self.drug_features[drug]
        # The first layer sees drug features only (FiLM comes after it): run it once per unique drug.
        unique, inverse = torch.unique(drug, return_inverse=True)
        h = self.drug_features[unique]
        for i, layer in enumerate(self.drug_layers):
            h = layer(h)
            if i == 0:
                h = h[..., inverse, :]
                if self.identity_proj is not None:
                    # Codes may carry sample dims (*S, D, k): h then becomes (*S, U, H_1).
                    h = h + self.identity_proj(self.drug_codes[..., drug, :])
            if self.film is not None and c is not None:
                h = self.film[i](h, c)
            h = self._dropout(F.relu(h))
        return h

    def _with_cell(self, z: Tensor, cell: Tensor) -> Tensor:
        """Without FiLM the cell line enters here: ``(*S, N, K) -> (*S, N, K + G)``."""
        if self.film is not None:
            return z
        c = self.cell_features[cell]
        return torch.cat([z, c.expand(*z.shape[:-1], c.shape[-1])], -1)

    def gp_representation(self, z: Tensor, cell: Tensor) -> Tensor:
        """``(*S, N, K) -> (*S, N, H)``: the merged pairs through the hidden head layers of a random-feature GP
        head (``gp_features > 0``), the input of its features."""
        h = self._with_cell(z, cell)
        for layer in self.gp_hidden:
            h = self._dropout(F.relu(layer(h)))
        return h

    def random_features(self, h: Tensor) -> Tensor:
        r"""``(*S, N, H) -> (*S, N, M)``: :math:`\phi(h) = \sqrt{2/M}\cos(\Omega h + b)` (``gp_features > 0``)."""
        return math.sqrt(2.0 / self.gp_features) * torch.cos(torch.matmul(h, self.gp_omega.t()) + self.gp_phase)

    def head(self, z: Tensor, cell: Tensor) -> Tensor:
        """``(*S, N, K) -> (*S, N)`` (with a GP head ``z`` is :meth:`gp_representation` ``(*S, N, H)``)."""
        if self.gp_features:
            return self.head_layers[0](self.random_features(z)).squeeze(-1)
        z = self._with_cell(z, cell)
        for i, layer in enumerate(self.head_layers):
            z = layer(z)
            if i < len(self.head_layers) - 1:
                # In place: z is the layer's fresh output, and (S, N, H) copies dominate posterior scoring.
                z = self._dropout(F.relu(z, inplace=True))
        return z.squeeze(-1)

    @contextlib.contextmanager
    def drug_projection_cache(self, max_bytes: int = PROJECTION_CACHE_BYTES) -> Iterator[None]:
        """Within it, :meth:`trunk` projects *every* drug of a cell line once, keeps that ``(D, K, r)`` table
        (the most recent tables that fit in ``max_bytes``, at least one) and gathers from it.

        For scoring a whole library chunk by chunk: every chunk of a library's pairs holds most of its drugs, so
        without the cache each chunk would run the per-drug layers over all of them again (with a one-hot
        identity that is ``O(D^2)`` per chunk). Only for a deterministic per-drug part (the weights unbatched;
        the Bayesian-head net): a table with sample dimensions raises ``ValueError``. Same numbers as without
        it wherever matrix products give a row the same bits whatever the other rows (CPU BLAS here; the
        streaming tests compare plates).
        """
        if self._projection_cache is not None:  # nested: the outer cache stays in charge
            yield
            return
        self._projection_cache, self._projection_cache_bytes = {}, int(max_bytes)
        try:
            yield
        finally:
            self._projection_cache = None

    def _cached_projections(self, drugs: Tensor, cells: Tensor | None) -> Tensor:
        """``(U, K, r)`` projections of ``drugs`` (``(U,)``, sorted by ``cells`` when given) from the cache."""
        cache = self._projection_cache
        assert cache is not None  # only called inside drug_projection_cache
        n_drugs = self.drug_features.shape[0]
        groups = [(None, drugs)] if cells is None else []
        if cells is not None:
            labels, counts = torch.unique_consecutive(cells, return_counts=True)
            groups = list(zip(labels.tolist(), drugs.split(counts.tolist())))
        pieces = []
        for cell, group in groups:
            table = cache.get(cell)
            if table is None:
                # In blocks of drugs: embedding all at once would copy the whole feature table (with a one-hot
                # identity, D x (F + D) floats: 0.86 GB for 14,000 drugs).
                blocks = []
                for start in range(0, n_drugs, PROJECTION_BLOCK):
                    block = torch.arange(start, min(start + PROJECTION_BLOCK, n_drugs), device=drugs.device)
                    cell_of = None if cell is None else torch.full_like(block, cell)
                    blocks.append(self.merge.project(self.embed(block, cell_of)))
                table = torch.cat(blocks, dim=-3)
                if table.dim() != 3:
                    raise ValueError(
                        "drug_projection_cache: the per-drug layers carry sample dimensions (Bayesian weights or "
                        "random effects); the cache holds deterministic projections only"
                    )
                keep = max(1, self._projection_cache_bytes // (table.numel() * table.element_size()))
                while len(cache) >= keep:
                    cache.pop(next(iter(cache)))  # the oldest: chunks arrive cell line by cell line
                cache[cell] = table
            pieces.append(table[group])
        return torch.cat(pieces) if len(pieces) > 1 else pieces[0]

    def trunk(self, drug_a: Tensor, drug_b: Tensor, cell: Tensor) -> Tensor:
        """``(*S, N, K)`` merged pair representation (everything before :meth:`head`) for ``(N,)`` indices; with
        a GP head, through its hidden layers (:meth:`gp_representation`, ``(*S, N, H)``).

        Embeddings are computed per unique (cell line, drug), or per unique drug without FiLM (the cell line
        then enters only the head); pairs are merged per cell line (or all together), from an all-pairs table
        where that is cheaper (:meth:`SymmetricBilinear.merge_pairs`).
        """
        n = drug_a.shape[0]
        if self.film is None:
            drugs, inverse = torch.unique(torch.cat([drug_a, drug_b]), return_inverse=True)
            if self._projection_cache is not None:
                proj = self._cached_projections(drugs, None)
            else:
                proj = self.merge.project(self.embed(drugs, None))
            return self._pair_out(self.merge.merge_pairs(proj, inverse[:n], inverse[n:], torch.zeros_like(drugs)), cell)
        n_drugs = self.drug_features.shape[0]
        keys = torch.cat([cell * n_drugs + drug_a, cell * n_drugs + drug_b])
        unique, inverse = torch.unique(keys, return_inverse=True)  # sorted, so grouped by cell line
        cells = unique // n_drugs
        if self._projection_cache is not None:
            proj = self._cached_projections(unique % n_drugs, cells)
        else:
            proj = self.merge.project(self.embed(unique % n_drugs, cells))
        return self._pair_out(self.merge.merge_pairs(proj, inverse[:n], inverse[n:], cells), cell)

    def forward(self, drug_a: Tensor, drug_b: Tensor, cell: Tensor) -> Tensor:
        """Predicted (standardised) synergy ``(*S, N)`` for index tensors of shape ``(N,)``."""
        return self.head(self.trunk(drug_a, drug_b, cell), cell)

    def _pair_out(self, z: Tensor, cell: Tensor) -> Tensor:
        """The trunk's output from the merged pairs ``z`` ``(*S, N, K)``: rescaled to norm ``sqrt(K)`` per pair with
        ``normalize_pair``, then through a GP head's hidden layers (:meth:`gp_representation`)."""
        if self.normalize_pair:
            z = F.normalize(z, dim=-1) * z.shape[-1] ** 0.5
        return self.gp_representation(z, cell) if self.gp_features else z


class DeepSynergyPredictor(nn.Module):
    """DeepSynergy-style MLP on ``[x_a, x_b, cell]``; both drug orders are predicted and averaged.

    Args:
        drug_features: ``(D, F)``; cell_features: ``(C, G)``.
        hidden: hidden widths before the single output (DeepSynergy: ``[8192, 4096]``, smaller by default).
        dropout: dropout rate on hidden activations.
    """

    # Buffers (register_buffer in __init__), declared for the type checker.
    drug_features: Tensor
    cell_features: Tensor

    def __init__(
        self, drug_features: Tensor, cell_features: Tensor, hidden: Sequence[int] = (512, 128), dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.register_buffer("drug_features", drug_features.float())
        self.register_buffer("cell_features", cell_features.float())
        self.dropout = dropout
        self.mc_dropout = False
        n_in = 2 * drug_features.shape[1] + cell_features.shape[1]
        self.layers = nn.ModuleList(Linear(i, o) for i, o in _mlp_sizes(n_in, [*hidden, 1]))

    def _one_order(self, drug_a: Tensor, drug_b: Tensor, cell: Tensor) -> Tensor:
        h = torch.cat([self.drug_features[drug_a], self.drug_features[drug_b], self.cell_features[cell]], -1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = F.relu(h)
                if self.dropout > 0:
                    h = F.dropout(h, self.dropout, training=self.training or self.mc_dropout)
        return h.squeeze(-1)

    def forward(self, drug_a: Tensor, drug_b: Tensor, cell: Tensor) -> Tensor:
        """``(*S, N)``: the mean of both drug orders, so the output is order-invariant."""
        return 0.5 * (self._one_order(drug_a, drug_b, cell) + self._one_order(drug_b, drug_a, cell))
