"""A synthetic combination screen with a known, learnable, heavy-tailed synergy landscape.

Generative model (all draws from ``seed``; ``D`` drugs, ``C`` cell lines, ``B`` bits, ``K`` = ``rank``):

* drug bits :math:`x_d \\in \\{0,1\\}^B`: each drug belongs to a chemical family whose motif bits it
  mostly carries, plus random bits, so held-out drugs resemble some training drugs;
* latent drug embeddings :math:`e_d = W^T x_d / \\sqrt{\\bar n}` (:math:`W_{bk} \\sim N(0,1)`,
  :math:`\\bar n` the mean number of bits on) and main effects :math:`u_d = w^T x_d / \\sqrt{\\bar n}`;
* cell expression :math:`g_c \\sim N(0, I_G)`, a positive per-cell modulation
  :math:`m_c = \\exp(0.5\\, V^T g_c / \\sqrt G) \\in R^K` and an offset :math:`o_c = 0.3\\, v^T g_c/\\sqrt G`;
* latent score :math:`s_{cab} = \\sqrt{0.6}\\, \\mathrm{std}(\\sum_k m_{ck} e_{ak} e_{bk})
  + \\sqrt{0.4}\\, \\mathrm{std}(u_a + u_b) + o_c`, symmetric in ``a, b`` (std: z-score over the
  candidate grid of distinct pairs x cell lines);
* normal scores :math:`z = \\Phi^{-1}((\\mathrm{rank}(s) - 1/2) / n)` over the ``n`` grid candidates, so
  the tail shape below is set by ``tail`` alone, not by a seed's outlying latent scores;
* heavy upper tail :math:`h = \\mathrm{expm1}(\\tau z)/\\tau` (a shifted log-normal for ``tail``
  :math:`\\tau > 0`, skewness 1.75 at :math:`\\tau = 0.5`; Gaussian for :math:`\\tau = 0`);
* truth :math:`y^* = \\mathrm{loc} + \\mathrm{scale} \\cdot \\mathrm{std}(h)` (ALMANAC ComboScore-like:
  mean -20, sd 40) and measurements :math:`y = y^* + \\mathrm{scale} \\cdot \\mathrm{noise\\_sd}
  \\cdot \\varepsilon`.

Truth and noise are drawn for the full grid before ``fraction_measured`` picks the measured rows, so a
partially measured screen is a subset of the fully measured one with the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtri
from scipy.stats import rankdata

from recover_pyro.data.screen import Screen

INTERACTION_SHARE = 0.6  # fraction of latent variance from the drug-drug interaction (rest: main effects)
MAX_RESAMPLES = 100


@dataclass(frozen=True)
class SyntheticLandscape:
    """The noiseless ground truth of a synthetic screen.

    Attributes:
        drug_bits: ``(D, B)`` uint8 fingerprint-like drug features.
        cell_expr: ``(C, G)`` expression-like cell-line features.
        truth: ``(C, D, D)`` noiseless synergy, symmetric in the last two axes; the diagonal (a drug
            with itself) is defined by the same formula but is not a candidate.
    """

    drug_bits: np.ndarray
    cell_expr: np.ndarray
    truth: np.ndarray

    def __call__(self, drug_a: np.ndarray, drug_b: np.ndarray, cell: np.ndarray) -> np.ndarray:
        """``(N,)`` noiseless synergy of drug-index pairs in cell-line indices (any drug order)."""
        return self.truth[np.asarray(cell), np.asarray(drug_a), np.asarray(drug_b)]


def _zscore(v: np.ndarray, over: np.ndarray) -> np.ndarray:
    """Standardise ``v`` by the mean / sd of its entries selected by the boolean mask ``over``."""
    sd = v[over].std()
    return (v - v[over].mean()) / (sd if sd > 0 else 1.0)


def _normal_scores(s: np.ndarray) -> np.ndarray:
    """Rank-based normal scores of the distinct pairs of ``s`` ``(C, D, D)``, mirrored to stay symmetric."""
    n_cells, n_drugs, _ = s.shape
    ia, ib = np.triu_indices(n_drugs, k=1)
    upper = s[:, ia, ib].ravel()
    scores = ndtri((rankdata(upper) - 0.5) / len(upper)).reshape(n_cells, -1)
    z = np.zeros_like(s)
    z[:, ia, ib] = scores
    z[:, ib, ia] = scores
    return z


def _drug_bits(rng: np.random.Generator, n_drugs: int, n_bits: int, density: float) -> np.ndarray:
    """``(D, B)`` distinct, non-empty bit vectors: half the density from a family motif, half random."""
    n_families = max(1, n_drugs // 5)
    motifs = rng.random((n_families, n_bits)) < density / 2
    family = rng.integers(n_families, size=n_drugs)
    bits = np.zeros((n_drugs, n_bits), dtype=np.uint8)
    todo = np.arange(n_drugs)
    for _ in range(MAX_RESAMPLES):
        keep = rng.random((len(todo), n_bits)) < 0.9
        extra = rng.random((len(todo), n_bits)) < density / 2
        bits[todo] = (motifs[family[todo]] & keep) | extra
        _, first = np.unique(bits, axis=0, return_index=True)
        unique = np.zeros(n_drugs, dtype=bool)
        unique[first] = True
        todo = np.flatnonzero(~unique | (bits.sum(1) == 0))
        if not len(todo):
            return bits
    raise ValueError(
        f"cannot draw {n_drugs} distinct non-empty drugs with n_bits={n_bits}, "
        f"density={density}; raise n_bits or density"
    )


def synthetic_landscape(
    n_drugs: int = 40,
    n_cell_lines: int = 3,
    n_bits: int = 128,
    density: float = 0.08,
    tail: float = 0.5,
    seed: int = 0,
    rank: int = 4,
    n_genes: int = 16,
    loc: float = -20.0,
    scale: float = 40.0,
) -> SyntheticLandscape:
    """Draw the noiseless landscape described in the module docstring (deterministic in ``seed``)."""
    if n_drugs < 2 or n_cell_lines < 1 or n_bits < 1 or rank < 1 or n_genes < 1:
        raise ValueError("need n_drugs >= 2 and n_cell_lines, n_bits, rank, n_genes >= 1")
    if not 0.0 < density <= 1.0 or tail < 0:
        raise ValueError(f"need 0 < density <= 1 and tail >= 0, got density={density}, tail={tail}")
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    x = _drug_bits(rng, n_drugs, n_bits, density)
    norm = np.sqrt(x.sum(1).mean())
    embed = x @ rng.standard_normal((n_bits, rank)) / norm  # (D, K)
    main = x @ rng.standard_normal(n_bits) / norm  # (D,)
    expr = rng.standard_normal((n_cell_lines, n_genes))  # (C, G)
    modulation = np.exp(0.5 * expr @ rng.standard_normal((n_genes, rank)) / np.sqrt(n_genes))  # (C, K)
    offset = 0.3 * expr @ rng.standard_normal(n_genes) / np.sqrt(n_genes)  # (C,)

    grid = np.broadcast_to(~np.eye(n_drugs, dtype=bool), (n_cell_lines, n_drugs, n_drugs))
    inter = np.einsum("ck,ak,bk->cab", modulation, embed, embed)  # (C, D, D), symmetric
    mains = np.broadcast_to(main[:, None] + main[None, :], inter.shape)
    latent = (
        np.sqrt(INTERACTION_SHARE) * _zscore(inter, grid)
        + np.sqrt(1 - INTERACTION_SHARE) * _zscore(mains, grid)
        + offset[:, None, None]
    )
    z = _normal_scores(latent)
    heavy = np.expm1(tail * z) / tail if tail > 0 else z
    truth = loc + scale * _zscore(heavy, grid)
    return SyntheticLandscape(drug_bits=x, cell_expr=expr, truth=truth)


def make_synthetic_screen(
    n_drugs: int = 40,
    n_cell_lines: int = 3,
    n_bits: int = 128,
    density: float = 0.08,
    noise_sd: float = 0.3,
    tail: float = 0.5,
    seed: int = 0,
    fraction_measured: float = 1.0,
    score_name: str = "synergy",
    rank: int = 4,
    n_genes: int = 16,
    loc: float = -20.0,
    scale: float = 40.0,
) -> Screen:
    """A :class:`Screen` measured on the landscape of :func:`synthetic_landscape` with the same arguments.

    Every unordered pair of distinct drugs in every cell line is a candidate; ``fraction_measured`` of
    them (rounded, at least one) are measured. ``noise_sd`` is the measurement-noise sd in units of
    ``scale``. Experiments carry the noisy score ``score_name`` (the only score column) and the
    noiseless ``f"{score_name}_true"``. Drugs have ``smiles = ""`` and features in ``drug_features``.
    """
    if not 0.0 < fraction_measured <= 1.0 or noise_sd < 0:
        raise ValueError(f"need 0 < fraction_measured <= 1 and noise_sd >= 0, got {fraction_measured}, {noise_sd}")
    land = synthetic_landscape(n_drugs, n_cell_lines, n_bits, density, tail, seed, rank, n_genes, loc, scale)
    _, noise_seq, subset_seq = np.random.SeedSequence(seed).spawn(3)
    drug_ids = [f"drug_{i:0{len(str(n_drugs - 1))}d}" for i in range(n_drugs)]
    cell_ids = [f"cell_{c:0{len(str(n_cell_lines - 1))}d}" for c in range(n_cell_lines)]

    ia, ib = np.triu_indices(n_drugs, k=1)  # ids are zero-padded, so index order = string order
    cells = np.repeat(np.arange(n_cell_lines), len(ia))
    a, b = np.tile(ia, n_cell_lines), np.tile(ib, n_cell_lines)
    truth = land(a, b, cells)
    noisy = truth + scale * noise_sd * np.random.default_rng(noise_seq).standard_normal(len(truth))
    experiments = pd.DataFrame(
        {
            "drug_a": np.asarray(drug_ids)[a],
            "drug_b": np.asarray(drug_ids)[b],
            "cell_line": np.asarray(cell_ids)[cells],
            "study": "synthetic",
            "n_replicates": 1,
            score_name: noisy,
            f"{score_name}_true": truth,
        }
    )
    if fraction_measured < 1.0:
        n_keep = max(1, int(round(fraction_measured * len(experiments))))
        keep = np.random.default_rng(subset_seq).choice(len(experiments), n_keep, replace=False)
        experiments = experiments.iloc[np.sort(keep)]
    experiments = experiments.sort_values(["drug_a", "drug_b", "cell_line"]).reset_index(drop=True)

    return Screen(
        drugs=pd.DataFrame({"name": drug_ids, "smiles": ""}, index=pd.Index(drug_ids, name="drug_id")),
        cell_lines=pd.DataFrame({"tissue": ""}, index=pd.Index(cell_ids, name="cell_line")),
        experiments=experiments,
        score_columns=(score_name,),
        cell_features=pd.DataFrame(land.cell_expr, index=cell_ids, columns=[f"gene_{g}" for g in range(n_genes)]),
        drug_features=pd.DataFrame(land.drug_bits, index=drug_ids, columns=[f"bit_{j}" for j in range(n_bits)]),
        name="synthetic",
        source=f"make_synthetic_screen(seed={seed})",
    )
