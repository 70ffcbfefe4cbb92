"""Identity random effects of the BNN (issue #24): ``f + u[a] + u[b] (+ v[c])``, ``u_d ~ N(0, tau^2)``.

The closed-form tests fit a toy screen ``y = u[a] + u[b] + noise`` (known noise, ``u_d ~ N(0, tau^2)``) through the
whole model (warm start, SVI with a frozen trunk, predictive) with a predictor that carries no signal, so the
identity effects must explain the data. The model is then a Gaussian linear model whose posterior given ``tau`` is
known exactly; the mean-field guide must find its means, the empirical-Bayes fixed point
``tau^2 = mean_d E_q[u_d^2]``, and the prior for drugs no datum mentions. Every value the guide starts from (``tau``
0.5, ``q(u) = N(0, 0.5^2)``) fails these checks.
"""

from __future__ import annotations

import functools
import io

import pyro
import pytest
import torch
from hydra import compose, initialize_config_dir
from pyro import poutine
from torch import nn

from recover_pyro.bnn.inference import SVIConfig
from recover_pyro.bnn.layers import IDENTITY_INIT_SCALE, BayesianRegression
from recover_pyro.bnn.model import BNNSynergyModel
from recover_pyro.bnn.predictive import sample_predictive
from recover_pyro.cli.builders import CONFIG_DIR, build_features, build_screen, model_factory
from recover_pyro.data.featurize import featurize
from recover_pyro.data.screen import Pairs
from recover_pyro.data.synthetic import make_synthetic_screen
from recover_pyro.models.predictor import Linear, RecoverPredictor

SIGMA = 0.3  # the toy's noise sd, known to the model
DRUGS, UNSEEN = 40, 5  # the last UNSEEN drugs appear in no training pair
SEEN = DRUGS - UNSEEN
SMALL = functools.partial(RecoverPredictor, drug_hidden=(16, 8), merge_dim=8, merge_rank=2, head_hidden=(8,))


class NoSignal(nn.Module):
    """A trunk / head predictor whose output is ``w * 0``: one Bayesian weight that no datum informs."""

    def __init__(self, drug_features: torch.Tensor, cell_features: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("drug_features", drug_features)
        self.register_buffer("cell_features", cell_features)
        self.head_layers = nn.ModuleList([Linear(1, 1, bias=False)])

    def trunk(self, drug_a: torch.Tensor, drug_b: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        return drug_a.new_zeros(drug_a.shape[0], 1, dtype=torch.float32)

    def head(self, z: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        return self.head_layers[0](z).squeeze(-1)

    def forward(self, drug_a: torch.Tensor, drug_b: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(drug_a, drug_b, cell), cell)


def toy(tau: float, seed: int = 0) -> tuple[torch.Tensor, Pairs, Pairs]:
    """True effects ``u`` ``(DRUGS,)`` and (fit, validation) pairs of the SEEN drugs, ``y = u_a + u_b + noise``."""
    g = torch.Generator().manual_seed(seed)
    u = tau * torch.randn(DRUGS, generator=g)
    a, b = torch.triu_indices(SEEN, SEEN, 1)
    pairs = Pairs(a, b, torch.zeros_like(a), u[a] + u[b] + SIGMA * torch.randn(len(a), generator=g))
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(1))
    return u, pairs[order[60:]], pairs[order[:60]]


def fit_toy(
    tau: float, scale: str = "empirical_bayes", elbo: str = "meanfield", prior_locs: torch.Tensor | None = None
) -> tuple[BNNSynergyModel, Pairs]:
    """Fit the toy; ``prior_locs`` ``(DRUGS,)``: the effects' prior means (0 by default)."""
    u, fit, val = toy(tau)
    model = BNNSynergyModel(
        torch.zeros(DRUGS, 1),
        torch.zeros(1, 1),
        predictor=NoSignal,
        identity_effects="drugs",
        identity_scale=scale,
        noise=SIGMA,
        standardize=False,
        inference=SVIConfig(lr=0.01, elbo=elbo, lr_drops=2),
    )
    if prior_locs is not None:
        assert model.model.identity is not None
        model.model.identity.set_prior_locs({"identity.drug": prior_locs})
    model.fit(fit, val)
    return model, fit


@pytest.fixture(scope="module")
def empirical_bayes() -> dict[float, tuple[BNNSynergyModel, Pairs]]:
    """Empirical-Bayes fits (analytic KL) of toys with true tau 0.3 and 1.0."""
    return {tau: fit_toy(tau) for tau in (0.3, 1.0)}


def q_effects(model: BNNSynergyModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and sds ``(DRUGS,)`` of the drug effects."""
    q = model.guide.effect_distribution(model.guide.identity_sites[0]).base_dist
    return q.loc.detach(), q.scale.detach()


def exact_posterior(
    fit: Pairs, tau: float, prior_locs: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and precision of ``p(u_seen | y, tau, sigma)`` of the Gaussian linear model ``y = X u + noise``,
    ``u ~ N(m, tau^2)`` (``m``: ``prior_locs`` of the seen drugs, 0 by default)."""
    x = torch.zeros(len(fit), SEEN, dtype=torch.float64)
    rows = torch.arange(len(fit))
    x[rows, fit.drug_a] += 1.0
    x[rows, fit.drug_b] += 1.0
    precision = x.T @ x / SIGMA**2 + torch.eye(SEEN, dtype=torch.float64) / tau**2
    m = torch.zeros(SEEN, dtype=torch.float64) if prior_locs is None else prior_locs.double()
    return torch.linalg.solve(precision, x.T @ fit.y.double() / SIGMA**2 + m / tau**2), precision


def pairs(a: list[int], b: list[int]) -> Pairs:
    return Pairs(torch.tensor(a), torch.tensor(b), torch.zeros(len(a), dtype=torch.long))


def test_empirical_bayes_scale_recovers_the_true_scale_and_follows_it(empirical_bayes):
    estimates = {}
    for tau, (model, _) in empirical_bayes.items():
        realised = float(toy(tau)[0].pow(2).mean().sqrt())  # what 40 draws of N(0, tau^2) say about tau
        estimates[tau] = model.identity_scales()["drug"]
        assert estimates[tau] == pytest.approx(realised, rel=0.1), tau
        assert estimates[tau] == pytest.approx(tau, rel=0.2), tau
    assert estimates[1.0] / estimates[0.3] == pytest.approx(1.0 / 0.3, rel=0.1)


def test_empirical_bayes_scale_is_at_the_variational_em_fixed_point(empirical_bayes):
    # d ELBO / d tau = 0 <=> tau^2 = mean over every drug (seen or not) of E_q[u_d^2] = m_d^2 + s_d^2.
    for model, _ in empirical_bayes.values():
        m, s = q_effects(model)
        tau = model.identity_scales()["drug"]
        assert tau**2 == pytest.approx(float((m**2 + s**2).mean()), rel=0.03)


def test_posterior_means_are_the_conjugate_posterior_means(empirical_bayes):
    for tau, (model, fit) in empirical_bayes.items():
        truth = toy(tau)[0][:SEEN]
        m, s = q_effects(model)
        mean, precision = exact_posterior(fit, model.identity_scales()["drug"])
        # Mean-field VB on a Gaussian posterior finds its means exactly (posterior sd here ~0.05).
        assert float((m[:SEEN].double() - mean).abs().max()) < 0.04, tau
        assert float((m[:SEEN] - truth).abs().max()) < 0.2, tau
        assert float(torch.corrcoef(torch.stack([m[:SEEN], truth]))[0, 1]) > 0.98, tau
        # ... and sds 1 / sqrt(precision_dd), far below the prior's tau (up to the optimiser's noise).
        ratio = s[:SEEN].double() * precision.diagonal().sqrt()
        assert 0.7 < float(ratio.min()) and float(ratio.max()) < 2.0, tau


def test_posterior_as_prior_centres_the_effects_and_the_next_fit_is_conjugate():
    """After ``posterior_as_prior`` the effects' prior is ``N(m, tau^2)`` with ``m`` the fitted means, and a fit on new
    data (a second toy; drugs 0-4 in none of its pairs) finds ``P^-1 (X^T y / sigma^2 + m / tau^2)``, which keeps
    ``m`` for drugs no new datum mentions, and ``tau`` is the spread around ``m``:
    ``tau^2 = mean_d E_q[(u_d - m_d)^2]``."""
    model, _ = fit_toy(1.0)
    m = q_effects(model)[0].clone()  # the guide's parameter moves in the next fit
    model.posterior_as_prior()
    identity = model.model.identity
    assert identity is not None
    prior = identity.prior(identity.sites[0], torch.tensor(0.7))
    assert torch.equal(prior.mean, m) and torch.allclose(prior.stddev, torch.tensor(0.7))
    _, fit, val = toy(1.0, seed=1)
    fit, val = (p[torch.nonzero((p.drug_a >= 5) & (p.drug_b >= 5)).squeeze(1)] for p in (fit, val))
    model.fit(fit, val)
    q_m, q_s = q_effects(model)
    tau = model.identity_scales()["drug"]
    mean, _ = exact_posterior(fit, tau, m[:SEEN])
    assert float((q_m[:SEEN].double() - mean).abs().max()) < 0.04
    assert float((q_m[:5] - m[:5]).abs().max()) < 0.04 and float(m[:5].abs().max()) > 0.3
    assert tau**2 == pytest.approx(float(((q_m - m) ** 2 + q_s**2).mean()), rel=0.03)


def test_a_drug_never_seen_keeps_its_prior_and_its_pairs_carry_tau_squared(empirical_bayes):
    for tau, (model, _) in empirical_bayes.items():
        tau_hat = model.identity_scales()["drug"]
        m, s = q_effects(model)
        # The analytic KL is the only force on an unseen drug's factor: it sits at the prior N(0, tau^2).
        assert float(m[SEEN:].abs().max()) < 1e-3 * tau_hat
        assert torch.allclose(s[SEEN:], torch.full((UNSEEN,), tau_hat), rtol=0.01)
        new_seen, seen_seen, new_new = pairs([SEEN, SEEN + 1], [0, 1]), pairs([0, 2], [1, 3]), pairs([SEEN], [SEEN + 1])
        sd = {
            k: model.predict(p, 4000).epistemic_std
            for k, p in {"new_seen": new_seen, "seen_seen": seen_seen, "new_new": new_new}.items()
        }
        seen_var = s[[0, 1]] ** 2  # the seen partner's own posterior variance
        assert torch.allclose(sd["new_seen"] ** 2, tau_hat**2 + seen_var, rtol=0.08), tau
        assert torch.allclose(sd["new_new"], torch.tensor(2**0.5 * tau_hat), rtol=0.05), tau
        # Pairs of seen drugs: only the two effects' posterior variances, well below tau^2.
        assert torch.allclose(sd["seen_seen"] ** 2, s[[0, 2]] ** 2 + s[[1, 3]] ** 2, rtol=0.08), tau
        assert float(sd["seen_seen"].max()) < 0.5 * tau_hat, tau


def test_hierarchical_scale_under_the_default_monte_carlo_elbo():
    model, fit = fit_toy(1.0, scale="hierarchical", elbo="trace")
    realised = float(toy(1.0)[0].pow(2).mean().sqrt())
    tau = model.identity_scales()["drug"]  # posterior mean of tau
    assert tau == pytest.approx(realised, rel=0.15)
    m, s = q_effects(model)
    mean, _ = exact_posterior(fit, tau)
    assert float((m[:SEEN].double() - mean).abs().max()) < 0.05
    # Under Monte-Carlo KL the unseen factors wander around the prior, within the optimiser's noise.
    assert float(m[SEEN:].abs().max()) < 0.2 * tau
    assert torch.allclose(s[SEEN:], torch.full((UNSEEN,), tau), rtol=0.2)
    sd = model.predict(pairs([SEEN, 0], [0, 1]), 2000).epistemic_std
    assert float(sd[0]) > 5 * float(sd[1])


@pytest.fixture(scope="module")
def synthetic():
    screen = make_synthetic_screen(n_drugs=16, n_cell_lines=2, seed=0)
    features = featurize(screen, cache_dir=None)
    data = screen.to_pairs()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    return features, data[order[:150]], data[order[150:180]], data[order[180:]]


@pytest.mark.parametrize("layers", ["head", "all"])
def test_posterior_draws_hold_the_effects_and_predict_stays_s_by_n(synthetic, layers):
    features, train, val, test = synthetic
    model = BNNSynergyModel(
        features.drug,
        features.cell,
        predictor=SMALL,
        bayesian_layers=layers,
        identity_effects="drugs_and_cells",
        identity_scale="hierarchical",
        inference=SVIConfig(lr=0.01, epochs=3, batch_size=64),
    )
    model.fit(train, val)
    draw = model.draw_posterior(7)
    drugs, cells = features.drug.shape[0], features.cell.shape[0]
    assert draw["identity.drug"].shape == (7, drugs) and draw["identity.cell"].shape == (7, cells)
    assert draw["identity.drug_scale"].shape == draw["identity.cell_scale"].shape == (7,)
    f = model.predict(test, 7).f
    assert f.shape == (7, len(test))
    assert torch.equal(f, model.predict(test, 7, draw=draw).f)
    assert torch.equal(f, model.predict(test.swapped(), 7).f)  # u[a] + u[b] is symmetric too
    z = model.scaler.transform(f)
    by_five = sample_predictive(model.model, model.guide, test, 7, chunk_size=5, weights=draw)
    assert torch.allclose(by_five, z, atol=1e-5)
    # The effects are part of f: the mean function moves with them, pair by pair.
    shifted = {**draw, "identity.drug": draw["identity.drug"] + 1.0}
    moved = sample_predictive(model.model, model.guide, test, 7, weights=shifted)
    assert torch.allclose(moved - by_five, torch.full_like(moved, 2.0), atol=1e-4)
    with pytest.raises(KeyError, match="identity.drug"):
        model.predict(test, 7, draw={k: v for k, v in draw.items() if k != "identity.drug"})
    assert set(model.fit_summary()) >= {"identity_drug_scale", "identity_cell_scale"}
    model.posterior_as_prior(widen=2.0)  # the weight sites only; the effects keep their hierarchical prior
    model.fit(train, val)
    assert len(pyro.get_param_store()) == 0


@pytest.mark.parametrize("cells", [1, 3])
def test_cell_effects_only_with_more_than_one_cell_line(cells):
    """One cell line's effect would be an offset shared by every experiment: drugs_and_cells is then drugs."""
    drugs = torch.randn(6, 4)

    def build(option: str) -> BayesianRegression:
        return BayesianRegression(NoSignal(drugs, torch.randn(cells, 2)), identity_effects=option)

    both, drugs_only = build("drugs_and_cells"), build("drugs")
    expected = ["identity.drug_scale", "identity.drug"] + (
        ["identity.cell_scale", "identity.cell"] if cells > 1 else []
    )
    assert both.identity is not None and both.identity.site_names == expected
    assert drugs_only.identity is not None and drugs_only.identity.site_names == expected[:2]


def test_state_dict_round_trip_gives_identical_predictions_and_resumes_exactly(synthetic):
    features, train, val, test = synthetic
    kwargs = dict(predictor=SMALL, identity_effects="drugs", inference=SVIConfig(lr=0.01, epochs=3, batch_size=64))
    model = BNNSynergyModel(features.drug, features.cell, **kwargs)
    model.fit(train, val)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    loaded = BNNSynergyModel(features.drug, features.cell, **kwargs)
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(loaded.predict(test, 9).f, model.predict(test, 9).f)
    assert torch.equal(loaded.draw_posterior(4)["identity.drug"], model.draw_posterior(4)["identity.drug"])
    assert loaded.identity_scales() == model.identity_scales()
    assert "identity__drug_scale_loc_unconstrained" in model.state_dict()["guide"]  # log tau
    # A second fit from the restored state is the uninterrupted run's second fit.
    model.fit(train, val)
    loaded.fit(train, val)
    assert torch.equal(loaded.predict(test, 9).f, model.predict(test, 9).f)
    with pytest.raises(RuntimeError):  # a model without the effects cannot take this state
        BNNSynergyModel(features.drug, features.cell, predictor=SMALL).load_state_dict(model.state_dict())


def test_the_option_off_adds_no_site_and_no_parameter(synthetic):
    features, train, _, _ = synthetic
    default = BNNSynergyModel(features.drug, features.cell, predictor=SMALL)
    off = BNNSynergyModel(features.drug, features.cell, predictor=SMALL, identity_effects="none")
    on = BNNSynergyModel(features.drug, features.cell, predictor=SMALL, identity_effects="drugs")
    assert default.model.identity is None and off.model.identity is None
    for a, b in ((default, off),):
        assert list(a.model.state_dict()) == list(b.model.state_dict())
        assert list(a.guide.state_dict()) == list(b.guide.state_dict())
        assert all(torch.equal(a.guide.state_dict()[k], v) for k, v in b.guide.state_dict().items())
    assert default.model.latent_sites == list(default.model.sites)
    assert set(default.guide.sample_weights(2)) == set(default.model.sites)

    def latent(model: BNNSynergyModel) -> dict[str, tuple]:
        # The model run on the guide's draws (an empirical-Bayes scale has an improper prior: no prior draws).
        replayed = poutine.replay(model.model, trace=poutine.trace(model.guide).get_trace())
        trace = poutine.trace(replayed).get_trace(train.drug_a, train.drug_b, train.cell, None)
        return {
            n: tuple(f.name for f in s["cond_indep_stack"]) for n, s in trace.nodes.items() if s["type"] == "sample"
        }

    assert [n for n in latent(default) if n.startswith("identity")] == []
    sites = latent(on)
    # With the option on: a scale and the effects per group, sampled outside the data plate.
    assert sites["identity.drug_scale"] == sites["identity.drug"] == () and sites["obs"] == ("data",)
    assert set(on.guide.state_dict()) - set(default.guide.state_dict()) == {
        "identity__drug_scale_loc_unconstrained",  # log tau (empirical Bayes: its point estimate)
        "identity__drug_loc_unconstrained",  # m
        "identity__drug_scale_unconstrained",  # s
    }
    assert list(on.model.state_dict()) == list(default.model.state_dict())  # the model holds priors only
    q = on.guide.effect_distribution(on.guide.identity_sites[0]).base_dist
    assert torch.equal(q.loc, torch.zeros(features.drug.shape[0]))  # starts at its prior N(0, tau_0^2)
    assert torch.allclose(q.scale, torch.full_like(q.scale, IDENTITY_INIT_SCALE))


def test_unknown_options_are_named():
    net = NoSignal(torch.zeros(3, 1), torch.zeros(1, 1))
    with pytest.raises(ValueError, match="identity_effects"):
        BayesianRegression(net, identity_effects="genes")
    with pytest.raises(ValueError, match="identity_scale"):
        BayesianRegression(
            NoSignal(torch.zeros(3, 1), torch.zeros(1, 1)), identity_effects="drugs", identity_scale="ml"
        )

    class NoTables(nn.Module):  # a predictor without drug / cell feature tables
        def __init__(self) -> None:
            super().__init__()
            self.head_layers = nn.ModuleList([Linear(1, 1)])

        def forward(self, drug_a: torch.Tensor, drug_b: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
            return self.head_layers[0](drug_a.new_zeros(drug_a.shape[0], 1, dtype=torch.float32)).squeeze(-1)

    with pytest.raises(ValueError, match="num_drugs"):
        BayesianRegression(NoTables(), identity_effects="drugs")
    assert BayesianRegression(NoTables(), identity_effects="drugs", num_drugs=4, num_cells=1).identity is not None


def test_the_head_only_bnn_has_them_off_and_the_preset_builds_the_variant():
    # (the default BNN has them: tests/cli/test_default_model.py)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        default = compose("config", overrides=["data=synthetic", "data.screen.n_drugs=12", "+experiment=normal"])
        preset = compose(
            "config", overrides=["data=synthetic", "data.screen.n_drugs=12", "+experiment=normal_identity"]
        )
    assert default.model.identity_effects == "none"
    assert preset.model.identity_effects == "drugs" and preset.model.identity_scale == "hierarchical"
    assert preset.features.one_hot is False and preset.inference.elbo == "meanfield"
    screen = build_screen(preset)
    model = model_factory(preset, build_features(preset, screen))()
    assert isinstance(model, BNNSynergyModel) and model.model.identity is not None
    assert model.model.identity.hierarchical and [s.group for s in model.model.identity.sites] == ["drug"]
    assert model_factory(default, build_features(default, build_screen(default)))().model.identity is None
