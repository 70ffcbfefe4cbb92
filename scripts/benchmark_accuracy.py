"""Accuracy / calibration benchmark: every experiment config (and a gradient-boosted-trees baseline) x seeds.

    python scripts/benchmark_accuracy.py --data almanac --split random --seeds 0 1 2 \
        --out benchmarks/results/accuracy/almanac_mcf7_random
    python scripts/benchmark_accuracy.py --data oneil --score bliss --split unseen_drug --seeds 0 1 2 \
        --experiments normal laplace deterministic ensemble gbt --out benchmarks/results/accuracy/oneil_bliss_unseen

Each (experiment, seed) is one call of :func:`recover_pyro.cli.train.train` on the config that
``python -m recover_pyro.train +experiment=<e> data=<data> split=<split> seed=<s>`` composes (same defaults,
same metrics), with its run directory (checkpoint, predictions) under ``--runs-dir`` (default ``/tmp``).
``gbt`` is sklearn's :class:`~sklearn.ensemble.HistGradientBoostingRegressor` (default settings) on
order-invariant pair features built from the same drug features as the networks (fingerprint + one-hot):
``[x_a + x_b, x_a * x_b, onehot(cell)]``; its predictive is the point prediction plus noise by the
convention of every model (:mod:`recover_pyro.models.noise`: a Student-t fitted to the validation
residuals, Gaussian below 100 validation experiments; a single predictor has no epistemic part).

``--rescore`` re-scores finished fits from their checkpoints (:func:`recover_pyro.cli.train.rescore`: the noise
re-estimated on the validation split by today's convention, every metric recomputed; the fit is not repeated,
and does not depend on the noise convention) and re-runs ``gbt``. It redoes the requested rows that lack a
metric of :data:`RESCORED_METRICS` (rows written before the metric existed, or where it came out NaN), with the
same ``--override`` they were made with (it refuses others: a fit is scored on its own split).

Writes, after every run (so a killed benchmark keeps what it finished): ``<out>_runs.csv`` (one row per
run) and ``<out>.csv`` (mean and sd over seeds per experiment, sd with ddof = 1), and prints the table as
markdown. Runs already in ``<out>_runs.csv`` are skipped, so re-running resumes. Benchmarks run as parallel
processes (each with its own ``--out``) are combined with ``--merge A_runs.csv B_runs.csv --out <out>``.
Every call leaves ``manifest.json`` in ``<out>``'s folder (:func:`recover_pyro.records.manifest.recording`:
commit, command, machine, times, files written; an earlier manifest there is kept under ``earlier``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from recover_pyro.cli.builders import CONFIG_DIR, build_features, build_screen, build_split
from recover_pyro.cli.train import rescore, train
from recover_pyro.metrics import SUMMARY_METRICS, evaluate
from recover_pyro.models.base import PredictiveSamples
from recover_pyro.models.noise import residual_noise
from recover_pyro.records.manifest import command_line, recording

BNN_EXPERIMENTS = ["normal_gp_identity", "normal", "laplace", "scale_mixture", "sparse_dropout"]
BASELINES = ["deterministic", "ensemble", "recover_ensemble", "mc_dropout", "gbt"]
# Metrics added after the first tables were written: --rescore fills them in for rows that lack them.
RESCORED_METRICS = ["noise_df", "sd_error_spearman"]
METRICS = [*SUMMARY_METRICS, "noise_df", "fit_seconds", "pruned_fraction", "best_epoch"]


def compose_config(
    experiment: str, data: str, score: str | None, split: str, seed: int, extra: Sequence[str]
) -> DictConfig:
    """The config ``python -m recover_pyro.train`` builds from the same overrides (``gbt`` uses only the
    data / features / split groups, so it composes without an experiment)."""
    overrides = [f"data={data}", f"split={split}", f"seed={seed}", "inference.progress=false", *extra]
    if experiment != "gbt":
        overrides.insert(0, f"+experiment={experiment}")
    if score:
        overrides.append(f"data.score={score}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def pair_features(drug: np.ndarray, n_cells: int, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``(N, 2F + C)`` order-invariant features ``[x_a + x_b, x_a * x_b, onehot(cell)]``."""
    xa, xb = drug[a], drug[b]
    return np.concatenate([xa + xb, xa * xb, np.eye(n_cells, dtype=drug.dtype)[c]], axis=1)


def run_gbt(cfg: DictConfig) -> dict[str, Any]:
    """Fit HistGradientBoostingRegressor (defaults, ``random_state = seed``) on the train split; test metrics."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    screen = build_screen(cfg)
    features = build_features(cfg, screen)
    split = build_split(cfg, screen)
    pairs = screen.to_pairs(cfg.data.score)
    drug = features.drug.numpy().astype(np.float32)
    n_cells = features.cell.shape[0]

    def xy(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = pairs[idx]
        assert p.y is not None
        return pair_features(drug, n_cells, p.drug_a.numpy(), p.drug_b.numpy(), p.cell.numpy()), p.y.numpy()

    (x_train, y_train), (x_test, y_test) = xy(split.train), xy(split.test)
    start = time.perf_counter()
    model = HistGradientBoostingRegressor(random_state=cfg.seed).fit(x_train, y_train)
    fit_seconds = time.perf_counter() - start
    f_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    if len(split.val):
        x_val, y_val_np = xy(split.val)
        f_val, y_val = torch.as_tensor(model.predict(x_val)).unsqueeze(0), torch.as_tensor(y_val_np)
    noise = residual_noise(torch.as_tensor(model.predict(x_train)), torch.as_tensor(y_train), f_val, y_val)
    mean = torch.as_tensor(model.predict(x_test), dtype=torch.float64).unsqueeze(0)
    predictive = PredictiveSamples(mean, torch.tensor(noise.scale, dtype=torch.float64), noise.df)
    metrics: dict[str, Any] = evaluate(predictive, torch.as_tensor(y_test), seed=cfg.seed)
    metrics.update(
        fit_seconds=fit_seconds,
        best_epoch=int(model.n_iter_) - 1,
        n_train=len(split.train),
        n_val=len(split.val),
        n_test=len(split.test),
        model="HistGradientBoostingRegressor",
        seed=cfg.seed,
    )
    return metrics


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per experiment (in run order): ``n_runs`` and ``<metric>_mean`` / ``<metric>_sd`` over seeds."""
    order = list(dict.fromkeys(runs["experiment"]))
    metrics = [m for m in METRICS if m in runs.columns]
    grouped = runs.groupby("experiment", sort=False)
    table = grouped.size().rename("n_runs").to_frame()
    for m in metrics:
        table[f"{m}_mean"] = grouped[m].mean()
        table[f"{m}_sd"] = grouped[m].std(ddof=1)
    return table.loc[order].reset_index()


def merge_runs(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One runs table from several (e.g. benchmark processes run in parallel with their own ``--out``); a run
    ``(experiment, seed)`` present more than once keeps its last occurrence."""
    runs = pd.concat(list(parts), ignore_index=True)
    return runs.drop_duplicates(subset=["experiment", "seed"], keep="last").reset_index(drop=True)


def to_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    metrics = [m for m in METRICS if f"{m}_mean" in table.columns]
    lines = ["| experiment | n | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for _, row in table.iterrows():
        cells = []
        for m in metrics:
            mean, sd = float(row[f"{m}_mean"]), float(row[f"{m}_sd"])
            text = "–" if np.isnan(mean) else f"{mean:.{digits}f}"
            cells.append(text if np.isnan(mean) or np.isnan(sd) else f"{text} ± {sd:.{digits}f}")
        lines.append(f"| {row['experiment']} | {int(row['n_runs'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="almanac", help="data config (almanac, oneil, ...)")
    parser.add_argument("--score", default=None, help="score column (default: the data config's)")
    parser.add_argument("--split", default="random", help="split config (random, unseen_drug, ...)")
    parser.add_argument("--experiments", nargs="+", default=BNN_EXPERIMENTS + BASELINES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every run")
    parser.add_argument("--out", type=Path, required=True, help="CSV path prefix (writes <out>.csv, <out>_runs.csv)")
    parser.add_argument("--runs-dir", type=Path, default=Path("/tmp/recover_pyro_bench"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        metavar="RUNS_CSV",
        help="run nothing: merge these <out>_runs.csv files (with <out>'s own) into <out>",
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="re-score finished fits from the checkpoints in their run directories instead of fitting again "
        "(recover_pyro.cli.train.rescore; gbt, which keeps no checkpoint, is re-run); redoes the rows of "
        "<out>_runs.csv that lack a metric added since (RESCORED_METRICS: noise_df, sd_error_spearman)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    runs_csv = args.out.parent / f"{args.out.name}_runs.csv"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = pd.read_csv(runs_csv) if runs_csv.is_file() else pd.DataFrame(columns=["experiment", "seed"])
    if args.rescore and not args.merge:
        # Requested rows written before a metric existed are redone; all others are kept.
        requested = done["experiment"].isin(args.experiments) & done["seed"].isin(args.seeds)
        stale = done.reindex(columns=RESCORED_METRICS).isna().any(axis=1)
        # A fit must be re-scored on the split it was made with: the overrides (e.g. split.test_seed) must match.
        stored = done.reindex(columns=["overrides"])["overrides"].astype(object).fillna("").astype(str)
        other = stored[requested & stale & (stored != " ".join(args.override))]
        if len(other):
            parser.error(
                f"--rescore: rows of {runs_csv} were fitted with --override {other.iloc[0]!r}, not "
                f"{' '.join(args.override)!r}; re-score them with the overrides they were made with"
            )
        done = done[~(requested & stale)]
    what = "merged" if args.merge else "re-scored" if args.rescore else "fitted"
    with recording(
        args.out.parent,
        command=command_line(__file__, sys.argv[1:] if argv is None else argv),
        description=f"accuracy / calibration tables ({args.out.name}: {what})",
        out=args.out.name,
    ):
        if args.merge:
            runs = merge_runs([done, *(pd.read_csv(p) for p in args.merge)])
            runs.to_csv(runs_csv, index=False)
            table = summarize(runs)
            table.to_csv(args.out.parent / f"{args.out.name}.csv", index=False)
            print(to_markdown(table))
            return table
        return run_all(args, done, runs_csv)


def run_all(args: argparse.Namespace, done: pd.DataFrame, runs_csv: Path) -> pd.DataFrame:
    """Fit (or re-score) every requested (experiment, seed) not in ``done``; tables rewritten after each."""
    rows = done.to_dict("records")
    finished = {(str(r["experiment"]), int(r["seed"])) for r in rows}
    # Seed-major order: a benchmark cut short still has every experiment at the first seeds.
    for seed in args.seeds:
        for experiment in args.experiments:
            if (experiment, seed) in finished:
                continue
            cfg = compose_config(experiment, args.data, args.score, args.split, seed, args.override)
            run_dir = args.runs_dir / args.out.name / f"{experiment}_seed{seed}"
            if experiment == "gbt":
                metrics = run_gbt(cfg)
            else:
                metrics = (rescore if args.rescore else train)(cfg, run_dir)
            rows.append(
                {
                    "experiment": experiment,
                    "data": args.data,
                    "score": cfg.data.score,
                    "split": args.split,
                    **{k: v for k, v in metrics.items() if k not in ("data", "score")},
                    "overrides": " ".join(args.override),
                }
            )
            runs = pd.DataFrame(rows)
            runs.to_csv(runs_csv, index=False)
            summarize(runs).to_csv(args.out.parent / f"{args.out.name}.csv", index=False)
            print(
                f"done {experiment} seed {seed}: r2 {metrics['r2']:.3f}, nll {metrics['nll']:.3f}, "
                f"{metrics['fit_seconds']:.1f} s",
                flush=True,
            )
    runs = pd.DataFrame(rows)
    table = summarize(runs)
    print(to_markdown(table))
    return table


if __name__ == "__main__":
    main()
