"""``recover-campaign`` with an acquisition strategy the package does not know: a user's subclass of
:class:`~recover_pyro.acquisition.Acquisition`, defined in a module of their own and named in the config."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from recover_pyro.cli.builders import CONFIG_DIR
from recover_pyro.cli.campaign import campaign_from_config, model_label

USER_MODULE = '''
import torch

from recover_pyro.acquisition import Acquisition, RandomAcquisition


class LowestIndexFirst(Acquisition):
    """Picks the unmeasured candidates in pool order; reads no sample value, so it needs no model."""

    needs_model = False

    def scores(self, samples, best_f=None, round=0):
        return -torch.arange(samples.shape[1], dtype=samples.dtype)


class MostUncertain(Acquisition):
    """Pure exploration: the posterior standard deviation (a rule the package does not ship)."""

    def scores(self, samples, best_f=None, round=0):
        return samples.std(0)
'''

TINY = [
    "data.screen.n_drugs=10",
    "data.screen.n_cell_lines=2",
    "campaign.n_initial=10",
    "campaign.n_rounds=2",
    "campaign.progress=false",
    "acquisition.q=5",
    "inference.epochs=3",
    "inference.warm_start_epochs=2",
    "num_samples=8",
]


@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module outside the package, importable by name, as a notebook's helper file would be."""
    (tmp_path / "my_strategies.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_strategies"


def compose_campaign(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="campaign", overrides=overrides)


def test_a_user_strategy_named_in_the_config_runs_a_campaign(user_module: str, tmp_path: Path) -> None:
    cfg = compose_campaign([*TINY, f"acquisition._target_={user_module}.LowestIndexFirst"])
    assert model_label(cfg) == "no model"  # needs_model = False: no fit
    result = campaign_from_config(cfg, tmp_path / "run")
    sel = result.selections
    initial = set(sel.loc[sel["round"] == 0, "pool_index"])
    unrevealed = [
        i
        for i in range(int(result.rounds["n_measured"].iloc[0] / result.rounds["fraction_explored"].iloc[0]))
        if i not in initial
    ]
    # Each round takes the 5 lowest pool indices not yet revealed: the user's rule, applied by the package's
    # batch machinery (measured candidates never proposed).
    assert sel.loc[sel["round"] == 1, "pool_index"].tolist() == unrevealed[:5]
    assert sel.loc[sel["round"] == 2, "pool_index"].tolist() == unrevealed[5:10]
    assert result.rounds["n_measured"].tolist() == [10, 15, 20]
    assert np.isnan(result.rounds["r2"]).all()  # no model fitted, so no pool metrics
    assert "my_strategies.LowestIndexFirst" in (tmp_path / "run" / "rounds.json").read_text()


def test_a_user_strategy_that_needs_a_model_gets_its_samples(user_module: str, tmp_path: Path) -> None:
    cfg = compose_campaign([*TINY, f"acquisition._target_={user_module}.MostUncertain"])
    assert model_label(cfg).startswith("BNNSynergyModel")
    result = campaign_from_config(cfg, tmp_path / "run")
    picked = result.selections[result.selections["round"] >= 1]
    assert len(picked) == 10 and picked["pool_index"].is_unique
    # The recorded acquisition value is the user's score: the predicted sd at selection, non-increasing
    # within a round (greedy top-q).
    for _, batch in picked.groupby("round"):
        values = batch["acquisition_value"].to_numpy()
        assert np.all(np.diff(values) <= 1e-12) and np.all(values > 0)
    assert np.isfinite(result.rounds["r2"].iloc[1:]).all()


def test_a_target_that_is_not_an_acquisition_is_refused(tmp_path: Path) -> None:
    cfg = compose_campaign([*TINY, "acquisition._target_=collections.OrderedDict"])
    with pytest.raises(TypeError, match="not an Acquisition"):
        campaign_from_config(cfg, tmp_path / "run")


def test_user_strategy_selects_under_the_package_constraints(user_module: str) -> None:
    import importlib

    strategies = importlib.import_module(user_module)
    samples = torch.randn(50, 12, generator=torch.Generator().manual_seed(0))
    drugs = torch.tensor([[0, 1]] * 6 + [[2, 3]] * 6)
    exclude = torch.zeros(12, dtype=torch.bool)
    exclude[:2] = True
    batch = strategies.LowestIndexFirst(q=4, max_per_drug=2).select(samples, exclude=exclude, candidate_drugs=drugs)
    # Indices 0-1 are measured; drugs 0 and 1 may appear twice at most, so 2, 3 then the pairs of drugs 2 / 3.
    assert batch.indices.tolist() == [2, 3, 6, 7]


def test_settings_another_strategy_left_behind_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from recover_pyro.acquisition import Greedy
    from recover_pyro.cli.builders import build_acquisition

    cfg = compose_campaign(["+experiment=normal_ucb", "acquisition=greedy"])  # the preset's kappa stays merged in
    with caplog.at_level("WARNING", logger="recover_pyro.cli.builders"):
        acquisition = build_acquisition(cfg)
    assert acquisition == Greedy(q=30)
    assert "Greedy takes no kappa, kappa_decay" in caplog.text
