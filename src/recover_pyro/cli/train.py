"""Hydra entry point: fit a model on a screen's training split and report test metrics.

    python -m recover_pyro.train                          # synthetic screen, Bayesian RECOVER net
    python -m recover_pyro.train +experiment=laplace data=almanac
    python -m recover_pyro.train -m +experiment=normal,laplace seed=0,1,2

Writes into the Hydra run directory: ``metrics.json`` (test metrics on the original scale, the same metrics
on the validation split as ``val_*``, fit time),
``checkpoint.pt`` (a ``state_dict`` of tensors, loadable with ``torch.load(..., weights_only=True)``),
``test_predictions.csv``, ``calibration.png`` (from the same draws as the metrics) and ``fit_curve.csv`` (one
row per epoch of each fit stage: losses, the ELBO split into expected NLL and KL, validation metric). The
``@hydra.main`` function returns the metric named by ``objective`` (a validation metric by default,
``val_nll``), which is what a sweeper such as Optuna optimises: tuning on the test split would make its numbers
meaningless.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from recover_pyro.cli.builders import CONFIG_DIR, build_features, build_screen, build_split, model_factory
from recover_pyro.cli.checks import check_test_size, validate_config
from recover_pyro.cli.errors import loader_spelling, reported_errors
from recover_pyro.errors import ConfigValueError
from recover_pyro.logging_utils import cli_logging
from recover_pyro.metrics import calibration_curve, evaluate, measurement_draws
from recover_pyro.records.files import atomic_torch_save, atomic_write_csv, atomic_write_json, load_torch_file
from recover_pyro.records.plots import plot_calibration

if TYPE_CHECKING:
    from recover_pyro.data.featurize import Features
    from recover_pyro.data.screen import Pairs, Screen
    from recover_pyro.data.splits import Split
    from recover_pyro.models.base import SynergyModel

log = logging.getLogger(__name__)

# Below this many test experiments r2 / Spearman / coverage are too noisy to mean anything.
MIN_TEST_WARN = 30


def train(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Run one fit + evaluation described by ``cfg``; write outputs into ``out_dir``; return the metrics."""
    validate_config(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    screen, features, split, (train_pairs, val_pairs, test_pairs) = _prepare(cfg)
    model = model_factory(cfg, features)()
    start = time.perf_counter()
    report = model.fit(train_pairs, val_pairs if len(val_pairs) else None)
    fit = {
        "fit_seconds": time.perf_counter() - start,
        "best_epoch": report.best_epoch,
        "warm_start_epoch": report.warm_start_epoch,
        "converged": report.converged,
    }
    if report.curve:
        atomic_write_csv(out_dir / "fit_curve.csv", pd.DataFrame(report.curve))
    return _score(cfg, model, screen, split, (train_pairs, val_pairs, test_pairs), fit, out_dir)


def rescore(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Re-score the finished run in ``out_dir`` (made by :func:`train` with the same ``cfg``) without fitting
    again: load its ``checkpoint.pt``, re-estimate the observation noise on the validation split by today's
    convention (``model.estimate_noise``) and rewrite its outputs and metrics (the fit's own entries, e.g.
    ``fit_seconds``, are kept from its ``metrics.json``). The fit itself does not depend on the noise
    convention, so this equals a re-run of :func:`train` (up to the run-to-run variation of multi-threaded
    float reductions) at the cost of a prediction. Needs a validation split (the held-out set a fit without
    one draws inside ``fit`` is not stored)."""
    validate_config(cfg)
    screen, features, split, (train_pairs, val_pairs, test_pairs) = _prepare(cfg)
    if not len(val_pairs):
        raise ValueError(f"rescore needs a validation split (split.val > 0); {out_dir} was fitted without one")
    old = json.loads((out_dir / "metrics.json").read_text())
    model = model_factory(cfg, features)()
    advice = f"re-run the fit: python -m recover_pyro.train with the config of {out_dir}"
    model.load_state_dict(load_torch_file(out_dir / "checkpoint.pt", "run checkpoint", advice))
    model.estimate_noise(train_pairs, val_pairs)
    fit = {k: old[k] for k in ("fit_seconds", "best_epoch", "warm_start_epoch", "converged") if k in old}
    return _score(cfg, model, screen, split, (train_pairs, val_pairs, test_pairs), fit, out_dir)


def _prepare(cfg: DictConfig) -> tuple[Screen, Features, Split, tuple[Pairs, Pairs, Pairs]]:
    """Screen, features, split and the ``(train, val, test)`` experiments that ``cfg`` describes."""
    screen = build_screen(cfg)
    log.info("\n%s", screen.summary())
    features = build_features(cfg, screen)
    split = build_split(cfg, screen)
    pairs = screen.to_pairs(cfg.data.score)
    train_pairs, val_pairs, test_pairs = pairs[split.train], pairs[split.val], pairs[split.test]
    log.info("split %s: train %d, val %d, test %d", cfg.split.kind, len(train_pairs), len(val_pairs), len(test_pairs))
    check_test_size(len(test_pairs), len(screen))
    if len(test_pairs) < MIN_TEST_WARN:
        log.warning(
            "only %d test experiments (< %d): the test metrics are too noisy to compare models; use a "
            "larger screen or a larger split.test",
            len(test_pairs),
            MIN_TEST_WARN,
        )
    return screen, features, split, (train_pairs, val_pairs, test_pairs)


def _score(
    cfg: DictConfig,
    model: SynergyModel,
    screen: Screen,
    split: Split,
    pairs: tuple[Pairs, Pairs, Pairs],
    fit: dict[str, Any],
    out_dir: Path,
) -> dict[str, Any]:
    """Test (and validation) metrics of the fitted ``model``, with ``fit``'s entries; writes
    ``metrics.json``, ``checkpoint.pt``, ``test_predictions.csv`` and ``calibration.png`` into ``out_dir``."""
    train_pairs, val_pairs, test_pairs = pairs
    predictive = model.predict(test_pairs, num_samples=cfg.num_samples).cpu()
    assert test_pairs.y is not None
    metrics: dict[str, Any] = evaluate(predictive, test_pairs.y, seed=cfg.seed)
    metrics.update(
        **fit,
        n_train=len(train_pairs),
        n_val=len(val_pairs),
        n_test=len(test_pairs),
        data=cfg.data.name,
        score=cfg.data.score,
        model=type(model).__name__,
        seed=cfg.seed,
    )
    if len(val_pairs):
        assert val_pairs.y is not None
        val_metrics = evaluate(model.predict(val_pairs, num_samples=cfg.num_samples).cpu(), val_pairs.y)
        metrics.update({f"val_{k}": v for k, v in val_metrics.items()})
    fit_summary = getattr(model, "fit_summary", None)  # optional in the SynergyModel protocol
    if callable(fit_summary):
        metrics.update(fit_summary())

    atomic_write_json(out_dir / "metrics.json", metrics)
    atomic_torch_save(out_dir / "checkpoint.pt", model.state_dict())
    test_rows = screen.experiments.iloc[split.test]
    atomic_write_csv(
        out_dir / "test_predictions.csv",
        pd.DataFrame(
            {
                "drug_a": test_rows["drug_a"].to_numpy(),
                "drug_b": test_rows["drug_b"].to_numpy(),
                "drug_a_name": screen.drugs.loc[test_rows["drug_a"], "name"].to_numpy(),
                "drug_b_name": screen.drugs.loc[test_rows["drug_b"], "name"].to_numpy(),
                "cell_line": test_rows["cell_line"].to_numpy(),
                "measured": test_pairs.y.numpy(),
                "predicted_mean": predictive.mean.numpy(),
                "predicted_std": predictive.std.numpy(),
            }
        ),
    )
    expected, observed = calibration_curve(test_pairs.y, measurement_draws(predictive, seed=cfg.seed))
    plot_calibration(expected, observed, out_dir / "calibration.png")

    summary = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float) and not k.startswith("val_"))
    log.info("[%s / %s] test: %s", cfg.data.name, type(model).__name__, summary)
    val_summary = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith("val_"))
    if val_summary:
        log.info("[%s / %s] validation: %s", cfg.data.name, type(model).__name__, val_summary)
    log.info("outputs in %s", out_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    """``recover-train`` / ``python -m recover_pyro.train``; returns ``metrics[cfg.objective]`` (for sweepers).

    A named error is one message on stderr and exit status 2 (:mod:`recover_pyro.cli.errors`)."""
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    with reported_errors(loader_spelling(cfg)):
        with cli_logging():
            metrics = train(cfg, Path(HydraConfig.get().runtime.output_dir))
        if cfg.objective not in metrics:
            raise ConfigValueError(
                "objective",
                f"{cfg.objective!r} is not a metric of this run (no validation split?); "
                f"choose one of {sorted(k for k, v in metrics.items() if isinstance(v, float))}",
            )
    return float(metrics[cfg.objective])
