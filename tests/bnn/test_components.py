"""A mixture of ``K`` posteriors sharing the point-estimated weights (``components``, issue #24).

The loss must be the average of the components' own ELBOs (each one a one-component model with that component's
factors), and sample ``s`` must come from component ``s mod K``. Both are checked against one-component models
built from the same numbers, with posterior spreads so small that sampled weights are their means and the
analytic KL of ``TraceMeanField_ELBO`` makes the loss deterministic.
"""

from __future__ import annotations

import functools

import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from recover_pyro.bnn.guides import MeanFieldNormalGuide
from recover_pyro.bnn.inference import SVIConfig
from recover_pyro.bnn.layers import BayesianRegression, _component_inits, local_params
from recover_pyro.bnn.model import BNNSynergyModel
from recover_pyro.data.screen import Pairs
from recover_pyro.models.predictor import RecoverPredictor

D = 8
SMALL = functools.partial(RecoverPredictor, drug_hidden=(6,), merge_dim=4, merge_rank=2, head_hidden=(3,), film=False)


def pairs(n: int = 20, seed: int = 0) -> Pairs:
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, D, (n,), generator=g)
    b = (a + 1 + torch.randint(0, D - 1, (n,), generator=g)) % D
    return Pairs(a, b, torch.zeros(n, dtype=torch.long), torch.randn(n, generator=g))


def regression(components: int, rank1: bool = False) -> tuple[BayesianRegression, MeanFieldNormalGuide]:
    torch.manual_seed(0)
    net = SMALL(torch.rand(D, 5), torch.zeros(1, 1), rank1_factors=rank1)
    model = BayesianRegression(net, components=components, generator=torch.Generator().manual_seed(1))
    return model, MeanFieldNormalGuide(model, init_scale=1e-7)


def loss(model: BayesianRegression, guide: MeanFieldNormalGuide, data: Pairs) -> float:
    with local_params():
        elbo = TraceMeanField_ELBO().differentiable_loss(model, guide, data.drug_a, data.drug_b, data.cell, data.y)
        return float(elbo.detach())


def component(mixture: MeanFieldNormalGuide, single: MeanFieldNormalGuide, k: int) -> None:
    """Copy component ``k`` of ``mixture``'s factors into the one-component ``single``."""
    with torch.no_grad():
        for site in single.site_shapes:
            for what in ("loc", "scale"):
                single._unconstrained(site, what).copy_(mixture._unconstrained(site, what)[k])


@pytest.mark.parametrize("rank1", [False, True])
def test_loss_is_the_average_of_the_components_elbos(rank1: bool) -> None:
    data = pairs()
    mixture, mixture_guide = regression(3, rank1)
    single, single_guide = regression(1, rank1)
    with torch.no_grad():  # the random effects start at their prior spread: shrink them too
        for site in mixture_guide.site_shapes:
            mixture_guide._unconstrained(site, "scale").clamp_(max=float(torch.tensor(1e-7).log()))
    parts = []
    for k in range(3):
        component(mixture_guide, single_guide, k)
        parts.append(loss(single, single_guide, data))
    assert len(set(parts)) == 3  # the components start apart
    assert loss(mixture, mixture_guide, data) == pytest.approx(sum(parts) / 3, rel=1e-5)


def test_component_inits_keep_the_initial_distribution() -> None:
    g = torch.Generator().manual_seed(0)
    init = torch.rand(4, 5)
    out = _component_inits(init, 3, False, 0.0, 1.0, g)
    assert out.shape == (3, 4, 5) and torch.equal(out[0], init)
    for k in (1, 2):
        assert torch.equal(out[k].flatten().sort().values, init.flatten().sort().values)
        assert not torch.equal(out[k], init)
    assert torch.equal(_component_inits(torch.zeros(3), 2, False, 0.0, 1.0, g), torch.zeros(2, 3))
    effect = _component_inits(torch.ones(500), 2, True, 1.0, 0.4, g)
    assert torch.equal(effect[0], torch.ones(500))
    assert float(effect[1].mean()) == pytest.approx(1.0, abs=0.05) and float(effect[1].std()) == pytest.approx(
        0.2, abs=0.03
    )


def test_sample_s_comes_from_component_s_mod_k() -> None:
    model, guide = regression(3, rank1=True)
    with torch.no_grad():
        for site in guide.site_shapes:
            guide._unconstrained(site, "scale").fill_(-30.0)  # sd e^-30: a sample is its mean
        draws = guide.sample_weights(7, generator=torch.Generator().manual_seed(0))
        locs = guide.locs()
    for site, value in draws.items():
        assert value.shape == (7, *guide.site_shapes[site][1:])
        for s in range(7):
            assert torch.allclose(value[s], locs[site][s % 3])


def test_components_fit_apart_and_predict() -> None:
    data, val = pairs(60), pairs(20, seed=1)
    model = BNNSynergyModel(
        torch.rand(D, 5),
        torch.zeros(1, 1),
        predictor=functools.partial(SMALL, rank1_factors=True),
        components=2,
        inference=SVIConfig(elbo="meanfield", epochs=5, min_epochs=1, warm_start_epochs=5),
        seed=0,
    )
    model.fit(data, val)
    locs = model.guide.locs()["predictor.drug_layers.0.in_factor"]
    assert locs.shape == (2, 5) and not torch.allclose(locs[0], locs[1])
    f = model.predict(val, 10).f
    assert f.shape == (10, len(val)) and bool(torch.isfinite(f).all())
    with pytest.raises(ValueError, match="components"):
        BNNSynergyModel(torch.rand(D, 5), torch.zeros(1, 1), predictor=SMALL, components=2, identity_effects="drugs")
