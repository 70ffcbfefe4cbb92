"""Random effects inside the network (issue #24): drug identity codes and rank-1 factors.

Drug codes: ``h_1 = W x_d + b + P u_d``, ``u_d ~ N(0, I)``, ``P`` learned (so the offsets' covariance ``P P^T`` is
an empirical-Bayes estimate).

The fits use a toy screen whose drug features carry nothing (all zero), so identity is all the model can learn:
``y = t_a + t_b + noise`` with true per-drug effects ``t_d ~ N(0, tau^2)``, and the last drugs in no training pair.
A fit that learned what it claims must (i) predict held-out pairs of seen drugs, (ii) leave the codes of the
unseen drugs at their prior, (iii) give pairs with an unseen drug a larger epistemic sd than pairs of seen drugs,
and (iv) scale that sd with the identity variance the data show (``tau`` 1 against 0.1): an untrained model or a
stuck optimiser fails (i) and (iv).
"""

from __future__ import annotations

import functools

import pyro.distributions as dist
import pytest
import torch
from hydra import compose, initialize_config_dir
from pyro import poutine

from recover_pyro.bnn.guides import MeanFieldNormalGuide, SparseVariationalDropoutGuide
from recover_pyro.bnn.inference import SVIConfig
from recover_pyro.bnn.layers import BayesianRegression
from recover_pyro.bnn.model import BNNSynergyModel
from recover_pyro.bnn.predictive import bayesian_head_only
from recover_pyro.bnn.priors import LaplacePrior
from recover_pyro.cli.builders import CONFIG_DIR, build_features, build_screen, model_factory
from recover_pyro.data.screen import Pairs
from recover_pyro.metrics import pearson
from recover_pyro.models.predictor import Linear, RecoverPredictor

DRUGS, UNSEEN, SIGMA = 30, 4, 0.3
SEEN = DRUGS - UNSEEN
SMALL = functools.partial(
    RecoverPredictor, drug_hidden=(16, 8), merge_dim=8, merge_rank=2, head_hidden=(8,), film=False, identity_dim=2
)


def toy(tau: float, seed: int = 0) -> tuple[torch.Tensor, Pairs, Pairs, Pairs, Pairs]:
    """True effects ``t`` ``(DRUGS,)`` and (fit, val, held-out seen pairs, pairs with an unseen drug) of
    ``y = t_a + t_b + noise``."""
    g = torch.Generator().manual_seed(seed)
    t = tau * torch.randn(DRUGS, generator=g)
    a, b = torch.triu_indices(DRUGS, DRUGS, 1)

    def pairs(mask: torch.Tensor) -> Pairs:
        aa, bb = a[mask], b[mask]
        noise = SIGMA * torch.randn(len(aa), generator=g)
        return Pairs(aa, bb, torch.zeros_like(aa), t[aa] + t[bb] + noise)

    seen = pairs(b < SEEN)
    new = pairs((a < SEEN) & (b >= SEEN))  # one seen, one unseen drug: f's sd is the unseen drug's tau
    order = torch.randperm(len(seen), generator=torch.Generator().manual_seed(1))
    return t, seen[order[60:]], seen[order[30:60]], seen[order[:30]], new


def fit(tau: float) -> tuple[BNNSynergyModel, torch.Tensor, Pairs, Pairs]:
    """The fitted model, the true effects, held-out seen pairs and pairs with an unseen drug. Small batches and
    at least 500 SVI epochs: the toy has 265 training pairs, and the default schedule stops it underfitted."""
    t, train, val, held, new = toy(tau)
    model = BNNSynergyModel(
        torch.zeros(DRUGS, 1),
        torch.zeros(1, 1),
        predictor=SMALL,
        inference=SVIConfig(
            elbo="meanfield", lr=0.01, epochs=2000, warm_start_epochs=300, min_epochs=500, batch_size=32
        ),
        seed=0,
    )
    model.fit(train, val)
    return model, t, held, new


@pytest.fixture(scope="module")
def fits() -> dict[float, tuple[BNNSynergyModel, torch.Tensor, Pairs, Pairs]]:
    return {tau: fit(tau) for tau in (1.0, 0.1)}


def test_codes_are_standard_normal_random_effects_whatever_the_weight_prior() -> None:
    net = SMALL(torch.zeros(DRUGS, 3), torch.zeros(1, 1))
    model = BayesianRegression(net, LaplacePrior(), bayesian_layers="head")
    site = model.sites["predictor.drug_codes"]
    assert site.random_effect and site.shape == (DRUGS, 2)
    assert not model.sites["predictor.head_layers.0.weight"].random_effect
    trace = poutine.trace(model).get_trace(torch.arange(3), torch.arange(1, 4), torch.zeros(3, dtype=torch.long))
    codes_prior = trace.nodes["predictor.drug_codes"]["fn"].base_dist
    assert isinstance(codes_prior, dist.Normal)
    assert bool((codes_prior.loc == 0).all()) and bool((codes_prior.scale == 1).all())
    assert isinstance(trace.nodes["predictor.head_layers.0.weight"]["fn"].base_dist, dist.Laplace)
    with torch.no_grad():
        for guide in (MeanFieldNormalGuide(model), SparseVariationalDropoutGuide(model)):
            assert torch.equal(guide.scales()["predictor.drug_codes"], torch.ones(DRUGS, 2))
            assert float(guide.scales()["predictor.head_layers.0.weight"].max()) < 0.1


def test_codes_change_the_embedding_per_drug_and_per_sample() -> None:
    net = SMALL(torch.zeros(DRUGS, 3), torch.zeros(1, 1))
    drugs = torch.arange(4)
    assert torch.equal(net.embed(drugs, None)[0], net.embed(drugs, None)[1])  # zero codes: one embedding
    with torch.no_grad():
        net.drug_codes.normal_()
    emb = net.embed(drugs, None)
    assert not torch.allclose(emb[0], emb[1])


def test_fit_predicts_seen_pairs_and_keeps_unseen_codes_at_the_prior(fits) -> None:
    model, _, held, _ = fits[1.0]
    assert held.y is not None
    assert pearson(held.y, model.predict(held, 64).mean) > 0.9
    scales = model.guide.scales()["predictor.drug_codes"].detach()
    locs = model.guide.locs()["predictor.drug_codes"].detach()
    # Unseen drugs: analytic KL and no data -> exactly the prior (no gradient ever reaches them).
    assert torch.allclose(locs[SEEN:], torch.zeros(UNSEEN, 2), atol=1e-6)
    assert torch.allclose(scales[SEEN:], torch.ones(UNSEEN, 2), atol=1e-6)
    # Seen drugs: the data pin each code along the direction P reads (the other may stay at the prior).
    assert float(scales[:SEEN].min(-1).values.median()) < 0.3


def test_new_drug_sd_is_the_identity_spread_and_follows_it(fits) -> None:
    """With one seen and one unseen drug, ``f = t_a + t_b`` has the sd of ``t_b`` given the rest: the spread of
    the effects (``tau``), which the learned ``P P^T`` must have estimated; a seen pair's sd is that of two
    well-measured effects (~ sqrt(2) x 0.3 / sqrt(25) here)."""
    model, t, held, new = fits[1.0]
    sd_seen = float(model.predict(held, 64).epistemic_std.mean())
    sd_new = float(model.predict(new, 64).epistemic_std.mean())
    spread = float(t[:SEEN].std())
    assert sd_seen < 0.25 < 0.6 * spread < sd_new < 1.5 * spread, (sd_seen, sd_new, spread)
    # A tenth of that spread under the same noise: the data show little identity, so P P^T (and the new-drug sd
    # relative to the targets' spread) collapses.
    relative = {}
    for tau, (model, _, held, new) in fits.items():
        assert held.y is not None
        relative[tau] = float(model.predict(new, 64).epistemic_std.mean()) / float(held.y.std())
    assert relative[1.0] > 4 * relative[0.1], relative


# --- rank-1 factors -------------------------------------------------------------------------------------------
BITS, NEW_BITS = 12, 2  # the last NEW_BITS fingerprint bits occur only in the unseen drugs


def test_factor_layer_is_the_rank1_scaled_weight() -> None:
    """``((x * s) W^T) * r + b == x (W * r s^T)^T + b``, per sample for batched factors."""
    torch.manual_seed(0)
    layer = Linear(5, 3, factors=True)
    x = torch.randn(7, 5)
    assert torch.allclose(layer(x), x @ layer.weight.T + layer.bias, atol=1e-6)  # ones at first: a plain layer
    s, r = torch.randn(4, 5), torch.randn(4, 3)
    with torch.no_grad():
        layer.in_factor, layer.out_factor = torch.nn.Parameter(s), torch.nn.Parameter(r)
        batched = layer(x)
    for k in range(4):
        weight = layer.weight * r[k].unsqueeze(-1) * s[k].unsqueeze(0)
        assert torch.allclose(batched[k], x @ weight.T + layer.bias, atol=1e-5)


def fingerprint_toy(seed: int = 0) -> tuple[torch.Tensor, Pairs, Pairs, Pairs, Pairs]:
    """Drug bits ``(DRUGS, BITS)`` and (fit, val, held-out seen pairs, pairs with an unseen drug) of
    ``y = g(x_a) + g(x_b) + noise``, ``g`` linear in the bits; only unseen drugs carry the last bits."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(DRUGS, BITS, generator=g) < 0.4).float()
    x[:SEEN, BITS - NEW_BITS :] = 0.0
    x[SEEN:, BITS - NEW_BITS :] = 1.0
    effect = x @ torch.randn(BITS, generator=g)
    a, b = torch.triu_indices(DRUGS, DRUGS, 1)

    def pairs(mask: torch.Tensor) -> Pairs:
        aa, bb = a[mask], b[mask]
        return Pairs(aa, bb, torch.zeros_like(aa), effect[aa] + effect[bb] + SIGMA * torch.randn(len(aa), generator=g))

    seen = pairs(b < SEEN)
    order = torch.randperm(len(seen), generator=torch.Generator().manual_seed(1))
    return x, seen[order[60:]], seen[order[30:60]], seen[order[:30]], pairs((a < SEEN) & (b >= SEEN))


def test_rank1_posterior_keeps_unseen_bits_at_the_prior_and_widens_for_new_drugs() -> None:
    x, train, val, held, new = fingerprint_toy()
    predictor = functools.partial(
        RecoverPredictor,
        drug_hidden=(16, 8),
        merge_dim=8,
        merge_rank=2,
        head_hidden=(8,),
        film=False,
        rank1_factors=True,
        rank1_prior_scale=0.5,
    )
    model = BNNSynergyModel(
        x,
        torch.zeros(1, 1),
        predictor=predictor,
        inference=SVIConfig(
            elbo="meanfield", lr=0.01, epochs=2000, warm_start_epochs=300, min_epochs=500, batch_size=32
        ),
        seed=0,
    )
    model.fit(train, val)
    assert held.y is not None
    assert pearson(held.y, model.predict(held, 64).mean) > 0.9
    site = "predictor.drug_layers.0.in_factor"
    assert model.model.sites[site].random_effect
    with torch.no_grad():
        loc, scale = model.guide.locs()[site], model.guide.scales()[site]
    # No training drug has the new bits: their input factors never see a gradient from the data.
    assert torch.allclose(loc[-NEW_BITS:], torch.ones(NEW_BITS), atol=1e-6)
    assert torch.allclose(scale[-NEW_BITS:], torch.full((NEW_BITS,), 0.5), atol=1e-6)
    assert float(scale[: BITS - NEW_BITS].max()) < 0.5
    sd_seen = float(model.predict(held, 64).epistemic_std.mean())
    sd_new = float(model.predict(new, 64).epistemic_std.mean())
    assert sd_new > 2 * sd_seen, (sd_new, sd_seen)


@pytest.mark.parametrize(
    ("preset", "sites"),
    [
        ("normal_codes", {"predictor.drug_codes"}),
        (
            "normal_rank1",
            {f"predictor.drug_layers.{i}.{f}" for i in (0, 1) for f in ("in_factor", "out_factor")},
        ),
    ],
)
def test_presets_build_the_random_effects(preset: str, sites: set[str]) -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["data=synthetic", "data.screen.n_drugs=12", f"+experiment={preset}"])
    assert cfg.features.one_hot is False and cfg.inference.elbo == "meanfield"
    model = model_factory(cfg, build_features(cfg, build_screen(cfg)))()
    assert isinstance(model, BNNSynergyModel)
    effects = {name for name, site in model.model.sites.items() if site.random_effect}
    assert effects == sites
    with torch.no_grad():
        start = sorted({round(float(model.guide.scales()[name].max()), 6) for name in sites})
    assert start == ([0.01] if preset == "normal_rank1" else [1.0])  # narrow, or at the codes' N(0, 1) prior
    assert not bayesian_head_only(model.model)  # the trunk now carries a posterior: no frozen-trunk shortcut


def test_chunked_scoring_with_one_draw_equals_the_whole_space() -> None:
    """Streaming and Ray scoring reuse one ``draw_posterior``; with random effects in the trunk the draw holds
    ``(S, D, k)`` codes and ``(S, in)`` factors, and chunks must still give the whole space's samples."""
    _, train, val, held, new = fingerprint_toy()
    x = torch.eye(DRUGS)
    predictor = functools.partial(SMALL, rank1_factors=True)
    model = BNNSynergyModel(
        x, torch.zeros(1, 1), predictor=predictor, inference=SVIConfig(elbo="meanfield", epochs=3, min_epochs=1), seed=3
    )
    model.fit(train, val)
    space = Pairs(
        torch.cat([held.drug_a, new.drug_a]), torch.cat([held.drug_b, new.drug_b]), torch.cat([held.cell, new.cell])
    )
    draw = model.draw_posterior(16)
    assert {"predictor.drug_codes", "predictor.drug_layers.0.in_factor"} <= set(draw)
    whole = model.predict(space, 16).f
    parts = torch.cat([model.predict(space[i : i + 7], 16, draw=draw).f for i in range(0, len(space), 7)], dim=1)
    # The trunk runs per sample here, on matrices whose shapes follow the chunk: equal up to float rounding.
    assert float((whole - parts).abs().max()) < 1e-5 * float(whole.abs().max()), float((whole - parts).abs().max())
