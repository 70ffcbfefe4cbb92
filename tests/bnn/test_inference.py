import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from recover_pyro.data.screen import Pairs
from recover_pyro.bnn.guides import MeanFieldNormalGuide
from recover_pyro.bnn.inference import LatentScale, SVIConfig, fit_svi, kl_weight, validation_metric
from recover_pyro.bnn.layers import BayesianRegression, local_params
from recover_pyro.models.predictor import Linear, RecoverPredictor
from recover_pyro.bnn.priors import LaplacePrior, NormalPrior


class RowLinear(nn.Module):
    """Linear regression on rows of a design matrix ``x``: the row index comes in as ``drug_a``."""

    def __init__(self, x: torch.Tensor, bias: bool = False) -> None:
        super().__init__()
        self.register_buffer("x", x)
        self.layers = nn.ModuleList([Linear(x.shape[1], 1, bias=bias)])

    def forward(self, drug_a: torch.Tensor, drug_b: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        return self.layers[0](self.x[drug_a]).squeeze(-1)


def rows(n: int, y: torch.Tensor | None = None) -> Pairs:
    i = torch.arange(n)
    return Pairs(i, i, i, y)


def set_guide(guide: MeanFieldNormalGuide, locs: dict, scales: dict) -> None:
    for name in locs:
        key = name.replace(".", "__")
        setattr(guide, f"{key}_loc", locs[name])
        setattr(guide, f"{key}_scale", scales[name])


def test_mean_field_svi_recovers_the_conjugate_posterior_for_an_orthogonal_design():
    g = torch.Generator().manual_seed(0)
    n, p, c, noise, prior_sd = 40, 4, 10.0, 1.0, 1.0
    q, _ = torch.linalg.qr(torch.randn(n, p, generator=g))
    x = q * math.sqrt(c)  # X^T X = c I: the exact posterior is diagonal
    y = x @ torch.tensor([1.0, -0.5, 0.0, 2.0]) + noise * torch.randn(n, generator=g)
    precision = c / noise**2 + 1 / prior_sd**2
    post_mean, post_sd = (x.T @ y / noise**2) / precision, precision**-0.5

    torch.manual_seed(0)
    model = BayesianRegression(RowLinear(x), NormalPrior(prior_sd), bayesian_layers="all", noise=noise)
    guide = MeanFieldNormalGuide(model, init_scale=0.1)
    epochs, lr = 800, 0.05
    config = SVIConfig(
        elbo="meanfield",
        stopping="none",
        warm_start_epochs=0,
        lr=lr,
        scale_lr=None,
        lr_decay=(5e-4 / lr) ** (1 / epochs),
        epochs=epochs,
        batch_size=n,
    )
    fit_svi(model, guide, rows(n, y), None, config)
    name = "predictor.layers.0.weight"
    torch.testing.assert_close(guide.locs()[name].detach()[0], post_mean, atol=0.05, rtol=0)
    torch.testing.assert_close(guide.scales()[name].detach()[0], torch.full((p,), post_sd), rtol=0.08, atol=0)


def test_laplace_prior_gives_sparser_posterior_means_than_a_normal_of_equal_variance():
    g = torch.Generator().manual_seed(0)
    n, p, sd = 50, 100, 0.3  # fewer data than inputs: the prior matters
    x = torch.randn(n, p, generator=g)
    beta = torch.zeros(p)
    beta[:10] = torch.tensor([1.0, -1.0, 1.5, -1.5, 2.0, -2.0, 1.0, -1.0, 1.2, -1.2])
    y = x @ beta + 0.5 * torch.randn(n, generator=g)
    means = {}
    for prior in (NormalPrior(sd), LaplacePrior(sd / math.sqrt(2))):  # both have variance sd^2
        torch.manual_seed(0)
        model = BayesianRegression(RowLinear(x), prior, bayesian_layers="all", noise=0.5)
        guide = MeanFieldNormalGuide(model)
        epochs, lr = 500, 0.02
        fit_svi(
            model,
            guide,
            rows(n, y),
            None,
            SVIConfig(
                elbo="meanfield",
                stopping="none",
                warm_start_epochs=0,
                lr=lr,
                scale_lr=None,
                lr_decay=(5e-4 / lr) ** (1 / epochs),
                epochs=epochs,
                batch_size=n,
            ),
        )
        means[type(prior).__name__] = guide.locs()["predictor.layers.0.weight"].detach()[0]
    normal, laplace = means["NormalPrior"], means["LaplacePrior"]

    def l1_over_l2(w: torch.Tensor) -> float:
        return float(w.abs().sum() / w.norm())

    assert l1_over_l2(laplace) < 0.97 * l1_over_l2(normal)
    assert float((laplace.abs() < 0.05).float().mean()) > 1.5 * float((normal.abs() < 0.05).float().mean())


def normal_kl(mu, s, prior_sd):
    return (math.log(prior_sd) - s.log() + (s**2 + mu**2) / (2 * prior_sd**2) - 0.5).sum()


def laplace_kl(mu, s, b):
    """E_q[log q - log p] for q = N(mu, s^2), p = Laplace(0, b), with E|w| of the folded normal."""
    abs_mean = s * math.sqrt(2 / math.pi) * torch.exp(-(mu**2) / (2 * s**2)) + mu * (
        1 - 2 * torch.special.ndtr(-mu / s)
    )
    return (-0.5 * torch.log(2 * math.pi * math.e * s**2) + math.log(2 * b) + abs_mean / b).sum()


@pytest.mark.parametrize(
    "prior, closed_form",
    [
        (NormalPrior(0.7), lambda mu, s: normal_kl(mu, s, 0.7)),
        (LaplacePrior(0.4), lambda mu, s: laplace_kl(mu, s, 0.4)),
    ],
)
def test_elbo_kl_part_matches_the_closed_form(prior, closed_form):
    torch.manual_seed(0)
    x = torch.randn(3, 30, dtype=torch.float64)
    model = BayesianRegression(RowLinear(x, bias=True).double(), prior, bayesian_layers="all")
    guide = MeanFieldNormalGuide(model)
    locs = {n: 0.8 * torch.randn(s.shape, dtype=torch.float64) for n, s in model.sites.items()}
    scales = {n: 0.05 + 0.5 * torch.rand(s.shape, dtype=torch.float64) for n, s in model.sites.items()}
    set_guide(guide, locs, scales)
    expected = float(sum(closed_form(locs[n], scales[n]) for n in model.sites))
    no_likelihood = poutine.block(model, hide=["obs"])  # the ELBO of zero data is -KL
    args = rows(3).drug_a, rows(3).drug_b, rows(3).cell, None
    particles = torch.tensor([Trace_ELBO().loss(no_likelihood, guide, *args) for _ in range(400)])
    standard_error = float(particles.std()) / math.sqrt(len(particles))
    assert abs(float(particles.mean()) - expected) < 4 * standard_error
    # The mean-field ELBO uses torch's registered analytic KL for both priors: no Monte-Carlo error.
    assert TraceMeanField_ELBO().loss(no_likelihood, guide, *args) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("elbo_cls", [Trace_ELBO, TraceMeanField_ELBO])
def test_kl_annealing_scales_only_the_kl_part(elbo_cls):
    torch.manual_seed(0)
    n = 8
    x = torch.randn(n, 5)
    y = torch.randn(n)
    model = BayesianRegression(RowLinear(x, bias=True), NormalPrior(0.5), bayesian_layers="all", noise=0.3)
    guide = MeanFieldNormalGuide(model, init_scale=0.2)
    data = rows(n, y)
    args = data.drug_a, data.drug_b, data.cell, data.y
    no_likelihood = poutine.block(model, hide=["obs"])
    kl = TraceMeanField_ELBO().loss(no_likelihood, guide, *args)
    beta = 0.25

    def loss(m, g):
        pyro.set_rng_seed(3)  # the same weight sample in both losses
        return elbo_cls().loss(m, g, *args)

    full, annealed = loss(model, guide), loss(LatentScale(beta)(model), LatentScale(beta)(guide))
    # -ELBO = -E[log lik] + KL; annealing turns KL into beta * KL (for Trace_ELBO: its 1-sample estimate).
    kl_estimate = kl if elbo_cls is TraceMeanField_ELBO else loss(no_likelihood, guide)
    assert annealed - full == pytest.approx((beta - 1) * kl_estimate, rel=1e-4)
    assert [kl_weight(e, 4) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert kl_weight(0, 0) == 1.0


def small_problem(seed: int = 0, n: int = 160):
    g = torch.Generator().manual_seed(seed)
    drugs, cells = 12, 2
    a, b, c = (
        torch.randint(drugs, (n,), generator=g),
        torch.randint(drugs, (n,), generator=g),
        torch.randint(cells, (n,), generator=g),
    )
    y = torch.sin(a.float()) * torch.cos(b.float()) + torch.sin(b.float()) * torch.cos(a.float()) + 0.3 * c
    y = y + 0.2 * torch.randn(n, generator=g)
    y = (y - y.mean()) / y.std()
    torch.manual_seed(seed)
    net = RecoverPredictor(
        torch.rand(drugs, 16).round(),
        torch.eye(cells),
        drug_hidden=(16, 8),
        merge_dim=8,
        merge_rank=3,
        head_hidden=(8,),
    )
    model = BayesianRegression(net, bayesian_layers="head")
    data = Pairs(a, b, c, y)
    return model, MeanFieldNormalGuide(model), data[:120], data[120:]


def guide_state(guide) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in guide.state_dict().items()}


def test_early_stopping_restores_the_best_epoch():
    model, guide, train, val = small_problem()
    config = SVIConfig(lr=0.05, epochs=40, batch_size=32, patience=3, val_samples=8, stopping="val")
    report = fit_svi(model, guide, train, val, config)
    assert len(report.losses) == len(report.val_metric) <= 40
    assert report.best_epoch == min(range(len(report.val_metric)), key=report.val_metric.__getitem__)
    assert validation_metric(model, guide, val, config) == pytest.approx(report.val_metric[report.best_epoch], rel=1e-6)
    mse = validation_metric(model, guide, val, SVIConfig(val_metric="mse", val_samples=8))
    assert 0 < mse < 10


def test_fit_is_reproducible_and_leaves_the_callers_rng_alone():
    results = []
    for _ in range(2):
        model, guide, train, val = small_problem()
        rng = torch.get_rng_state()
        report = fit_svi(model, guide, train, None, SVIConfig(lr=0.01, epochs=3, batch_size=40, seed=7))
        assert torch.equal(torch.get_rng_state(), rng)
        assert report.best_epoch == 2 and report.val_metric == []
        results.append((report.losses, guide_state(guide), float(model.noise_scale().detach())))
    assert results[0][0] == results[1][0] and results[0][2] == results[1][2]
    for k in results[0][1]:
        assert torch.equal(results[0][1][k], results[1][1][k])


def test_models_fitted_one_after_another_share_no_parameters():
    pyro.clear_param_store()
    first, first_guide, train, _ = small_problem()
    initial = guide_state(first_guide)
    fit_svi(first, first_guide, train, None, SVIConfig(lr=0.05, epochs=5, batch_size=40))
    fitted_first = guide_state(first_guide)
    noise_first = float(first.noise_scale().detach())
    assert any(not torch.equal(initial[k], fitted_first[k]) for k in initial)

    second, second_guide, train2, _ = small_problem()
    # Same architecture, names and seed: starts from its own initial values, not from the first fit.
    for k, v in guide_state(second_guide).items():
        assert torch.equal(v, initial[k])
    assert float(second.noise_scale().detach()) == pytest.approx(1.0)
    fit_svi(
        second,
        second_guide,
        Pairs(train2.drug_a, train2.drug_b, train2.cell, -train2.y),
        None,
        SVIConfig(lr=0.05, epochs=5, batch_size=40),
    )
    # ... and fitting it left the first model untouched.
    for k, v in guide_state(first_guide).items():
        assert torch.equal(v, fitted_first[k])
    assert float(first.noise_scale().detach()) == noise_first
    assert len(pyro.get_param_store()) == 0


def test_refit_continues_from_the_current_parameters():
    model, guide, train, _ = small_problem()
    config = SVIConfig(lr=0.05, epochs=4, batch_size=40)
    first = fit_svi(model, guide, train, None, config)
    second = fit_svi(model, guide, train, None, config)
    assert second.losses[0] < first.losses[0]


def test_kl_annealing_and_clipping_run_and_fit():
    model, guide, train, val = small_problem()
    report = fit_svi(
        model,
        guide,
        train,
        val,
        SVIConfig(
            lr=0.05, epochs=6, batch_size=40, kl_anneal_epochs=4, clip_norm=5.0, elbo="meanfield", num_particles=2
        ),
    )
    assert all(math.isfinite(v) for v in report.losses + report.val_metric)


def test_elbo_rule_waits_for_the_full_kl_weight():
    """While the KL weight ramps up the loss rises by design; the convergence rule (which would stop on a
    window without progress) only counts epochs at full weight."""
    model, guide, train, _ = small_problem()
    config = SVIConfig(lr=0.05, epochs=40, batch_size=60, kl_anneal_epochs=12, min_epochs=0, window=2, lr_drops=0)
    report = fit_svi(model, guide, train, None, config)
    assert report.converged
    assert config.kl_anneal_epochs - 1 + 2 * config.window <= len(report.losses) < config.epochs


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"elbo": "tracegraph"}, "elbo"),
        ({"val_metric": "mae"}, "val_metric"),
        ({"lr": 0.0}, "lr"),
        ({"lr_decay": 1.5}, "lr_decay"),
        ({"epochs": 0}, "epochs"),
        ({"kl_anneal_epochs": -1}, "kl_anneal_epochs"),
        ({"clip_norm": 0.0}, "clip_norm"),
    ],
)
def test_invalid_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SVIConfig(**kwargs)


def test_missing_or_bad_targets_raise():
    model, guide, train, _ = small_problem()
    with pytest.raises(ValueError, match="no targets"):
        fit_svi(model, guide, Pairs(train.drug_a, train.drug_b, train.cell), None, SVIConfig(epochs=1))
    bad = train.y.clone()
    bad[4] = float("nan")
    with pytest.raises(ValueError, match="row 4"):
        fit_svi(model, guide, Pairs(train.drug_a, train.drug_b, train.cell, bad), None, SVIConfig(epochs=1))


def decorrelated_fingerprint_features(almanac, p: int, max_corr: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, p)`` standardised pair features (sum of both drugs' Morgan bits) of ALMANAC MCF7 and ``(N,)``
    standardised ComboScores. Bits are taken greedily by variance among those whose correlation with every bit
    already taken stays below ``max_corr``: duplicated bits have a flat likelihood along their difference,
    where mean-field SVI moves only by the prior's pull (true of any stochastic optimiser, not a defect)."""
    from recover_pyro.data.featurize import featurize

    screen = almanac.select(cell_lines=["MCF7"])
    fp = featurize(screen, radius=2, n_bits=1024, one_hot=False).drug.float()
    pairs = screen.to_pairs("comboscore")
    x = fp[pairs.drug_a] + fp[pairs.drug_b]
    x = x[:, x.var(0) > 0.05]
    x = (x - x.mean(0)) / x.std(0)
    corr = torch.corrcoef(x.T).abs()
    chosen: list[int] = []
    for j in x.var(0).argsort(descending=True).tolist():
        if all(corr[j, k] < max_corr for k in chosen):
            chosen.append(j)
        if len(chosen) == p:
            break
    y = pairs.y.float()
    return x[:, chosen], (y - y.mean()) / y.std()


def synthetic_features(n: int = 600, p: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    mixing = torch.eye(p) + 0.15 * torch.randn(p, p, generator=g)  # correlated columns, condition number ~60
    x = torch.randn(n, p, generator=g) @ mixing
    y = x @ (0.3 * torch.randn(p, generator=g)) + 0.8 * torch.randn(n, generator=g)
    return x, y


@pytest.mark.parametrize("features", ["almanac", "synthetic"])
@pytest.mark.parametrize("init_scale", [1e-4, 1e-1])
def test_default_svi_reaches_the_mean_field_optimum_of_a_bayesian_linear_head(features, init_scale, request):
    """A Bayesian linear head on fixed features, known noise: the exact posterior is N(m, Lambda^-1) with
    Lambda = X^T X / s^2 + I / s_p^2 and m = Lambda^-1 X^T y / s^2; the mean-field optimum has means m and
    variances 1 / diag(Lambda). SVI with the default settings must reach it from a tiny and a large initial
    scale alike (a stuck optimiser keeps its initial scales and fails)."""
    x, y = (
        decorrelated_fingerprint_features(request.getfixturevalue("almanac"), 32)
        if features == "almanac"
        else synthetic_features()
    )
    n, p = x.shape
    noise, prior_sd = 0.9, 1.0
    precision = x.T @ x / noise**2 + torch.eye(p) / prior_sd**2
    post_mean = torch.linalg.solve(precision, x.T @ y / noise**2)
    mf_sd = precision.diagonal().rsqrt()

    torch.manual_seed(0)
    model = BayesianRegression(RowLinear(x), NormalPrior(prior_sd), bayesian_layers="all", noise=noise)
    guide = MeanFieldNormalGuide(model, init_scale=init_scale)
    report = fit_svi(model, guide, rows(n, y), None, SVIConfig())
    assert report.converged
    name = "predictor.layers.0.weight"
    mean, sd = guide.locs()[name].detach()[0], guide.scales()[name].detach()[0]
    # Means within one exact marginal posterior sd (the mean-field sd understates it for correlated columns,
    # where stochastic gradients leave the iterates fluctuating along the posterior's long axes).
    marginal_sd = torch.linalg.inv(precision).diagonal().sqrt()
    assert float(((mean - post_mean) / marginal_sd).abs().max()) < 1.0
    assert float(((mean - post_mean) / marginal_sd).abs().median()) < 0.5
    ratio = sd / mf_sd
    assert 0.92 < float(ratio.median()) < 1.08
    assert 0.7 < float(ratio.min()) and float(ratio.max()) < 1.4
    # The per-epoch curve splits the ELBO: expected NLL + KL = negative ELBO, KL > 0.
    last = [row for row in report.curve if row["stage"] == "svi"][-1]
    assert last["expected_nll"] + last["kl"] == pytest.approx(last["neg_elbo"])
    assert last["kl"] > 0


def test_validation_metric_on_cached_trunk_outputs_equals_the_full_predictive():
    model, guide, train, val = small_problem()
    fit_svi(model, guide, train, val, SVIConfig(lr=0.05, epochs=3, batch_size=40, warm_start_epochs=2))
    config = SVIConfig(val_samples=16, seed=3)
    with torch.no_grad(), local_params():  # a direct predictor call would register its parameters globally
        z_val = model.predictor.trunk(val.drug_a, val.drug_b, val.cell)
    assert validation_metric(model, guide, val, config, z_val) == pytest.approx(
        validation_metric(model, guide, val, config), rel=1e-5
    )
