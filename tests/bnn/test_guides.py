import functools

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO
from torch import nn
from torch.distributions import kl_divergence

from recover_pyro.data.screen import Pairs
from recover_pyro.bnn.guides import (
    MOLCHANOV_K1,
    MeanFieldNormalGuide,
    SparseDropoutNormal,
    SparseVariationalDropoutGuide,
    molchanov_kl,
)
from recover_pyro.bnn.inference import SVIConfig, fit_svi
from recover_pyro.bnn.layers import BayesianRegression
from recover_pyro.models.predictor import Linear, RecoverPredictor
from recover_pyro.bnn.predictive import sample_predictive
from recover_pyro.bnn.priors import LogUniform, LogUniformPrior, NormalPrior

D, C = 10, 2


def recover_model(layers="all", prior=NormalPrior()) -> BayesianRegression:
    torch.manual_seed(0)
    net = RecoverPredictor(
        torch.rand(D, 12).round(), torch.eye(C), drug_hidden=(8, 6), merge_dim=5, merge_rank=2, head_hidden=(4,)
    )
    return BayesianRegression(net, prior=prior, bayesian_layers=layers)


def index_pairs(n: int) -> Pairs:
    g = torch.Generator().manual_seed(3)
    return Pairs(
        torch.randint(D, (n,), generator=g), torch.randint(D, (n,), generator=g), torch.randint(C, (n,), generator=g)
    )


class RowMLP(nn.Module):
    """Regression on rows of a design matrix ``x``: the row index comes in as ``drug_a``."""

    def __init__(self, x: torch.Tensor, hidden: int) -> None:
        super().__init__()
        self.register_buffer("x", x)
        self.layers = nn.ModuleList([Linear(x.shape[1], hidden), Linear(hidden, 1)])

    def forward(self, drug_a: torch.Tensor, drug_b: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        return self.layers[1](F.relu(self.layers[0](self.x[drug_a]))).squeeze(-1)


def test_mean_field_guide_starts_at_the_predictor_weights():
    model = recover_model()
    guide = MeanFieldNormalGuide(model, init_scale=0.05)
    assert list(guide.locs()) == list(model.sites)
    for name, site in model.sites.items():
        assert torch.equal(guide.locs()[name].detach(), site.init)
        assert torch.allclose(guide.scales()[name].detach(), torch.full(site.shape, 0.05))


def test_mean_field_samples_have_the_posterior_moments():
    model = recover_model(layers="head")
    guide = MeanFieldNormalGuide(model, init_scale=0.2)
    w = guide.sample_weights(20000, generator=torch.Generator().manual_seed(0))
    for name, site in model.sites.items():
        assert w[name].shape == (20000, *site.shape)
        assert torch.allclose(w[name].mean(0), site.init, atol=0.01)
        assert torch.allclose(w[name].std(0), torch.full(site.shape, 0.2), rtol=0.05)


@pytest.mark.parametrize("guide_cls", [MeanFieldNormalGuide, SparseVariationalDropoutGuide])
def test_guide_samples_the_model_sites_in_model_order(guide_cls):
    model = recover_model()
    guide = guide_cls(model)
    p = index_pairs(4)
    guide_trace = poutine.trace(guide).get_trace(p.drug_a, p.drug_b, p.cell, None)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(p.drug_a, p.drug_b, p.cell, None)
    guide_sites = [n for n, s in guide_trace.nodes.items() if s["type"] == "sample"]
    model_latent = [
        n for n, s in model_trace.nodes.items() if s["type"] == "sample" and not s["is_observed"] and n in model.sites
    ]
    assert guide_sites == model_latent == list(model.sites)
    for name in guide_sites:
        assert guide_trace.nodes[name]["fn"].event_shape == model.sites[name].shape
    assert len(pyro.get_param_store()) == 0


def test_sparse_dropout_normal_is_theta_alpha_theta_squared():
    theta = torch.tensor([0.5, -2.0, 1e-3])
    sigma = torch.tensor([0.1, 3.0, 1.0])
    q = SparseDropoutNormal(theta, sigma)
    assert torch.allclose(q.log_alpha, (sigma.pow(2) / theta.pow(2)).log().clamp(-10, 10))
    assert torch.allclose(q.expand((4, 3)).log_alpha, q.log_alpha.expand(4, 3))


def test_molchanov_kl_is_registered_and_works_through_independent():
    torch.manual_seed(0)
    theta, sigma = torch.randn(3, 4), torch.rand(3, 4) + 0.05
    q = SparseDropoutNormal(theta, sigma)
    la = q.log_alpha
    expected = -(0.63576 * torch.sigmoid(1.87320 + 1.48695 * la) - 0.5 * torch.log1p(torch.exp(-la)) - 0.63576)
    assert torch.allclose(kl_divergence(q, LogUniform((3, 4))), expected)
    wrapped = kl_divergence(q.to_event(2), LogUniformPrior().distribution((3, 4), fan_in=4))
    assert torch.allclose(wrapped, expected.sum())
    # KL falls towards 0 as alpha grows (the prior does not penalise dropped weights).
    big = torch.tensor([10.0])
    assert float(molchanov_kl(big)) == pytest.approx(
        0.5 * float(F.softplus(-big)) + MOLCHANOV_K1 * (1 - float(torch.sigmoid(1.87320 + 1.48695 * big))), abs=1e-7
    )
    assert bool((molchanov_kl(torch.linspace(-8, 8, 50)).diff() < 0).all())


def test_trace_mean_field_elbo_returns_the_molchanov_kl():
    model = recover_model(layers="head", prior=LogUniformPrior())
    guide = SparseVariationalDropoutGuide(model, init_log_alpha=-1.0)
    p = index_pairs(6)
    no_likelihood = poutine.block(model, hide=["obs"])
    loss = TraceMeanField_ELBO().loss(no_likelihood, guide, p.drug_a, p.drug_b, p.cell, None)
    expected = sum(float(molchanov_kl(guide.log_alpha(name)).sum().detach()) for name in model.sites)
    assert loss == pytest.approx(expected, rel=1e-5)


def test_pruning_zeroes_weights_above_the_threshold():
    model = recover_model(layers="head")
    guide = SparseVariationalDropoutGuide(model, init_log_alpha=-4.0)
    name = "predictor.head_layers.0.weight"
    loc = guide.locs()[name].detach()
    drop = torch.zeros_like(loc, dtype=torch.bool)
    drop[0, :3] = drop[2, 1] = True
    # sigma^2 = alpha theta^2 with log alpha = 5 > 3 on the dropped weights.
    scale = torch.where(drop, loc.abs() * torch.exp(torch.tensor(2.5)), guide.scales()[name].detach())
    setattr(guide, "predictor__head_layers__0__weight_scale", scale)
    assert torch.equal(guide.kept(name), ~drop)
    assert torch.equal(guide.locs()[name] == 0, drop)
    w = guide.sample_weights(5)[name]
    assert bool((w[:, drop] == 0).all()) and bool((w[:, ~drop] != 0).all())
    by_site = guide.sparsity_by_site()
    assert by_site[name] == pytest.approx(4 / loc.numel())
    assert guide.sparsity() == pytest.approx(4 / sum(s.shape.numel() for s in model.sites.values()))


def test_fully_pruned_head_predicts_zero():
    model = recover_model(layers="head")
    guide = SparseVariationalDropoutGuide(model)
    for name, shape in guide.site_shapes.items():
        loc = guide.locs()[name].detach()
        setattr(guide, name.replace(".", "__") + "_scale", loc.abs() * 100.0)  # log alpha = 9.2
    assert guide.sparsity() == 1.0
    f = sample_predictive(model, guide, index_pairs(8), num_samples=3)
    assert torch.equal(f, torch.zeros(3, 8))


def test_sparse_dropout_prunes_noise_inputs_and_keeps_relevant_ones():
    """10 relevant and 90 pure-noise inputs into a one-hidden-layer net, every weight Bayesian."""
    g = torch.Generator().manual_seed(0)
    n, p, hidden = 300, 100, 16
    x = torch.randn(n, p, generator=g)
    beta = torch.zeros(p)
    beta[:10] = torch.tensor([1.0, -1.0, 1.5, -1.5, 2.0, -2.0, 1.0, -1.0, 1.2, -1.2])
    y = x @ beta + 0.5 * torch.randn(n, generator=g)
    y = (y - y.mean()) / y.std()
    torch.manual_seed(0)
    model = BayesianRegression(RowMLP(x, hidden), LogUniformPrior(), bayesian_layers="all")
    guide = SparseVariationalDropoutGuide(model)
    rows = torch.arange(n)
    epochs, lr = 600, 0.01
    config = SVIConfig(
        elbo="meanfield",
        stopping="none",
        warm_start_epochs=0,
        lr=lr,
        scale_lr=None,
        lr_decay=(1e-4 / lr) ** (1 / epochs),
        epochs=epochs,
        batch_size=n,
        kl_anneal_epochs=200,
    )
    fit_svi(model, guide, Pairs(rows, rows, rows, y), None, config)
    kept = guide.kept("predictor.layers.0.weight")  # (hidden, inputs)
    assert float((~kept[:, 10:]).float().mean()) >= 0.9
    assert bool(kept[:, :10].any(0).all()), kept[:, :10].sum(0)
    assert guide.sparsity_by_site()["predictor.layers.0.weight"] >= 0.8


def test_guides_build_from_partial_factories():
    model = recover_model(layers="head")
    guide = functools.partial(MeanFieldNormalGuide, init_scale=0.3)(model)
    assert all(torch.allclose(s.detach(), torch.tensor(0.3)) for s in guide.scales().values())
    with pytest.raises(ValueError, match="init_scale"):
        MeanFieldNormalGuide(model, init_scale=0.0)
