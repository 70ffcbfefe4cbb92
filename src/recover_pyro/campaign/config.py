"""How a simulated campaign runs: :class:`CampaignConfig` (the batch size ``q`` is the acquisition's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

PRETRAIN_CHOICES = ("none", "other_cell_lines")
TRANSFER_CHOICES = ("weights", "posterior")


@dataclass
class CampaignConfig:
    """How a simulated campaign runs (the batch size ``q`` is the acquisition's).

    Attributes:
        n_initial: candidates revealed at random before the first model is fitted (``>= 1``).
        n_rounds: acquisition rounds ``R``.
        warm_start: refit the same model object every round instead of a fresh one.
        num_samples: posterior samples ``S`` per candidate.
        seed: campaign seed (non-negative); every random choice derives from it.
        pool_cell_lines: cell lines whose experiments form the pool (``None``: all of the screen's).
        pool_studies: studies whose experiments form the pool (``None``: all of the screen's).
        pretrain: ``"none"`` or ``"other_cell_lines"``: pretrain on every experiment outside the pool (its
            other cell lines, or other studies with ``pool_studies``; see module docstring).
        transfer: what round models take from the pretrained model: ``"weights"`` (its parameters, as
            starting values) or ``"posterior"`` (also its posterior as their prior, for Bayesian models with
            ``posterior_as_prior``, e.g. :meth:`BNNSynergyModel.posterior_as_prior
            <recover_pyro.bnn.model.BNNSynergyModel.posterior_as_prior>`).
        transfer_widen: with ``transfer="posterior"``, the prior's standard deviations are the posterior's
            times this factor (``> 1`` lets the pool's cell lines differ more from the pretraining data).
        val_fraction: fraction of the revealed candidates held out each round for the model's early
            stopping (0: fit on all of them).
        progress: show a tqdm bar over rounds (and, from the command line, over the pretraining fit's epochs).
        random_fits_model: with ``random`` acquisition, still fit (and pretrain) the model every round, only
            for the pool metrics (``MODEL_METRICS``; otherwise NaN): it costs as much as a
            model-guided campaign and changes no pick.
        top_fractions: pool fractions whose recall is recorded (``recall_top{100 p}pct`` columns).
    """

    n_initial: int = 30
    n_rounds: int = 10
    warm_start: bool = False
    num_samples: int = 100
    seed: int = 0
    pool_cell_lines: list[str] | None = None
    pool_studies: list[str] | None = None
    pretrain: str = "none"
    transfer: str = "weights"
    transfer_widen: float = 1.0
    val_fraction: float = 0.0
    progress: bool = True
    random_fits_model: bool = False
    top_fractions: tuple[float, ...] = (0.01, 0.05)

    def __post_init__(self) -> None:
        self.pool_cell_lines = _names(self.pool_cell_lines, "pool_cell_lines", "cell lines")
        self.pool_studies = _names(self.pool_studies, "pool_studies", "studies")
        self.top_fractions = tuple(float(f) for f in self.top_fractions)
        if self.n_initial < 1:
            raise ValueError(f"n_initial must be >= 1 (the first model needs data), got {self.n_initial}")
        if self.n_rounds < 0 or self.num_samples < 1:
            raise ValueError(f"need n_rounds >= 0 and num_samples >= 1, got {self.n_rounds}, {self.num_samples}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.pretrain not in PRETRAIN_CHOICES:
            raise ValueError(f"pretrain must be one of {list(PRETRAIN_CHOICES)}, got {self.pretrain!r}")
        if self.transfer not in TRANSFER_CHOICES:
            raise ValueError(f"transfer must be one of {list(TRANSFER_CHOICES)}, got {self.transfer!r}")
        if not self.transfer_widen > 0:
            raise ValueError(f"transfer_widen must be positive, got {self.transfer_widen}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if not self.top_fractions or any(not 0.0 < f <= 1.0 for f in self.top_fractions):
            raise ValueError(f"top_fractions must be non-empty and lie in (0, 1], got {self.top_fractions}")


def _names(names: Sequence[str] | str | None, field_name: str, what: str) -> list[str] | None:
    if names is None:
        return None
    names = [names] if isinstance(names, str) else [str(n) for n in names]
    if not names:
        raise ValueError(f"{field_name} is empty; use None for all {what} of the screen")
    return names
