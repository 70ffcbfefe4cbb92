import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from recover_pyro.data.screen import Pairs
from recover_pyro.bnn.guides import MeanFieldNormalGuide
from recover_pyro.bnn.inference import SVIConfig, fit_svi
from recover_pyro.bnn.layers import BayesianRegression, select_bayesian_parameters
from recover_pyro.models.predictor import DeepSynergyPredictor, Linear, RecoverPredictor
from recover_pyro.bnn.priors import LaplacePrior, NormalPrior

D, C = 12, 3


def predictor(seed: int = 0) -> RecoverPredictor:
    torch.manual_seed(seed)
    drugs = torch.rand(D, 16).round()
    return RecoverPredictor(drugs, torch.eye(C), drug_hidden=(12, 8), merge_dim=6, merge_rank=3, head_hidden=(5,))


def pairs(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(D, (n,), generator=g), torch.randint(D, (n,), generator=g), torch.randint(C, (n,), generator=g)


def test_head_selects_only_head_layers_and_keeps_the_rest_deterministic():
    model = BayesianRegression(predictor(), bayesian_layers="head")
    assert list(model.sites) == [
        "predictor.head_layers.0.weight",
        "predictor.head_layers.0.bias",
        "predictor.head_layers.1.weight",
        "predictor.head_layers.1.bias",
    ]
    params = dict(model.named_parameters())
    assert "predictor.merge.weight" in params and "predictor.drug_layers.0.weight" in params
    assert not any(name.startswith("predictor.head_layers") for name in params)
    assert "sigma_unconstrained" in params


def test_prefix_list_and_all():
    net = predictor()
    names = [n for n, _ in net.named_parameters()]
    assert select_bayesian_parameters(net, "all") == names
    chosen = select_bayesian_parameters(net, ["merge", "head_layers.1"])
    assert chosen == ["merge.weight", "merge.diag", "merge.bias", "head_layers.1.weight", "head_layers.1.bias"]
    model = BayesianRegression(net, bayesian_layers=["merge", "head_layers.1"])
    assert set(model.sites) == {f"predictor.{n}" for n in chosen}


def test_deep_synergy_head_is_its_last_layer():
    torch.manual_seed(0)
    net = DeepSynergyPredictor(torch.rand(D, 8), torch.eye(C), hidden=(6, 4))
    assert select_bayesian_parameters(net, "head") == ["layers.2.weight", "layers.2.bias"]


@pytest.mark.parametrize(
    "layers, match",
    [
        ("everything", "use 'all', 'head'"),
        (["merge", "nonexistent"], "'nonexistent' matches no parameter"),
        ([], "empty"),
    ],
)
def test_bad_layer_choices_raise_clear_errors(layers, match):
    with pytest.raises(ValueError, match=match):
        select_bayesian_parameters(predictor(), layers)


def test_sites_follow_sampling_order_with_fan_in_and_initial_values():
    net = predictor()
    init = {f"predictor.{n}": p.detach().clone() for n, p in net.named_parameters()}
    model = BayesianRegression(net, bayesian_layers="all")
    # drug layer, then its FiLM, then the next drug layer: forward-pass order, not parameter order.
    assert list(model.sites)[:5] == [
        "predictor.drug_layers.0.weight",
        "predictor.drug_layers.0.bias",
        "predictor.film.0.linear.weight",
        "predictor.film.0.linear.bias",
        "predictor.drug_layers.1.weight",
    ]
    site = model.sites
    assert site["predictor.drug_layers.0.weight"].fan_in == 16
    assert site["predictor.drug_layers.0.bias"].fan_in == 16
    assert site["predictor.merge.weight"].fan_in == 8 and site["predictor.merge.weight"].shape == (6, 3, 8)
    assert site["predictor.merge.diag"].fan_in == 3
    assert site["predictor.merge.bias"].fan_in == 8
    for name, s in site.items():
        assert torch.equal(s.init, init[name])
    assert list(model.parameters()) == [model.sigma_unconstrained]


def test_weight_sites_carry_the_prior_and_sit_outside_the_data_plate():
    prior = LaplacePrior(scale=0.3)
    model = BayesianRegression(predictor(), prior=prior, bayesian_layers="head")
    a, b, c = pairs(10)
    trace = poutine.trace(model).get_trace(a, b, c, torch.randn(10))
    for name, site in model.sites.items():
        node = trace.nodes[name]
        assert node["value"].shape == site.shape
        assert node["scale"] == 1.0 and not node["cond_indep_stack"]
        expected = prior.distribution(site.shape, site.fan_in).log_prob(node["value"])
        assert torch.allclose(node["fn"].log_prob(node["value"]), expected)


def test_minibatch_log_likelihood_is_scaled_to_the_data_size():
    model = BayesianRegression(predictor(), bayesian_layers="head", noise=0.7)
    n, idx = 40, torch.tensor([3, 17, 5, 29, 11])
    a, b, c = pairs(n)
    y = torch.randn(n)
    trace = poutine.trace(model).get_trace(a, b, c, y, subsample=idx)
    trace.compute_log_prob()
    obs = trace.nodes["obs"]
    assert obs["scale"] == pytest.approx(n / len(idx))
    f = trace.nodes["_RETURN"]["value"]
    with torch.no_grad():
        weights = {name: trace.nodes[name]["value"] for name in model.sites}
        assert torch.allclose(f, model.mean_function(weights, a[idx], b[idx], c[idx]))
    unscaled = dist.Normal(f, 0.7).log_prob(y[idx]).sum()
    assert float(obs["log_prob_sum"].detach()) == pytest.approx(n / len(idx) * float(unscaled.detach()), rel=1e-5)


def test_noise_is_learned_or_fixed():
    learned = BayesianRegression(predictor(), noise="learned", init_noise=0.4)
    assert float(learned.noise_scale().detach()) == pytest.approx(0.4)
    fixed = BayesianRegression(predictor(), noise=0.25)
    assert float(fixed.noise_scale().detach()) == pytest.approx(0.25)
    assert "sigma" in dict(fixed.named_buffers()) and "sigma_unconstrained" not in dict(fixed.named_parameters())
    for bad in ("fixed", -1.0, 0):
        with pytest.raises(ValueError, match="noise"):
            BayesianRegression(predictor(), noise=bad)


def test_mean_function_broadcasts_sample_batched_weights():
    model = BayesianRegression(predictor(), bayesian_layers=["merge", "head_layers"])
    a, b, c = pairs(9)
    weights = {n: s.init + 0.1 * torch.randn(4, *s.shape) for n, s in model.sites.items()}
    with torch.no_grad():
        f = model.mean_function(weights, a, b, c)
        assert f.shape == (4, 9)
        f2 = model.mean_function({n: w[2] for n, w in weights.items()}, a, b, c)
    assert torch.allclose(f[2], f2, atol=1e-6)
    with pytest.raises(KeyError, match="no values"):
        model.mean_function({}, a, b, c)


def test_initial_weights_reproduce_the_deterministic_predictor():
    net = predictor()
    a, b, c = pairs(7)
    with torch.no_grad():
        expected = net(a, b, c)
    model = BayesianRegression(net, bayesian_layers="all")
    with torch.no_grad():
        f = model.mean_function({n: s.init for n, s in model.sites.items()}, a, b, c)
    assert torch.equal(f, expected)


def test_models_never_touch_the_global_param_store():
    pyro.clear_param_store()
    pyro.param("sigma", torch.tensor(5.0))  # a same-named global param must not leak in
    model = BayesianRegression(predictor(), noise="learned", init_noise=0.3)
    a, b, c = pairs(5)
    poutine.trace(model).get_trace(a, b, c, torch.zeros(5))
    assert float(model.noise_scale().detach()) == pytest.approx(0.3)
    assert set(pyro.get_param_store().keys()) == {"sigma"}
    pyro.clear_param_store()


def test_normal_prior_default():
    model = BayesianRegression(predictor())
    site = next(iter(model.sites.values()))
    trace = poutine.trace(model).get_trace(*pairs(3), None)
    fn = trace.nodes[site.name]["fn"]
    w = trace.nodes[site.name]["value"]
    assert torch.allclose(fn.log_prob(w), NormalPrior().distribution(site.shape, site.fan_in).log_prob(w))


class RowLinear(torch.nn.Module):
    """Linear regression on rows of a design matrix ``x``: the row index comes in as ``drug_a``."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("x", x)
        self.layers = torch.nn.ModuleList([Linear(x.shape[1], 1, bias=False)])

    def forward(self, drug_a, drug_b, cell):
        return self.layers[0](self.x[drug_a]).squeeze(-1)


def test_posterior_of_a_first_fit_as_prior_gives_the_joint_conjugate_posterior():
    """Sequential Bayes: fit A, make q_A the prior, fit B  ==  the exact posterior given A and B.

    Both designs have orthogonal columns (X^T X = c I), so every posterior is diagonal and mean-field SVI
    can be exact: posterior precision 1/s0^2 + (c_A + c_B)/sigma^2, mean (X_A^T y_A + X_B^T y_B)/sigma^2 / precision.
    """
    g = torch.Generator().manual_seed(0)
    n, p, noise, prior_sd, c = 30, 3, 1.0, 1.0, (6.0, 9.0)
    xs = [torch.linalg.qr(torch.randn(n, p, generator=g))[0] * ci**0.5 for ci in c]
    beta = torch.tensor([1.0, -0.5, 2.0])
    ys = [x @ beta + noise * torch.randn(n, generator=g) for x in xs]
    precision = 1 / prior_sd**2 + sum(c) / noise**2
    post_mean = sum(x.T @ y for x, y in zip(xs, ys)) / noise**2 / precision

    torch.manual_seed(0)
    model = BayesianRegression(RowLinear(torch.cat(xs)), NormalPrior(prior_sd), bayesian_layers="all", noise=noise)
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
    site = "predictor.layers.0.weight"
    for part, y in enumerate(ys):
        rows = torch.arange(part * n, (part + 1) * n)
        fit_svi(model, guide, Pairs(rows, rows, rows, y), None, config)
        if part == 0:
            q = guide.site_distribution(site)
            model.set_priors({site: dist.Normal(q.loc.detach().clone(), q.scale.detach().clone())})
    torch.testing.assert_close(guide.locs()[site].detach()[0], post_mean, atol=0.05, rtol=0)
    torch.testing.assert_close(guide.scales()[site].detach()[0], torch.full((p,), precision**-0.5), rtol=0.08, atol=0)


def test_set_priors_checks_names_and_shapes():
    model = BayesianRegression(predictor(), bayesian_layers="head")
    with pytest.raises(KeyError, match="not a Bayesian site"):
        model.set_priors({"predictor.merge.weight": dist.Normal(torch.zeros(6, 3, 8), 1.0)})
    with pytest.raises(ValueError, match="shape"):
        model.set_priors({"predictor.head_layers.1.bias": dist.Normal(torch.zeros(2), 1.0)})
    model.set_priors({"predictor.head_layers.1.bias": dist.Normal(torch.full((1,), 3.0), 0.5)})
    trace = poutine.trace(model).get_trace(*pairs(4))
    prior = trace.nodes["predictor.head_layers.1.bias"]["fn"]
    assert prior.event_shape == (1,) and float(prior.base_dist.loc) == 3.0 and float(prior.base_dist.scale) == 0.5
