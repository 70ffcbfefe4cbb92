"""A random-feature Gaussian-process head (SNGP, issue #24): spectral bounds, the features' kernel, the exact
posterior of the output weights on a frozen trunk, and the predictive it gives.

The checks are closed forms a stuck optimiser or a mis-wired guide cannot pass: the features' inner products are
the RBF kernel, a bounded layer's largest singular value is the bound, and after a fit the guide's covariance and
the predictive sd equal those of Bayesian linear regression on the trunk's features, computed here independently.
"""

from __future__ import annotations

import functools
import math

import pyro.distributions as dist
import pytest
import torch
from hydra import compose, initialize_config_dir

from recover_pyro.bnn.guides import RowMultivariateNormalGuide
from recover_pyro.bnn.inference import SVIConfig
from recover_pyro.bnn.layers import BayesianRegression, local_params
from recover_pyro.bnn.model import BNNSynergyModel
from recover_pyro.bnn.predictive import bayesian_head_only
from recover_pyro.bnn.priors import NormalPrior
from recover_pyro.cli.builders import CONFIG_DIR, build_features, build_screen, model_factory
from recover_pyro.data.screen import Pairs
from recover_pyro.models.predictor import Linear, RecoverPredictor

SITE = "predictor.head_layers.0.weight"
SMALL_GP = functools.partial(
    RecoverPredictor, drug_hidden=(16, 8), merge_dim=8, merge_rank=2, head_hidden=(8,), gp_features=64
)


def toy(seed: int = 0) -> tuple[torch.Tensor, Pairs, Pairs]:
    """Drug features ``(24, 16)`` and (training, held-out) pairs of ``y = t_a t_b + noise`` in one cell line."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(24, 16, generator=g) < 0.3).float()
    t = x @ torch.randn(16, generator=g) / 2
    a, b = torch.triu_indices(24, 24, 1)
    y = t[a] * t[b] + 0.3 * torch.randn(len(a), generator=g)
    pairs = Pairs(a, b, torch.zeros_like(a), y)
    order = torch.randperm(len(pairs), generator=g)
    return x, pairs[order[40:]], pairs[order[:40]]


def test_random_features_give_the_rbf_kernel() -> None:
    """:math:`\\phi(h)^T\\phi(h') \\to \\exp(-\\|h - h'\\|^2 / 2\\ell^2 H)` as ``M`` grows (Rahimi & Recht 2007)."""
    torch.manual_seed(0)
    lengthscale, width = 0.5, 8
    net = SMALL_GP(torch.zeros(4, 16), torch.ones(1, 1), gp_features=40_000, gp_lengthscale=lengthscale)
    h = torch.randn(6, width)
    phi = net.random_features(h)
    kernel = torch.exp(-torch.cdist(h, h).pow(2) / (2 * lengthscale**2 * width))
    assert torch.allclose(phi @ phi.t(), kernel, atol=0.03)
    assert net.head_layers[0].bias is None and net.head_layers[0].in_features == 40_000


def test_spectral_bound_holds_and_leaves_small_layers_alone() -> None:
    torch.manual_seed(0)
    layer = Linear(12, 7, spectral_bound=0.5)
    for _ in range(30):  # power iterations run on passes with gradients
        layer(torch.randn(3, 12)).sum().backward()
    bounded = layer.spectrally_normalised(layer.weight)
    assert float(torch.linalg.matrix_norm(bounded.detach(), ord=2)) == pytest.approx(0.5, rel=1e-3)
    small = Linear(12, 7, spectral_bound=100.0)
    assert torch.equal(small.spectrally_normalised(small.weight), small.weight)
    # Without gradients (scoring) the estimate stays where it is: equal inputs, equal outputs.
    u = layer.spectral_u.clone()
    with torch.no_grad():
        layer(torch.randn(3, 12))
    assert torch.equal(u, layer.spectral_u)
    # A weight sample of a Bayesian model is not the layer's parameter: never rescaled.
    sample = torch.randn(7, 12) * 10
    assert torch.equal(layer.spectrally_normalised(sample), sample)


def test_gp_head_fit_is_the_exact_linear_gaussian_posterior() -> None:
    """After warm start + SVI on a frozen trunk, ``q(beta) = N(mu, Sigma)`` is Bayesian linear regression on the
    features, ``Sigma = (Phi^T Phi / sigma^2 + I)^-1``, ``mu = Sigma Phi^T y / sigma^2`` (learned ``sigma``, prior
    ``N(0, 1)``), and ``predict``'s sd of ``f`` is ``sqrt(phi^T Sigma phi)`` on the original scale."""
    x, train, held = toy()
    model = BNNSynergyModel(
        x,
        torch.ones(1, 1),
        predictor=SMALL_GP,
        guide=RowMultivariateNormalGuide,
        inference=SVIConfig(epochs=60, min_epochs=5, progress=False),
        holdout=0.0,
        seed=1,
    )
    model.fit(train)
    assert bayesian_head_only(model.model)
    net = model.model.predictor
    with torch.no_grad(), local_params():
        z_train = model.scaler.transform(train.y)
        phi = net.random_features(net.trunk(train.drug_a, train.drug_b, train.cell)).double()
        noise_var = float(model.model.noise_scale()) ** 2
        sigma = torch.linalg.inv(phi.t() @ phi / noise_var + torch.eye(phi.shape[1], dtype=torch.float64))
        mu = sigma @ phi.t() @ z_train.double() / noise_var
        guide = model.guide
        assert isinstance(guide, RowMultivariateNormalGuide)
        assert torch.allclose(guide.covariance(SITE)[0].double(), sigma, atol=2e-4, rtol=1e-3)
        assert torch.allclose(guide.locs()[SITE][0].double(), mu, atol=2e-3, rtol=1e-3)
        phi_held = net.random_features(net.trunk(held.drug_a, held.drug_b, held.cell)).double()
        sd_exact = ((phi_held @ sigma) * phi_held).sum(-1).sqrt() * float(model.scaler.inverse_scale(torch.tensor(1.0)))
    sd = model.predict(held, 4000).f.std(0).double()
    assert torch.allclose(sd, sd_exact, rtol=0.06), (sd[:5], sd_exact[:5])
    # The head learned something: held-out r2 well above zero on a task a constant cannot fit.
    err = (model.predict(held, 64).f.mean(0) - held.y).pow(2).mean()
    assert float(err) < 0.8 * float(held.y.var())


def test_gp_head_closed_form_starts_from_a_pretrained_prior() -> None:
    """With the prior ``N(m0, diag(s0^2))`` that ``posterior_as_prior`` sets, the head's posterior is
    ``Sigma = (Phi^T Phi / sigma^2 + S0^-1)^-1``, ``mu = Sigma (Phi^T y / sigma^2 + S0^-1 m0)``; with data that say
    nothing (noise variance 1e9) it is the prior itself."""
    x, train, _ = toy()
    torch.manual_seed(0)
    net = SMALL_GP(x, torch.ones(1, 1))
    model = BayesianRegression(net, NormalPrior(), "head")
    guide = RowMultivariateNormalGuide(model)
    g = torch.Generator().manual_seed(3)
    m0, s0 = torch.randn(1, 64, generator=g), 0.5 + torch.rand(1, 64, generator=g)
    model.set_priors({SITE: dist.Normal(m0, s0)})
    noise_var = torch.tensor(0.2)
    with torch.no_grad(), local_params():
        z = net.trunk(train.drug_a, train.drug_b, train.cell)
        phi = net.random_features(z).double()
    precision = torch.diag(s0[0].double().pow(-2))
    sigma = torch.linalg.inv(phi.t() @ phi / 0.2 + precision)
    mu = sigma @ (phi.t() @ train.y.double() / 0.2 + precision @ m0[0].double())
    guide.update_on_features(model, z, train, noise_var)
    assert torch.allclose(guide.covariance(SITE)[0].double(), sigma, atol=1e-5, rtol=1e-3)
    assert torch.allclose(guide.locs()[SITE][0].double(), mu, atol=1e-4, rtol=1e-3)
    guide.update_on_features(model, z, train, torch.tensor(1e9))
    assert torch.allclose(guide.locs()[SITE], m0, atol=1e-5)
    assert torch.allclose(guide.scales()[SITE], s0, atol=1e-5)


def test_row_guide_samples_have_its_covariance_and_shapes() -> None:
    """Rows independent, each ``N(mu_j, L_j L_j^T)``; a bias (1-d site) one Normal over the whole vector."""
    torch.manual_seed(0)
    net = RecoverPredictor(
        torch.zeros(5, 6), torch.ones(1, 1), drug_hidden=(4,), merge_dim=3, merge_rank=2, head_hidden=(3,)
    )
    model = BayesianRegression(net, NormalPrior(), "head")
    guide = RowMultivariateNormalGuide(model, init_scale=0.3)
    draws = guide.sample_weights(20_000, torch.Generator().manual_seed(0))
    assert {k: tuple(v.shape) for k, v in draws.items()} == {
        "predictor.head_layers.0.weight": (20_000, 3, 3),
        "predictor.head_layers.0.bias": (20_000, 3),
        "predictor.head_layers.1.weight": (20_000, 1, 3),
        "predictor.head_layers.1.bias": (20_000, 1),
    }
    w = draws["predictor.head_layers.0.weight"]
    assert torch.allclose(w.std(0), torch.full((3, 3), 0.3), atol=0.01)
    assert guide.scales()["predictor.head_layers.0.bias"].shape == (3,)
    with pytest.raises(ValueError, match="max_row=2"):
        RowMultivariateNormalGuide(model, max_row=2)
    # Held parameters (no gradients, as SVI holds a GP head's): the factor is reused, yet a change in place counts.
    site = "predictor.head_layers.1.weight"
    for p in guide.parameters():
        p.requires_grad_(False)
    before = guide.sample_weights(20_000, torch.Generator().manual_seed(1))[site]
    guide._unconstrained(site, "scale").add_(math.log(2.0))  # positive constraint: exp(log s + log 2) = 2 s
    after = guide.sample_weights(20_000, torch.Generator().manual_seed(1))[site]
    assert torch.allclose(after - guide.locs()[site], 2 * (before - guide.locs()[site]), atol=1e-5)


def test_preset_builds_the_gp_head() -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["data=synthetic", "data.screen.n_drugs=12", "+experiment=normal_gp"])
    model = model_factory(cfg, build_features(cfg, build_screen(cfg)))()
    assert isinstance(model, BNNSynergyModel) and isinstance(model.guide, RowMultivariateNormalGuide)
    assert set(model.model.sites) == {SITE}
    net = model.model.predictor
    assert net.gp_features == cfg.model.predictor.gp_features == 1024
    # The same net in plain Python, by the config's names: equal buffers from equal seeds.
    torch.manual_seed(0)
    plain = RecoverPredictor(
        net.drug_features, net.cell_features, **{k: v for k, v in cfg.model.predictor.items() if k[0] != "_"}
    )
    torch.manual_seed(0)
    again = RecoverPredictor(
        net.drug_features, net.cell_features, **{k: v for k, v in cfg.model.predictor.items() if k[0] != "_"}
    )
    assert torch.equal(plain.gp_omega, again.gp_omega) and plain.gp_omega.shape == net.gp_omega.shape
    assert math.isclose(float(plain.gp_omega.std() * math.sqrt(plain.gp_omega.shape[1])), 1 / 0.3, rel_tol=0.02)
    assert all(layer.spectral_bound is None for layer in net.drug_layers)


def test_gp_head_with_identity_effects_gives_an_unseen_drug_its_prior_spread() -> None:
    """``f = beta^T phi(h) + u_a + u_b`` on a toy whose drugs are identity only (``y = t_a + t_b + noise``, true
    ``t_d ~ N(0, 1)``, four drugs in no training pair): held-out pairs of seen drugs are predicted, the pairs of an
    unseen drug carry about ``tau`` of sd (its effect's prior) and several times the sd of seen pairs, and
    ``q(beta)`` is the linear-Gaussian posterior given the targets less the effects' posterior means."""
    g = torch.Generator().manual_seed(0)
    drugs, unseen = 30, 4
    t = torch.randn(drugs, generator=g)
    a, b = torch.triu_indices(drugs, drugs, 1)
    y = t[a] + t[b] + 0.3 * torch.randn(len(a), generator=g)
    pairs = Pairs(a, b, torch.zeros_like(a), y)
    seen_mask = b < drugs - unseen
    seen, new = (
        pairs[torch.nonzero(seen_mask).squeeze(-1)],
        pairs[torch.nonzero(~seen_mask & (a < drugs - unseen)).squeeze(-1)],
    )
    order = torch.randperm(len(seen), generator=g)
    train, held = seen[order[30:]], seen[order[:30]]
    model = BNNSynergyModel(
        torch.zeros(drugs, 1),
        torch.ones(1, 1),
        predictor=SMALL_GP,
        guide=RowMultivariateNormalGuide,
        identity_effects="drugs",
        identity_scale="hierarchical",
        inference=SVIConfig(elbo="meanfield", lr=0.01, epochs=800, min_epochs=200, batch_size=32, progress=False),
        holdout=0.0,
        seed=0,
    )
    model.fit(train)
    tau = model.identity_scales()["drug"]
    assert 0.6 < tau < 1.6, tau  # the realised effects' spread is ~1
    held_pred, new_pred = model.predict(held, 400), model.predict(new, 400)
    assert float(torch.corrcoef(torch.stack([held_pred.mean, held.y]))[0, 1]) > 0.9
    sd_seen, sd_new = float(held_pred.epistemic_std.mean()), float(new_pred.epistemic_std.mean())
    assert sd_new > 3 * sd_seen, (sd_new, sd_seen)
    assert sd_new == pytest.approx(tau, rel=0.25)
    net = model.model.predictor
    guide = model.guide
    assert isinstance(guide, RowMultivariateNormalGuide)
    with torch.no_grad(), local_params():
        phi = net.random_features(net.trunk(train.drug_a, train.drug_b, train.cell)).double()
        effects = model.model.identity.effect(guide.identity_locs(), train.drug_a, train.drug_b, train.cell)
        residual = (model.scaler.transform(train.y) - effects).double()
        noise_var = float(model.model.noise_scale()) ** 2
        sigma = torch.linalg.inv(phi.t() @ phi / noise_var + torch.eye(phi.shape[1], dtype=torch.float64))
        assert torch.allclose(guide.locs()[SITE][0].double(), sigma @ phi.t() @ residual / noise_var, atol=2e-3)
