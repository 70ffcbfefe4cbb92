"""Empirical-Bayes prior scales (``NormalPrior(empirical_bayes=True)``, issue #24): each Bayesian site's prior sd is
learned under the ELBO. With a mean-field Normal posterior and the analytic KL its optimum is closed form,
``s^2 = mean_i (mu_i^2 + sigma_i^2)`` over the site's weights; the fit must land there from a start far from it
(``scale`` 1 on a head whose posterior weights are ~0.1), which a stuck optimiser cannot."""

from __future__ import annotations

import functools

import pytest
import torch

from recover_pyro.bnn.inference import SVIConfig
from recover_pyro.bnn.layers import PRIOR_SCALE_SUFFIX, BayesianRegression
from recover_pyro.bnn.model import BNNSynergyModel
from recover_pyro.bnn.priors import LaplacePrior, NormalPrior
from recover_pyro.data.screen import Pairs
from recover_pyro.models.predictor import RecoverPredictor

D = 20
SMALL = functools.partial(RecoverPredictor, drug_hidden=(8,), merge_dim=4, merge_rank=2, head_hidden=(4,), film=False)


def screen(n: int = 150, seed: int = 0) -> Pairs:
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, D, (n,), generator=g)
    b = (a + 1 + torch.randint(0, D - 1, (n,), generator=g)) % D
    t = torch.randn(D, generator=g)
    return Pairs(a, b, torch.zeros(n, dtype=torch.long), t[a] + t[b] + 0.3 * torch.randn(n, generator=g))


def test_learned_prior_scale_reaches_its_closed_form_optimum() -> None:
    torch.manual_seed(0)
    model = BNNSynergyModel(
        torch.rand(D, 6),
        torch.zeros(1, 1),
        predictor=SMALL,
        prior=NormalPrior(scale=1.0, empirical_bayes=True),
        inference=SVIConfig(elbo="meanfield", epochs=600, min_epochs=400, lr=0.01, batch_size=50),
        seed=0,
    )
    model.fit(screen(), screen(40, seed=1))
    with torch.no_grad():
        locs, scales = model.guide.locs(), model.guide.scales()
        for site in model.model.sites:
            module_name, _, attr = site.removeprefix("predictor.").rpartition(".")
            learned = float(getattr(model.model.predictor.get_submodule(module_name), attr + PRIOR_SCALE_SUFFIX))
            optimum = float((locs[site] ** 2 + scales[site] ** 2).mean().sqrt())
            assert learned == pytest.approx(optimum, rel=0.05), site
            assert abs(learned - 1.0) > 0.2, site  # it moved far from where it started


def test_only_a_normal_prior_learns_its_scale() -> None:
    net = SMALL(torch.rand(D, 6), torch.zeros(1, 1))
    with pytest.raises(ValueError, match="NormalPrior"):
        BayesianRegression(net, type("EB", (LaplacePrior,), {"empirical_bayes": True})(), bayesian_layers="head")
    plain = BayesianRegression(SMALL(torch.rand(D, 6), torch.zeros(1, 1)), NormalPrior())
    assert not any(PRIOR_SCALE_SUFFIX in n for n, _ in plain.named_parameters())
