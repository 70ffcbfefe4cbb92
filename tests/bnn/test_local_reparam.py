"""Local reparameterisation: exact layer outputs, an unbiased lower-variance ELBO estimate, unchanged prediction."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO
from pyro.nn import PyroModule, PyroSample

from recover_pyro.data.screen import Pairs
from recover_pyro.bnn.guides import MeanFieldNormalGuide
from recover_pyro.bnn.inference import SVIConfig, fit_svi, local_reparam_sites
from recover_pyro.bnn.local_reparam import LocalReparam
from recover_pyro.models.weight_moments import Moments, local_reparam_linear, weight_moments
from recover_pyro.bnn.layers import BayesianRegression, local_params
from recover_pyro.models.predictor import DeepSynergyPredictor, Linear, RecoverPredictor
from recover_pyro.bnn.predictive import sample_predictive

W_LOC = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.3, -0.2]])
W_SCALE = torch.tensor([[0.2, 0.5, 0.1], [1.0, 0.05, 0.3]])
B_LOC, B_SCALE = torch.tensor([0.1, -0.4]), torch.tensor([0.3, 0.02])
SITES = {"layer.weight", "layer.bias"}


class BayesianLinear(PyroModule):
    """One :class:`Linear` layer whose weight and bias are the sample sites ``layer.weight`` / ``layer.bias``."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = PyroModule[Linear](3, 2)
        self.layer.weight = PyroSample(dist.Normal(0.0, 1.0).expand([2, 3]).to_event(2))
        self.layer.bias = PyroSample(dist.Normal(0.0, 1.0).expand([2]).to_event(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def linear_guide() -> None:
    pyro.sample("layer.weight", dist.Normal(W_LOC, W_SCALE).to_event(2))
    pyro.sample("layer.bias", dist.Normal(B_LOC, B_SCALE).to_event(1))


def run_linear(x: torch.Tensor, sites: set[str]) -> torch.Tensor:
    """The layer on ``x`` with weights from ``linear_guide``, as an ELBO runs it (guide, then replayed model)."""
    with local_params(), LocalReparam(sites):
        guide_trace = poutine.trace(linear_guide).get_trace()
        return poutine.replay(BayesianLinear(), trace=guide_trace)(x)


def test_linear_output_follows_the_closed_form_of_the_guide():
    """Every row gets an independent draw of N(x mu^T + nu, x^2 (s^2)^T + t^2); without the messenger all rows
    share one weight sample."""
    torch.manual_seed(0)
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    m = 20_000
    out = run_linear(x.repeat(m, 1), SITES).reshape(m, 2, 2)  # (draws, row, unit)
    mean = x @ W_LOC.T + B_LOC
    var = x.pow(2) @ W_SCALE.pow(2).T + B_SCALE.pow(2)
    se = (var / m).sqrt()
    assert ((out.mean(0) - mean).abs() < 4 * se).all()
    # The sample variance of m normal draws has relative sd sqrt(2 / m) (1 %).
    torch.testing.assert_close(out.var(0), var, rtol=0.05, atol=0.0)
    # Independent over rows and units: the correlation of any two outputs is ~0 (sd 1 / sqrt(m)).
    corr = torch.corrcoef(out.reshape(m, 4).T)
    assert (corr - torch.eye(4)).abs().max() < 5 / math.sqrt(m)

    shared = run_linear(x.repeat(50, 1), set()).reshape(50, 2, 2)
    assert torch.equal(shared, shared[:1].expand_as(shared))


def test_only_chosen_sites_and_only_the_guides_samples_are_local():
    """A site not chosen keeps its sampled value; outside the messenger nothing is recorded."""
    torch.manual_seed(0)
    x = torch.ones(4, 3)
    only_bias = run_linear(x, {"layer.bias"})
    assert torch.equal(only_bias, only_bias[:1].expand_as(only_bias))  # weight not chosen: one shared sample
    assert weight_moments(torch.zeros(2, 3)) is None
    with LocalReparam(SITES):
        assert weight_moments(torch.zeros(2, 3)) is None  # a tensor no guide drew


def small_model(bayesian_layers: str = "head", init_scale: float = 0.3, n: int = 60):
    g = torch.Generator().manual_seed(0)
    drugs, cells = 8, 2
    a, b = torch.randint(drugs, (2, n), generator=g)
    c = torch.randint(cells, (n,), generator=g)
    y = torch.randn(n, generator=g)
    torch.manual_seed(0)
    net = RecoverPredictor(
        torch.rand(drugs, 10, generator=g).round(),
        torch.eye(cells),
        drug_hidden=(8, 6),
        merge_dim=6,
        merge_rank=2,
        head_hidden=(6,),
    )
    model = BayesianRegression(net, bayesian_layers=bayesian_layers)
    return model, MeanFieldNormalGuide(model, init_scale=init_scale), Pairs(a, b, c, y)


@pytest.mark.parametrize("layers, init_scale", [("head", 0.3), ("all", 0.1)])
def test_local_reparam_is_an_unbiased_lower_variance_estimate_of_the_same_elbo(layers, init_scale):
    """Means of many single-particle losses agree within standard errors; the local estimate varies less (with
    every layer Bayesian only the head is local: the trunk's shared weight samples stay unbiased too)."""
    model, guide, data = small_model(layers, init_scale)
    sites = local_reparam_sites(model)
    elbo = TraceMeanField_ELBO(max_plate_nesting=1)
    args = (data.drug_a, data.drug_b, data.cell, data.y)

    def losses(local: bool, draws: int = 1000) -> torch.Tensor:
        out = torch.empty(draws, dtype=torch.float64)
        with torch.no_grad(), local_params():
            for i in range(draws):
                with LocalReparam(sites if local else []):
                    out[i] = float(elbo.differentiable_loss(model, guide, *args))
        return out

    torch.manual_seed(1)
    plain, local = losses(False), losses(True)
    se = math.sqrt(float(plain.var() + local.var()) / len(plain))
    assert abs(float(plain.mean() - local.mean())) < 4 * se
    assert float(local.var()) < 0.5 * float(plain.var())


def test_local_reparam_sites_are_the_head_layers():
    model, _, _ = small_model("all")
    assert local_reparam_sites(model) == [s for s in model.sites if s.startswith("predictor.head_layers.")]
    assert len(local_reparam_sites(model)) < len(model.sites)  # trunk and merge keep whole weight samples
    net = DeepSynergyPredictor(torch.rand(8, 10), torch.eye(2), hidden=(4,))
    assert local_reparam_sites(BayesianRegression(net, bayesian_layers="all")) == []


def test_fit_with_local_reparam_trains_and_prediction_ignores_the_switch():
    """SVI with the switch on runs to a finite ELBO; prediction draws whole weight sets (a pair scored twice gets
    the same value in every sample), the same inside an active messenger as outside it."""
    model, guide, data = small_model("all", init_scale=0.01)
    config = SVIConfig(lr=0.01, epochs=3, batch_size=20, warm_start_epochs=2, local_reparam=True, elbo="meanfield")
    report = fit_svi(model, guide, data[:40], data[40:], config)
    assert all(math.isfinite(v) for v in report.losses)
    twice = Pairs(*(torch.cat([t, t]) for t in (data.drug_a, data.drug_b, data.cell)))
    f = sample_predictive(model, guide, twice, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(f[:, : len(data)], f[:, len(data) :])
    with LocalReparam(model.sites):
        inside = sample_predictive(model, guide, twice, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(inside, f)


def test_local_reparam_needs_bayesian_head_layers():
    net = DeepSynergyPredictor(torch.rand(8, 10), torch.eye(2), hidden=(4,))
    model = BayesianRegression(net, bayesian_layers="all")
    data = Pairs(torch.arange(8), torch.arange(8).flip(0), torch.zeros(8, dtype=torch.long), torch.randn(8))
    with pytest.raises(ValueError, match="local_reparam"):
        fit_svi(model, MeanFieldNormalGuide(model), data, None, SVIConfig(epochs=1, local_reparam=True))


def test_sample_batched_weights_follow_the_closed_form_per_sample():
    """With S weight distributions ``(S, out, in)`` (e.g. vectorised particles) each sample's rows follow its own
    closed form: the bias broadcasts over rows, also when S equals the number of rows."""
    torch.manual_seed(0)
    s = 2
    loc, scale = torch.stack([W_LOC, -W_LOC]), torch.stack([W_SCALE, 2 * W_SCALE])
    b_loc, b_scale = torch.stack([B_LOC, 3 * B_LOC]), torch.stack([B_SCALE, B_SCALE])
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])  # as many rows as samples
    m = 20_000
    out = local_reparam_linear(x.repeat(m, 1), Moments(loc, scale), Moments(b_loc, b_scale))
    out = out.reshape(s, m, 2, 2)  # (sample, draws, row, unit)
    mean = x @ loc.transpose(-1, -2) + b_loc.unsqueeze(-2)
    var = x.pow(2) @ scale.pow(2).transpose(-1, -2) + b_scale.pow(2).unsqueeze(-2)
    assert ((out.mean(1) - mean).abs() < 4 * (var / m).sqrt()).all()
    torch.testing.assert_close(out.var(1), var, rtol=0.05, atol=0.0)


class LaplaceGuide(MeanFieldNormalGuide):
    """A guide whose head sites are not Normal: local reparameterisation has no closed form for them."""

    def site_distribution(self, site: str) -> dist.TorchDistribution:
        return dist.Laplace(self._param(site, "loc"), self._param(site, "scale"))


def test_local_reparam_refuses_a_guide_that_is_not_normal():
    net = RecoverPredictor(
        torch.rand(8, 10), torch.eye(2), drug_hidden=(4,), merge_dim=4, merge_rank=2, head_hidden=(4,)
    )
    model = BayesianRegression(net, bayesian_layers="head")
    data = Pairs(torch.arange(8), torch.arange(8).flip(0), torch.zeros(8, dtype=torch.long), torch.randn(8))
    config = SVIConfig(epochs=1, warm_start_epochs=0, local_reparam=True)
    with pytest.raises(ValueError, match="Normal guide distribution at every head site"):
        fit_svi(model, LaplaceGuide(model), data, None, config)
