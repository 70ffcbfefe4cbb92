"""Log lines and progress bars of training loops: early stopping announced, bars with loss postfix."""

from __future__ import annotations

import functools
import logging

import pytest

from recover_pyro.models.baselines import DeepEnsemble, MCDropoutModel, TrainConfig
from recover_pyro.data.synthetic import make_synthetic_screen
from recover_pyro.data.featurize import featurize
from recover_pyro.logging_utils import announce_early_stop, cli_logging, epoch_postfix
from recover_pyro.models.predictor import RecoverPredictor

SMALL = functools.partial(RecoverPredictor, drug_hidden=(8,), merge_dim=4, merge_rank=2, head_hidden=(4,))


def test_epoch_postfix_shows_the_last_loss_and_finite_validation_metric() -> None:
    assert epoch_postfix([], []) == {}
    assert epoch_postfix([2.0, 1.23456], [], "val_nll") == {"loss": "1.235"}
    assert epoch_postfix([1.0], [0.5], "val_mse") == {"loss": "1", "val_mse": "0.5"}
    assert epoch_postfix([1.0], [float("nan")]) == {"loss": "1"}


def test_announce_early_stop_says_which_epoch_was_kept(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test")
    with caplog.at_level("INFO"):
        announce_early_stop(log, "SVI", 3, 10, 200)
        announce_early_stop(log, "SVI", 199, 200, 200)
    assert "SVI: early stopping kept epoch 3 (0-based) of 10 run, stopped early (max 200)" in caplog.text
    assert "ran all epochs" in caplog.text


def test_cli_logging_routes_console_handlers_through_tqdm() -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler()  # stderr: a console handler
    root.addHandler(handler)
    try:
        with cli_logging():
            assert handler not in root.handlers and any("Tqdm" in type(h).__name__ for h in root.handlers)
        assert handler in root.handlers
    finally:
        root.removeHandler(handler)


@pytest.fixture(scope="module")
def tiny() -> tuple:
    screen = make_synthetic_screen(n_drugs=8, n_cell_lines=1)
    features = featurize(screen, n_bits=64)
    pairs = screen.to_pairs(screen.score_columns[0])
    return features, pairs[:20], pairs[20:]


@pytest.mark.parametrize("progress", [True, False])
def test_ensemble_members_and_mc_dropout_show_epoch_bars(
    tiny: tuple, progress: bool, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    features, train, val = tiny
    config = TrainConfig(epochs=3, batch_size=8, progress=progress, patience=1)
    with caplog.at_level("INFO", logger="recover_pyro.models.baselines"):
        DeepEnsemble(features.drug, features.cell, predictor=SMALL, n_members=2, training=config).fit(train, val)
        MCDropoutModel(features.drug, features.cell, predictor=SMALL, training=config).fit(train, val)
    err = capsys.readouterr().err
    for bar in ("ensemble members", "member 1/2 epochs", "member 2/2 epochs", "MCDropoutModel epochs", "loss="):
        assert (bar in err) == progress, bar
    assert caplog.text.count("early stopping kept epoch") == 3  # one line per fit with validation data
