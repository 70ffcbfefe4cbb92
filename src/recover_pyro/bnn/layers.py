"""A plain torch predictor turned into a Bayesian regression model in Pyro.

:class:`BayesianRegression` converts a predictor (e.g. :class:`~recover_pyro.models.predictor.RecoverPredictor`)
in place into a :class:`~pyro.nn.PyroModule`, replaces the parameters of the chosen layers by
:class:`~pyro.nn.PyroSample` sites drawn from a :class:`~recover_pyro.bnn.priors.Prior`, and adds the likelihood

.. math:: p(W) \\prod_n N(z_n \\mid f_W(a_n, b_n, c_n), \\sigma^2)

over standardised targets ``z``. Layers that are not Bayesian keep ordinary parameters, fitted by SVI as
point estimates. ``sigma`` is learned (a positive :class:`~pyro.nn.PyroParam`) or fixed.

Optionally (``identity_effects``, off by default) the mean function gains additive random effects of the
drugs' and cell lines' identities, :class:`IdentityEffects`: ``f + u[a] + u[b] (+ v[c])`` with
``u_d ~ N(0, tau_u^2)``, ``v_c ~ N(0, tau_v^2)`` and learned scales ``tau``. A drug without training data keeps
its prior, so pairs with it carry the extra variance ``tau_u^2``.

Parameters never enter Pyro's global param store: every call of these modules runs with
``module_local_params`` on (:func:`local_params`), so models built one after another share nothing.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ContextManager, Protocol, Sequence, Union, cast

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import TorchDistribution, constraints
from pyro.nn import PyroModule, PyroParam, PyroSample
from pyro.nn.module import to_pyro_module_
from torch import Tensor, nn

from recover_pyro.bnn.priors import NormalPrior, Prior

BayesianLayers = Union[str, Sequence[str]]
"""``"head"``, ``"all"`` or module-name prefixes such as ``["merge", "head_layers"]``."""

IDENTITY_GROUPS: dict[str, tuple[str, ...]] = {"none": (), "drugs": ("drug",), "drugs_and_cells": ("drug", "cell")}
"""``identity_effects`` option -> the groups that get random effects."""
IDENTITY_SCALES = ("empirical_bayes", "hierarchical")
IDENTITY_PREFIX = "identity."
# Initial tau of the guides (model scale; targets are standardised): an empirical-Bayes tau, or the median of
# the LogNormal posterior of a hierarchical one (whose log-scale sd starts at IDENTITY_INIT_LOG_SD).
IDENTITY_INIT_SCALE = 0.5
IDENTITY_INIT_LOG_SD = 0.1


def local_params() -> ContextManager[None]:
    """Run Pyro with module-local parameters (nothing is read from or written to the global param store)."""
    return pyro.settings.context(module_local_params=True)


class _TrunkHead(Protocol):
    """A predictor split as ``forward = head(trunk(...))`` (e.g. ``RecoverPredictor``); what a Bayesian head on a
    fixed trunk runs (see :func:`~recover_pyro.bnn.predictive.bayesian_head_only`)."""

    def trunk(self, drug_a: Tensor, drug_b: Tensor, cell: Tensor) -> Tensor: ...

    def head(self, z: Tensor, cell: Tensor) -> Tensor: ...


class LocalPyroModule(PyroModule):
    """A root :class:`PyroModule` whose parameters live only in the module (see :func:`local_params`)."""

    def __init__(self, name: str = "") -> None:
        # The module's call context must be created in local mode to be usable in local mode.
        with local_params():
            super().__init__(name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with local_params():
            return super().__call__(*args, **kwargs)


@dataclass(frozen=True)
class WeightSite:
    """One Bayesian weight site.

    Attributes:
        name: Pyro site name, ``"predictor." + parameter name`` (e.g. ``predictor.head_layers.0.weight``).
        shape: the weight's shape (unbatched).
        fan_in: inputs of the layer it belongs to (for fan-in scaled priors).
        init: the deterministic predictor's initial value (guides start from it).
        random_effect: a random effect of the predictor (its ``random_effects``, e.g. ``drug_codes``): prior
            :math:`N(` ``prior_loc``, ``prior_scale`` :math:`^2)` per entry whatever the weight prior, and guides
            start at that prior's spread.
    """

    name: str
    shape: torch.Size
    fan_in: int
    init: Tensor
    random_effect: bool = False
    prior_loc: float = 0.0
    prior_scale: float = 1.0


def _head_prefixes(predictor: nn.Module) -> list[str]:
    """What ``"head"`` means for a predictor: its ``head_layers``, else the last of its ``layers``."""
    if isinstance(getattr(predictor, "head_layers", None), nn.ModuleList):
        return ["head_layers"]
    layers = getattr(predictor, "layers", None)
    if isinstance(layers, nn.ModuleList) and len(layers):
        return [f"layers.{len(layers) - 1}"]
    raise ValueError(
        f"bayesian_layers='head': {type(predictor).__name__} has neither 'head_layers' nor "
        "'layers'; give a list of module-name prefixes instead"
    )


def select_bayesian_parameters(predictor: nn.Module, bayesian_layers: BayesianLayers) -> list[str]:
    """Names of the predictor's parameters that become Bayesian, in ``named_parameters`` order.

    A prefix ``p`` selects parameter ``n`` when ``n == p`` or ``n`` starts with ``p + "."``.
    Raises ``ValueError`` for an unknown keyword or a prefix that matches nothing.
    """
    names = [n for n, _ in predictor.named_parameters()]
    if isinstance(bayesian_layers, str):
        if bayesian_layers == "all":
            prefixes: list[str] = []
        elif bayesian_layers == "head":
            prefixes = _head_prefixes(predictor)
        else:
            raise ValueError(
                f"bayesian_layers={bayesian_layers!r}: use 'all', 'head' or a list of module-name "
                f"prefixes of {type(predictor).__name__}'s parameters {names}"
            )
    else:
        prefixes = [str(p) for p in bayesian_layers]
        if not prefixes:
            raise ValueError("bayesian_layers is an empty list; at least one layer must be Bayesian")

    def hit(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    for prefix in prefixes:
        if not any(hit(n, prefix) for n in names):
            raise ValueError(
                f"bayesian_layers prefix {prefix!r} matches no parameter of "
                f"{type(predictor).__name__}; its parameters are {names}"
            )
    selected = [n for n in names if not prefixes or any(hit(n, p) for p in prefixes)]
    if not selected:
        raise ValueError(f"{type(predictor).__name__} has no parameters to make Bayesian")
    return selected


def _fan_in(module: nn.Module, value: Tensor) -> int:
    """Inputs feeding one output of the layer: the last dim of a matrix / tensor weight; for a 1-d
    parameter (bias) the layer's ``in_features``."""
    if value.dim() >= 2:
        return int(value.shape[-1])
    return int(getattr(module, "in_features", value.shape[-1]))


PRIOR_SCALE_SUFFIX = "_prior_scale"
"""A learned (empirical-Bayes) prior scale of site ``<layer>.<param>`` is the layer's ``<param>_prior_scale``."""


class _LearnedScaleNormal:
    """``N(0, s^2)`` over a whole site, ``s`` read from the owning layer's ``<attr>_prior_scale`` (a PyroSample
    prior called with that layer); a class, not a closure, so that it holds no reference to a model."""

    def __init__(self, attr: str, shape: torch.Size) -> None:
        self.attr, self.shape = attr, shape

    def __call__(self, layer: nn.Module) -> TorchDistribution:
        scale = getattr(layer, f"{self.attr}{PRIOR_SCALE_SUFFIX}")
        return dist.Normal(torch.zeros_like(scale), scale).expand(self.shape).to_event(len(self.shape))


def _component_inits(
    init: Tensor, components: int, effect: bool, loc: float, scale: float, generator: torch.Generator | None
) -> Tensor:
    """``(K, *shape)`` initial values of a site's components (see ``BayesianRegression``'s ``components``): the
    first is ``init``; a weight's others are ``init``'s entries in a random order (i.i.d. initialisers give every
    order the same distribution; a zero-initialised site stays zero); a random effect's are its prior mean plus
    half its prior spread of noise."""
    out = [init]
    for _ in range(components - 1):
        if effect:
            noise = torch.randn(init.shape, generator=generator, dtype=init.dtype)
            out.append(loc + 0.5 * scale * noise.to(init.device))
        else:
            order = torch.randperm(init.numel(), generator=generator).to(init.device)
            out.append(init.flatten()[order].reshape(init.shape))
    return torch.stack(out)


def _table_rows(predictor: nn.Module, buffer: str, given: int | None) -> int:
    """``given``, else the rows of the predictor's feature table ``buffer`` (how many drugs / cell lines)."""
    if given is not None:
        return int(given)
    table = getattr(predictor, buffer, None)
    if not isinstance(table, Tensor):
        raise ValueError(f"identity effects: {type(predictor).__name__} has no {buffer}; pass num_drugs and num_cells")
    return int(table.shape[0])


@dataclass(frozen=True)
class IdentitySite:
    """One group of identity random effects: ``size`` effects and their scale ``tau``.

    Attributes:
        group: ``"drug"`` (indexed by both drugs of a pair) or ``"cell"`` (by its cell line).
        size: number of drugs / cell lines (every one the features know, seen in training or not).
    """

    group: str
    size: int

    @property
    def name(self) -> str:
        """Pyro site of the effects ``(size,)``, e.g. ``identity.drug``."""
        return f"{IDENTITY_PREFIX}{self.group}"

    @property
    def scale_name(self) -> str:
        """Pyro site of their scale ``tau`` (0-d), e.g. ``identity.drug_scale``."""
        return f"{IDENTITY_PREFIX}{self.group}_scale"


class IdentityEffects(PyroModule):
    r"""Additive random effects of drug and cell-line identity:

    .. math:: f_{id}(a, b, c) = u_a + u_b + v_c, \qquad u_d \sim N(m_d, \tau_u^2), \quad v_c \sim N(m_c, \tau_v^2)
              \text{ independent}

    with prior means :math:`m = 0` unless :meth:`set_prior_locs` sets them (a pretrained posterior's means, see
    :meth:`~recover_pyro.bnn.model.BNNSynergyModel.posterior_as_prior`; :math:`\tau` is then the spread of the
    effects around them).

    Per group two latent sites, sampled outside any data plate: the scale :math:`\tau` (``identity.drug_scale``,
    0-d), then the effects (``identity.drug`` ``(D,)``, ``identity.cell`` ``(C,)``) given it. The module holds no
    parameters; the guide holds every learned number (:class:`~recover_pyro.bnn.guides.WeightGuide`). A drug no
    datum informs has posterior = prior :math:`N(0, \tau_u^2)`, so pairs with it carry the variance
    :math:`\tau_u^2` that pairs of drugs seen often do not.

    The scales' prior (``scale``):

    * ``"empirical_bayes"``: improper uniform on :math:`(0, \infty)` (log-density 0); the guide's point mass at
      :math:`\tau` then makes :math:`\tau` the maximiser of the ELBO, i.e. type-II maximum likelihood under the
      variational bound (variational EM); with a Normal :math:`q(u)` its optimum is
      :math:`\tau^2 = \frac{1}{n}\sum_d E_q[u_d^2]`.
    * ``"hierarchical"``: :math:`\tau \sim \text{HalfNormal}(h)` (``hyperprior_scale``, weakly informative on
      standardised targets); the guide's :math:`q(\tau)` is LogNormal.

    Args:
        groups: ``("drug",)`` or ``("drug", "cell")``.
        num_drugs, num_cells: sizes of the effect vectors (every drug / cell line the features know).
        scale: ``"empirical_bayes"`` or ``"hierarchical"``.
        hyperprior_scale: ``h`` of the hierarchical hyperprior (model, i.e. standardised, scale).
        like: a tensor whose dtype and device the priors take.
    """

    _one: Tensor  # a buffer (register_buffer in __init__), declared for the type checker

    def __init__(
        self,
        groups: Sequence[str],
        num_drugs: int,
        num_cells: int,
        scale: str = "empirical_bayes",
        hyperprior_scale: float = 1.0,
        like: Tensor | None = None,
    ) -> None:
        super().__init__()
        if scale not in IDENTITY_SCALES:
            raise ValueError(f"identity_scale must be one of {IDENTITY_SCALES}, got {scale!r}")
        if not hyperprior_scale > 0 or not math.isfinite(hyperprior_scale):
            raise ValueError(f"identity_hyperprior must be a positive finite number, got {hyperprior_scale}")
        sizes = {"drug": num_drugs, "cell": num_cells}
        if not groups or any(g not in sizes for g in groups):
            raise ValueError(f"IdentityEffects: groups must be 'drug' and / or 'cell', got {list(groups)}")
        if any(sizes[g] < 1 for g in groups):
            raise ValueError(f"IdentityEffects: need at least one drug and cell line, got {sizes}")
        like = torch.zeros(()) if like is None else like
        self.hierarchical = scale == "hierarchical"
        self.hyperprior_scale = float(hyperprior_scale)
        self.sites: tuple[IdentitySite, ...] = tuple(IdentitySite(g, sizes[g]) for g in groups)
        # The priors' constant and means, as buffers so that they follow the module's device (not saved: priors
        # are not part of a state_dict).
        self.register_buffer("_one", like.new_ones(()), persistent=False)
        for site in self.sites:
            self.register_buffer(f"_prior_loc_{site.group}", like.new_zeros(site.size), persistent=False)

    @property
    def site_names(self) -> list[str]:
        """The latent sites in the order :meth:`forward` samples them (per group: its scale, its effects)."""
        return [name for site in self.sites for name in (site.scale_name, site.name)]

    def prior(self, site: IdentitySite, tau: Tensor) -> TorchDistribution:
        """N(m, ``tau``^2) over the ``(size,)`` effects of a group (one event)."""
        loc = cast(Tensor, getattr(self, f"_prior_loc_{site.group}"))
        return dist.Normal(loc, tau).expand([site.size]).to_event(1)

    def set_prior_locs(self, locs: dict[str, Tensor]) -> None:
        """Set the prior means :math:`m` of the named effect sites (``identity.drug`` ``(D,)``, ...)."""
        unknown = set(locs) - {site.name for site in self.sites}
        if unknown:
            raise KeyError(f"set_prior_locs: {sorted(unknown)} are not identity sites; they are {self.site_names}")
        for site in self.sites:
            if site.name in locs:
                loc = locs[site.name].detach()
                if loc.shape != (site.size,):
                    raise ValueError(f"set_prior_locs: {site.name} needs shape ({site.size},), got {tuple(loc.shape)}")
                getattr(self, f"_prior_loc_{site.group}").copy_(loc)

    def scale_prior(self) -> TorchDistribution:
        """The prior of a scale :math:`\\tau`: HalfNormal(``hyperprior_scale``) (hierarchical) or the improper
        uniform on the positive reals (empirical Bayes)."""
        if self.hierarchical:
            return dist.HalfNormal(self._one * self.hyperprior_scale)
        return dist.ImproperUniform(constraints.positive, torch.Size(), torch.Size())

    def forward(self, drug_a: Tensor, drug_b: Tensor, cell: Tensor) -> Tensor:
        """Sample the sites (outside any data plate) and return the ``(N,)`` effects of the given pairs."""
        values = {}
        for site in self.sites:
            tau = pyro.sample(site.scale_name, self.scale_prior())
            values[site.name] = pyro.sample(site.name, self.prior(site, tau))
        return self.effect(values, drug_a, drug_b, cell)

    def effect(self, values: dict[str, Tensor], drug_a: Tensor, drug_b: Tensor, cell: Tensor) -> Tensor:
        """``(*S, N)`` effects with the effect sites fixed to ``values`` ``(*S, size)`` (the scales are not needed)."""
        out: Tensor | None = None
        for site in self.sites:
            u = values[site.name]
            term = u[..., drug_a] + u[..., drug_b] if site.group == "drug" else u[..., cell]
            out = term if out is None else out + term
        assert out is not None  # at least one group (checked in __init__)
        return out


class BayesianRegression(LocalPyroModule):
    """Bayesian drug-pair regression: prior on chosen predictor weights, Gaussian likelihood.

    Args:
        predictor: plain torch module mapping index tensors ``(drug_a, drug_b, cell)`` ``(N,)`` to ``(N,)``
            predictions, whose layers accept sample-batched weights ``(*S, ...)`` (see
            :mod:`recover_pyro.models.predictor`). It is converted **in place**; its current parameter values
            are the initial values handed to guides.
        prior: prior for every Bayesian weight site.
        bayesian_layers: ``"head"`` (default), ``"all"`` or a list of module-name prefixes.
        noise: ``"learned"`` or a fixed observation-noise standard deviation (model scale).
        init_noise: initial value of a learned noise standard deviation.
        identity_effects: ``"none"`` (default: no sites, no parameters added), ``"drugs"`` (``u[a] + u[b]``)
            or ``"drugs_and_cells"`` (``+ v[c]``): additive identity random effects (:class:`IdentityEffects`).
            With one cell line ``"drugs_and_cells"`` is ``"drugs"``: a single cell line's effect is an offset
            shared by every experiment.
        identity_scale: their scales' prior, ``"empirical_bayes"`` (improper uniform: the guide's point
            estimate maximises the ELBO) or ``"hierarchical"`` (HalfNormal hyperprior).
        identity_hyperprior: scale of the hierarchical HalfNormal hyperprior (model scale).
        num_drugs, num_cells: sizes of the effect vectors (default: the rows of the predictor's
            ``drug_features`` / ``cell_features``).
        components: ``K > 1`` gives every latent site a leading component dimension ``(K, *shape)``, each
            component's values a priori independent draws of the site's prior, with the point-estimated weights
            shared: ``K`` Bayesian networks in one (with rank-1 factors, Dusenberry et al. 2020's mixture). The
            model runs all components on every minibatch (``f`` ``(K, B)``) and scales every site by ``1 / K``:
            with a guide that mixes its components uniformly (:attr:`WeightGuide.components`), the loss is the
            average of the components' ELBOs, a lower bound on the mixture's ELBO. Components start apart: a
            weight site's values in a random order per component (the same initial distribution), a random effect
            at its prior mean plus half its prior spread of noise; ``generator`` draws them.
        generator: RNG of those initial values (``components > 1`` only).

    Attributes:
        sites: ordered ``{site name: WeightSite}``, in the order the model samples them (the predictor's
            weights; identity effects are sampled after them, ``identity.site_names``).
        identity: the :class:`IdentityEffects` or ``None``.
    """

    def __init__(
        self,
        predictor: nn.Module,
        prior: Prior = NormalPrior(),
        bayesian_layers: BayesianLayers = "head",
        noise: str | float = "learned",
        init_noise: float = 1.0,
        *,
        identity_effects: str = "none",
        identity_scale: str = "empirical_bayes",
        identity_hyperprior: float = 1.0,
        num_drugs: int | None = None,
        num_cells: int | None = None,
        components: int = 1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if identity_effects not in IDENTITY_GROUPS:
            raise ValueError(f"identity_effects must be one of {list(IDENTITY_GROUPS)}, got {identity_effects!r}")
        if components < 1 or (components > 1 and IDENTITY_GROUPS[identity_effects]):
            raise ValueError(
                f"components must be >= 1, and 1 with identity_effects; got components={components}, "
                f"identity_effects={identity_effects!r}"
            )
        self.components = int(components)
        empirical_bayes = bool(getattr(prior, "empirical_bayes", False))
        if empirical_bayes and not isinstance(prior, NormalPrior):
            raise ValueError(f"empirical_bayes prior scales need a NormalPrior, got {type(prior).__name__}")
        names = select_bayesian_parameters(predictor, bayesian_layers)
        # Random effects (RecoverPredictor's drug codes, rank-1 factors) are always latent, with their own prior.
        random_effects: dict[str, tuple[float, float]] = dict(getattr(predictor, "random_effects", {}))
        names += [n for n, _ in predictor.named_parameters() if n in random_effects and n not in names]
        params = dict(predictor.named_parameters())
        with local_params():
            to_pyro_module_(predictor)
            self.predictor = predictor
            sites: dict[str, WeightSite] = {}
            for name in names:
                module_name, _, attr = name.rpartition(".")
                module = predictor.get_submodule(module_name)
                init = params[name].detach().clone()
                effect = name in random_effects
                loc, scale = random_effects.get(name, (0.0, 1.0))
                fan_in = _fan_in(module, init)
                if self.components > 1:
                    init = _component_inits(init, self.components, effect, loc, scale, generator)
                site = WeightSite(f"predictor.{name}", init.shape, fan_in, init, effect, loc, scale)
                if effect:
                    site_prior = dist.Normal(torch.full_like(init, loc), scale).to_event(init.dim())
                elif empirical_bayes:
                    # The scale lives on the layer beside the weight (a module attribute, so that copies of the
                    # model carry their own), read by the prior each time the site is sampled.
                    start = init.new_tensor(cast(NormalPrior, prior).site_scale(fan_in))
                    setattr(module, f"{attr}{PRIOR_SCALE_SUFFIX}", PyroParam(start, constraints.positive))
                    site_prior = _LearnedScaleNormal(attr, site.shape)
                else:
                    site_prior = prior.distribution(site.shape, site.fan_in, dtype=init.dtype, device=init.device)
                setattr(module, attr, PyroSample(site_prior))
                sites[site.name] = site
        like = next(iter(sites.values())).init
        self.learned_noise = noise == "learned"
        if noise == "learned":
            if not init_noise > 0:
                raise ValueError(f"init_noise must be positive, got {init_noise}")
            self.sigma = PyroParam(like.new_tensor(float(init_noise)), constraints.positive)
        elif isinstance(noise, (int, float)) and not isinstance(noise, bool) and noise > 0:
            self.register_buffer("sigma", like.new_tensor(float(noise)))
        else:
            raise ValueError(f"noise must be 'learned' or a positive number, got {noise!r}")
        order = self._sampling_order({n: s.init for n, s in sites.items()})
        self.sites: OrderedDict[str, WeightSite] = OrderedDict((n, sites[n]) for n in order)
        self.identity: IdentityEffects | None = None
        groups = IDENTITY_GROUPS[identity_effects]
        cells = _table_rows(predictor, "cell_features", num_cells) if groups else 0
        if "cell" in groups and cells == 1:
            # One cell line: its effect would be an offset that every experiment shares, not identifiable from the
            # network's own; it would only add the same variance to every prediction (in the pilot campaigns on
            # single cell lines it made UCB find less, docs/history.md 2026-12-07).
            groups = tuple(g for g in groups if g != "cell")
        if groups:
            with local_params():
                self.identity = IdentityEffects(
                    groups,
                    _table_rows(predictor, "drug_features", num_drugs),
                    cells,
                    identity_scale,
                    identity_hyperprior,
                    like,
                )

    @property
    def latent_sites(self) -> list[str]:
        """Every latent site in sampling order: the Bayesian weights, then the identity effects (if any)."""
        return [*self.sites, *(self.identity.site_names if self.identity is not None else [])]

    def _sampling_order(self, values: dict[str, Tensor]) -> list[str]:
        """Site names in the order one forward pass samples them (guides follow it, as mean-field
        ELBOs check), found by tracing the predictor on one dummy pair with the sites fixed to ``values``."""
        index = torch.zeros(1, dtype=torch.long, device=next(iter(values.values())).device)
        with torch.no_grad(), local_params():
            trace = poutine.trace(poutine.condition(self.predictor, data=values)).get_trace(index, index, index)
        order = [n for n, s in trace.nodes.items() if s["type"] == "sample" and n in values]
        missing = sorted(set(values) - set(order))
        if missing:
            raise ValueError(
                f"{type(self.predictor).__name__}.forward never uses the Bayesian parameters "
                f"{missing}; choose bayesian_layers among the layers it uses"
            )
        return order

    def set_priors(self, priors: dict[str, TorchDistribution]) -> None:
        """Replace the prior of the named sites (e.g. by a pretrained posterior, see
        :meth:`~recover_pyro.bnn.model.BNNSynergyModel.posterior_as_prior`).

        Args:
            priors: ``{site name: distribution}`` whose ``batch_shape + event_shape`` is the site's shape;
                batch dimensions are declared event dimensions, as for :meth:`Prior.distribution`.
        """
        for name, prior in priors.items():
            if name not in self.sites:
                raise KeyError(f"set_priors: {name!r} is not a Bayesian site; sites are {list(self.sites)}")
            shape = prior.batch_shape + prior.event_shape
            if shape != self.sites[name].shape:
                raise ValueError(
                    f"set_priors: prior of {name!r} has shape {tuple(shape)}, the site {tuple(self.sites[name].shape)}"
                )
            module_name, _, attr = name.removeprefix("predictor.").rpartition(".")
            with local_params():
                setattr(
                    self.predictor.get_submodule(module_name), attr, PyroSample(prior.to_event(len(prior.batch_shape)))
                )

    def noise_scale(self) -> Tensor:
        """Observation-noise standard deviation :math:`\\sigma` (model scale), a 0-d tensor."""
        # PyroModule turns the PyroParam assigned in __init__ into a constrained tensor attribute.
        return cast(Tensor, self.sigma)

    def forward(
        self, drug_a: Tensor, drug_b: Tensor, cell: Tensor, y: Tensor | None = None, subsample: Tensor | None = None
    ) -> Tensor:
        """Run the generative model on the experiments ``subsample`` (default: all) of ``N`` given ones.

        The likelihood sits in ``pyro.plate("data", size=N, subsample=subsample)``, so a minibatch's
        log-likelihood is scaled by ``N / len(subsample)``. The weights are sampled outside the plate.

        Args:
            drug_a, drug_b, cell: ``(N,)`` index tensors of all training experiments.
            y: ``(N,)`` standardised targets (observed) or ``None`` (sampled).
            subsample: ``(B,)`` indices of the minibatch.

        Returns:
            ``(B,)`` mean function ``f`` on the minibatch.
        """
        n = drug_a.shape[0]
        idx = torch.arange(n, device=drug_a.device) if subsample is None else subsample
        with self._component_scale():
            f = self.predictor(drug_a[idx], drug_b[idx], cell[idx])
            if self.identity is not None:
                f = f + self.identity(drug_a[idx], drug_b[idx], cell[idx])
            self._likelihood(f, n, idx, y)
        return f

    def _component_scale(self) -> ContextManager[Any]:
        """Every site's log-density scaled by ``1 / components`` (nothing with one component)."""
        return poutine.scale(scale=1.0 / self.components) if self.components > 1 else contextlib.nullcontext()

    def _likelihood(self, f: Tensor, n: int, idx: Tensor, y: Tensor | None) -> None:
        """``obs ~ N(f, sigma^2)`` in the data plate; ``f`` ``(B,)``, or ``(K, B)`` per component (then one
        event of ``K`` values per datum, which the component scale turns into their mean)."""
        obs = None if y is None else y[idx]
        with pyro.plate("data", size=n, subsample=idx):
            if f.dim() > 1:
                obs = None if obs is None else obs.unsqueeze(-1).expand(-1, f.shape[0])
                pyro.sample("obs", dist.Normal(f.transpose(0, 1), self.noise_scale()).to_event(1), obs=obs)
            else:
                pyro.sample("obs", dist.Normal(f, self.noise_scale()), obs=obs)

    def head_model(
        self,
        z: Tensor,
        cell: Tensor,
        y: Tensor | None = None,
        subsample: Tensor | None = None,
        *,
        drug_a: Tensor | None = None,
        drug_b: Tensor | None = None,
    ) -> Tensor:
        """The generative model of :meth:`forward` on fixed trunk outputs ``z`` ``(N, K)`` (a Bayesian head on
        fixed features): only the predictor's ``head`` runs (and the identity effects, which need the ``(N,)``
        drug indices ``drug_a``, ``drug_b``). Used by SVI with a frozen trunk.

        Returns:
            ``(B,)`` mean function on the minibatch ``subsample`` (default: all).
        """
        n = z.shape[0]
        idx = torch.arange(n, device=z.device) if subsample is None else subsample
        with local_params(), self._component_scale():
            f = cast(_TrunkHead, self.predictor).head(z[idx], cell[idx])
            if self.identity is not None:
                if drug_a is None or drug_b is None:
                    raise ValueError("head_model: identity effects need the drug indices drug_a and drug_b")
                f = f + self.identity(drug_a[idx], drug_b[idx], cell[idx])
            self._likelihood(f, n, idx, y)
        return f

    def mean_function(self, weights: dict[str, Tensor], drug_a: Tensor, drug_b: Tensor, cell: Tensor) -> Tensor:
        """``(*S, N)`` mean function with every latent site fixed to ``weights[name]`` ``(*S, *shape)``: the
        predictor's output plus the identity effects (if any).

        Layers before the first Bayesian one run once (unbatched); batched weights broadcast from there on.
        """
        missing = sorted(set(self.latent_sites) - set(weights))
        if missing:
            raise KeyError(f"mean_function: no values for the latent sites {missing}")
        with local_params():
            f = poutine.condition(self.predictor, data=weights)(drug_a, drug_b, cell)
            if self.identity is not None:
                f = f + self.identity.effect(weights, drug_a, drug_b, cell)
            return f
