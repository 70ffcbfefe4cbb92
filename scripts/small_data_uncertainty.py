"""Is the predictive sane on a lab's first round? Fit on a few measured pairs, score the rest of the screen.

    python scripts/small_data_uncertainty.py --data almanac --measured 60 --seeds 0 1 2 \
        --experiments normal ensemble --out benchmarks/results/accuracy/small_data/almanac_mcf7

From the screen (ALMANAC MCF7 by default) ``--measured`` experiments are drawn at random (per seed); the model is
fitted on them as ``recover-recommend`` fits a first round (no validation set: the model's own ``holdout``), and
every other experiment of the screen is scored. Per fit: the measured scores' sd, the mean predictive sd
(epistemic, total) of the unmeasured experiments and their ratio to it (issue #24's target: at most 2), the
central 90 % interval's coverage, Spearman and NLL of the predictive on the unmeasured experiments. Rows are
appended to ``<out>_runs.csv`` (finished (experiment, seed) rows are skipped, so re-running resumes);
``manifest.json`` in ``<out>``'s folder records how they were made.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from benchmark_accuracy import compose_config

from recover_pyro.cli.builders import build_features, build_screen, model_factory
from recover_pyro.metrics import evaluate
from recover_pyro.records.manifest import command_line, recording

NUM_SAMPLES = 100


def first_round(n: int, measured: int, seed: int) -> np.ndarray:
    """A permutation of the screen's ``n`` experiments: its first ``measured`` are the first round."""
    return np.random.default_rng([seed, 60]).permutation(n)


def run_one(
    data: str, score: str | None, experiment: str, seed: int, measured: int, extra: Sequence[str]
) -> dict[str, Any]:
    """Fit ``+experiment=<experiment>`` on ``measured`` random experiments of the screen; score the others."""
    cfg = compose_config(experiment, data, score, "random", seed, ["fit_progress=false", *extra])
    screen = build_screen(cfg)
    features = build_features(cfg, screen)
    pairs = screen.to_pairs(cfg.data.score)
    order = first_round(len(pairs), measured, seed)
    fit, rest = pairs[order[:measured]], pairs[order[measured:]]
    assert fit.y is not None and rest.y is not None
    torch.manual_seed(seed)
    model = model_factory(cfg, features)()
    model.fit(fit)
    predictive = model.predict(rest, NUM_SAMPLES).cpu()
    scores = evaluate(predictive, rest.y, seed=seed)
    measured_sd = float(fit.y.std())
    return {
        "measured_sd": measured_sd,
        "epistemic_sd": scores["epistemic_sd"],
        "predictive_sd": float(predictive.std.mean()),
        "sd_ratio": float(predictive.std.mean()) / measured_sd,
        "coverage_90": scores["coverage_90"],
        "spearman": scores["spearman"],
        "nll": scores["nll"],
    }


def fit_missing(
    runs_csv: Path,
    experiments: Sequence[str],
    seeds: Sequence[int],
    variant: str,
    base: dict[str, Any],
    run: Callable[[str, int], dict[str, Any]],
) -> pd.DataFrame:
    """Append a row per (experiment, seed) not yet in ``runs_csv``: its name (``<experiment>[<variant>]`` with a
    variant), seed, ``base`` and ``run(experiment, seed)``; return every row of the file."""
    runs = pd.read_csv(runs_csv) if runs_csv.exists() else pd.DataFrame()
    done = set(zip(runs.experiment, runs.seed)) if len(runs) else set()
    for seed in seeds:
        for experiment in experiments:
            name = f"{experiment}[{variant}]" if variant else experiment
            if (name, seed) in done:
                continue
            row = {"experiment": name, "seed": seed, **base, **run(experiment, seed)}
            print(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
            # Re-read first: another process may have appended to the same file meanwhile.
            runs = pd.read_csv(runs_csv) if runs_csv.exists() else pd.DataFrame()
            runs = pd.concat([runs, pd.DataFrame([row])], ignore_index=True)
            runs.to_csv(runs_csv, index=False)
    return runs


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="almanac")
    parser.add_argument("--score", default=None)
    parser.add_argument("--measured", type=int, default=60)
    parser.add_argument("--experiments", nargs="+", default=["normal", "ensemble"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides for every fit (pilots only)")
    parser.add_argument("--variant", default="", help="with --override: rows are named <experiment>[<variant>]")
    parser.add_argument("--out", type=Path, required=True, help="prefix of <out>_runs.csv")
    args = parser.parse_args(argv)
    if bool(args.override) != bool(args.variant):
        parser.error("--override and --variant go together: rows fitted with overrides need their own name")
    runs_csv = args.out.with_name(args.out.name + "_runs.csv")
    runs_csv.parent.mkdir(parents=True, exist_ok=True)
    with recording(
        args.out.parent,
        command=command_line(__file__, sys.argv[1:] if argv is None else argv),
        description=f"small data: predictive sd after {args.measured} measured experiments ({args.out.name})",
        out=args.out.name,
    ):
        base = {"measured": args.measured, "overrides": " ".join(args.override)}
        runs = fit_missing(
            runs_csv, args.experiments, args.seeds, args.variant, base,
            lambda experiment, seed: run_one(args.data, args.score, experiment, seed, args.measured, args.override),
        )  # fmt: skip
        table = runs.groupby("experiment", sort=False)[["sd_ratio", "coverage_90", "spearman", "nll"]].mean()
        print(table.to_string())
        return table


if __name__ == "__main__":
    main()
