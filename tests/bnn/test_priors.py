import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy import integrate, stats

from recover_pyro.cli.builders import CONFIG_DIR
from recover_pyro.bnn.priors import (
    LaplacePrior,
    LogUniform,
    LogUniformPrior,
    NormalPrior,
    Prior,
    ScaleMixtureNormal,
    ScaleMixtureNormalPrior,
)

CONF = CONFIG_DIR / "prior"


def test_normal_prior_site_distribution_matches_scipy():
    w = torch.randn(3, 4, dtype=torch.float64)
    d = NormalPrior(scale=2.0).distribution((3, 4), fan_in=4, dtype=torch.float64)
    assert d.event_shape == (3, 4) and d.batch_shape == ()
    assert float(d.log_prob(w)) == pytest.approx(stats.norm(0, 2.0).logpdf(w.numpy()).sum(), rel=1e-12)


def test_fan_in_scaled_normal_prior_uses_scale_over_sqrt_fan_in():
    prior = NormalPrior(scale=3.0, fan_in_scaled=True)
    assert prior.site_scale(9) == pytest.approx(1.0)
    w = torch.randn(5, 9, dtype=torch.float64)
    lp = prior.distribution((5, 9), fan_in=9, dtype=torch.float64).log_prob(w)
    assert float(lp) == pytest.approx(stats.norm(0, 1.0).logpdf(w.numpy()).sum(), rel=1e-12)


def test_laplace_prior_log_density():
    w = torch.randn(7, dtype=torch.float64)
    lp = LaplacePrior(scale=0.5).distribution((7,), fan_in=3, dtype=torch.float64).log_prob(w)
    expected = (-w.abs() / 0.5 - math.log(2 * 0.5)).sum()
    assert float(lp) == pytest.approx(float(expected), rel=1e-12)


def test_scale_mixture_log_prob_equals_direct_mixture():
    pi, s1, s2 = 0.3, 1.5, math.exp(-6)
    x = torch.tensor([-4.0, -1.0, -0.01, -1e-3, 0.0, 2e-3, 0.05, 0.7, 3.0], dtype=torch.float64)
    lp = ScaleMixtureNormal(torch.tensor(pi, dtype=torch.float64), s1, s2).log_prob(x)
    direct = np.log(pi * stats.norm(0, s1).pdf(x.numpy()) + (1 - pi) * stats.norm(0, s2).pdf(x.numpy()))
    np.testing.assert_allclose(lp.numpy(), direct, rtol=1e-10)
    # Far in the tails the direct formula underflows for the narrow component; logsumexp must not.
    assert torch.isfinite(ScaleMixtureNormal(0.5, 1.0, math.exp(-6)).log_prob(torch.tensor(30.0)))


def test_scale_mixture_density_integrates_to_one():
    d = ScaleMixtureNormal(torch.tensor(0.5, dtype=torch.float64), 1.0, math.exp(-6))

    def density(x: float) -> float:
        return float(d.log_prob(torch.tensor(x, dtype=torch.float64)).exp())

    narrow, _ = integrate.quad(density, -0.05, 0.05, points=[0.0], limit=200)
    wide = sum(integrate.quad(density, a, b, limit=200)[0] for a, b in [(-12, -0.05), (0.05, 12)])
    assert narrow + wide == pytest.approx(1.0, abs=1e-7)


def test_scale_mixture_sampling_matches_moments_and_components():
    torch.manual_seed(0)
    pi, s1, s2 = 0.25, 2.0, 0.01
    d = ScaleMixtureNormal(pi, s1, s2).expand((20000,))
    x = d.sample()
    assert x.shape == (20000,) and d.batch_shape == (20000,)
    assert float(x.var()) == pytest.approx(pi * s1**2 + (1 - pi) * s2**2, rel=0.05)
    # |x| < 5 s2 catches all narrow draws and few wide ones.
    expected_small = (1 - pi) + pi * (2 * stats.norm.cdf(5 * s2 / s1) - 1)
    assert float((x.abs() < 5 * s2).float().mean()) == pytest.approx(expected_small, abs=0.01)
    assert float(d.variance[0]) == pytest.approx(pi * s1**2 + (1 - pi) * s2**2)


def test_scale_mixture_prior_site_distribution():
    prior = ScaleMixtureNormalPrior(pi=0.5, sigma1=1.0, sigma2=math.exp(-6))
    d = prior.distribution((2, 3), fan_in=3, dtype=torch.float64)
    w = torch.randn(2, 3, dtype=torch.float64)
    direct = np.log(0.5 * stats.norm(0, 1).pdf(w.numpy()) + 0.5 * stats.norm(0, math.exp(-6)).pdf(w.numpy()))
    assert d.event_shape == (2, 3)
    assert float(d.log_prob(w)) == pytest.approx(direct.sum(), rel=1e-10)


def test_log_uniform_log_prob_and_improper_sampling():
    w = torch.tensor([[0.5, -2.0, 3.0], [-0.1, 1.0, 7.0]])
    d = LogUniformPrior().distribution((2, 3), fan_in=3)
    assert d.event_shape == (2, 3)
    assert float(d.log_prob(w)) == pytest.approx(float(-w.abs().log().sum()), rel=1e-6)
    assert torch.equal(LogUniform((2, 3)).log_prob(w), -w.abs().log())
    with pytest.raises(NotImplementedError, match="improper"):
        LogUniform().sample()


@pytest.mark.parametrize(
    "make",
    [
        lambda: NormalPrior(scale=0.0),
        lambda: LaplacePrior(scale=-1.0),
        lambda: ScaleMixtureNormalPrior(pi=1.5),
        lambda: ScaleMixtureNormalPrior(sigma2=0.0),
    ],
)
def test_invalid_prior_arguments_raise(make):
    with pytest.raises(ValueError):
        make()


def test_fan_in_must_be_positive():
    with pytest.raises(ValueError, match="fan_in"):
        NormalPrior().distribution((2,), fan_in=0)


def test_priors_build_from_hydra_targets():
    built = instantiate({"_target_": "recover_pyro.bnn.priors.NormalPrior", "scale": 0.5, "fan_in_scaled": True})
    assert built == NormalPrior(scale=0.5, fan_in_scaled=True)
    files = sorted(CONF.glob("*.yaml"))
    assert files, f"no prior configs in {CONF}"
    for path in files:
        prior = instantiate(OmegaConf.load(path))
        assert isinstance(prior, Prior), path
        assert prior.distribution((2, 2), fan_in=2).event_shape == (2, 2)
