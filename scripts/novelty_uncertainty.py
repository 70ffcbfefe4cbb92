"""Does a model's epistemic uncertainty know that a drug is new?

    python scripts/novelty_uncertainty.py --data almanac --test-seeds 0 1 2 3 4 5 6 7 \
        --experiments normal ensemble recover_ensemble --out benchmarks/results/accuracy/novelty/almanac_mcf7
    python scripts/novelty_uncertainty.py --data oneil --score bliss --test-seeds 0 1 2 3 \
        --experiments normal recover_ensemble --out benchmarks/results/accuracy/novelty/oneil_bliss

On the unseen-drug split (``split=unseen_drug split.test_seed=<k>``, validation drugs held out as shipped) a
random ``--seen-frac`` of the training experiments is also held out before the fit. Both held-out sets are
new to the model; the test experiments contain a drug it has never seen, the ``seen`` ones only drugs it has.
Per fit it records, for each set, the mean epistemic sd (the sd of the ``(S, N)`` mean-function samples)
and the mean absolute error of the predictive mean, both on the original scale, and

* ``sd_ratio`` = mean epistemic sd on new-drug / seen-drug experiments, ``error_ratio`` the same for the
  absolute error: a model whose uncertainty tracks its ignorance has ``sd_ratio`` near ``error_ratio``;
* ``novelty_auroc``: the probability that a new-drug experiment's epistemic sd exceeds a seen-drug
  experiment's (ties count 1/2): 0.5 means the epistemic sd does not tell new drugs from seen ones;
* for a Bayesian head on a point-estimated trunk (the default BNN), ``norm_ratio``: the mean norm of the trunk's
  output on new-drug / seen-drug experiments, and ``sd_norm_spearman``: the rank correlation of that norm with
  the epistemic sd over both sets (a head's posterior sd grows with the size of its input).

Every fit is the experiment as shipped (``+experiment=<e>``), unless a pilot passes ``--override`` (its rows are
then named ``<e>[<variant>]``). Rows are appended to
``<out>_runs.csv`` after every fit; finished (experiment, test seed, seed) rows are skipped, so re-running
resumes; ``<out>.csv`` holds the mean and standard error per experiment, and ``manifest.json`` in ``<out>``'s
folder how they were made (:func:`recover_pyro.records.manifest.recording`). ``--plot PNG --panels
TITLE=RUNS_CSV ...`` draws finished runs (:func:`novelty_figure`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence, cast

import numpy as np
import pandas as pd
import torch
from benchmark_accuracy import compose_config as compose_train_config
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from recover_pyro.bnn.model import BNNSynergyModel
from recover_pyro.bnn.predictive import bayesian_head_only
from recover_pyro.cli.builders import build_features, build_screen, build_split, model_factory
from recover_pyro.data.featurize import Features
from recover_pyro.data.screen import Pairs, Screen
from recover_pyro.metrics import evaluate
from recover_pyro.models.base import PredictiveSamples
from recover_pyro.records.manifest import command_line, recording

COLUMNS = [
    "sd_new",
    "sd_seen",
    "sd_ratio",
    "error_new",
    "error_seen",
    "error_ratio",
    "novelty_auroc",
    "spearman_new",
    "nll_new",
]
# Only for a Bayesian head on a point-estimated trunk (NaN for the other models).
TRUNK_COLUMNS = ["norm_ratio", "sd_norm_spearman"]


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive's score > a negative's) + P(tie) / 2 (the Mann-Whitney U statistic, normalised)."""
    ranks = pd.Series(np.concatenate([positive, negative])).rank().to_numpy()
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def compose_config(
    data: str, score: str | None, experiment: str, test_seed: int, seed: int, extra: Sequence[str] = ()
) -> DictConfig:
    """``benchmark_accuracy``'s config of ``+experiment=<experiment>`` on the unseen-drug split ``test_seed``."""
    overrides = [f"split.test_seed={test_seed}", "fit_progress=false", *extra]
    return compose_train_config(experiment, data, score, "unseen_drug", seed, overrides)


def novelty_sets(
    cfg: DictConfig, seen_frac: float, screens: dict[str, tuple[Screen, Features]] | None = None
) -> tuple[Features, dict[str, Pairs]]:
    """The drug features and the experiments of one fit: ``fit`` (the unseen-drug split's training experiments
    minus a random ``seen_frac``), ``seen`` (those held out: only drugs of ``fit``), ``new`` (the test split:
    each has a drug no fit experiment has) and ``val`` (the split's validation experiments). ``screens`` keeps
    the loaded screen and its features across calls, keyed by the data and features configs."""
    screens = {} if screens is None else screens
    key = OmegaConf.to_yaml(cfg.data) + OmegaConf.to_yaml(cfg.features)
    if key not in screens:
        screen = build_screen(cfg)
        screens[key] = (screen, build_features(cfg, screen))
    screen, features = screens[key]
    split = build_split(cfg, screen)
    pairs = screen.to_pairs(cfg.data.score)
    rng = np.random.default_rng([cfg.seed, cfg.split.test_seed, 7])
    seen_mask = np.zeros(len(split.train), dtype=bool)
    seen_mask[rng.choice(len(split.train), size=round(seen_frac * len(split.train)), replace=False)] = True
    sets = {
        "fit": pairs[split.train[~seen_mask]],
        "seen": pairs[split.train[seen_mask]],
        "new": pairs[split.test],
        "val": pairs[split.val],
    }
    return features, sets


def embedding_norms(model: Any, sets: dict[str, Pairs]) -> dict[str, np.ndarray]:
    """``{"new", "seen"}`` -> ``(N,)`` Euclidean norms of the pair representation a Bayesian head sees (the
    output of a :class:`~recover_pyro.bnn.model.BNNSynergyModel`'s point-estimated trunk); ``{}`` for models
    without one (ensembles, a BNN with Bayesian layers before its head)."""
    if not isinstance(model, BNNSynergyModel) or not bayesian_head_only(model.model):
        return {}
    predictor = cast(Any, model.model.predictor)
    with torch.no_grad():
        return {k: predictor.trunk(p.drug_a, p.drug_b, p.cell).norm(dim=-1).cpu().numpy() for k, p in sets.items()}


def run_one(
    cfg: DictConfig,
    seen_frac: float,
    num_samples: int,
    screens: dict[str, tuple[Screen, Features]] | None = None,
    score_on: str = "test",
    members: int = 1,
) -> dict[str, Any]:
    """Fit ``cfg``'s model on :func:`novelty_sets`' ``fit`` experiments; score the ``new`` and ``seen`` ones.

    ``score_on="val"`` (pilots): the new-drug experiments are the split's validation drugs instead of its test
    drugs, and the fit sets its early-stopping data aside from ``fit`` (the model's ``holdout``), so that nothing
    about the validation drugs reaches the fit and the test drugs stay untouched.

    ``members > 1`` (a diagnostic): fit the model that many times with seeds ``seed, seed + 1000, ...`` and pool
    ``num_samples / members`` posterior samples of each, an equal-weight mixture of their posteriors: what
    averaging several trunks would give, at ``members`` times the cost.
    """
    torch.manual_seed(cfg.seed)
    features, sets = novelty_sets(cfg, seen_frac, screens)
    if score_on == "val":
        sets["new"] = sets.pop("val")
    make = model_factory(cfg, features)
    start = time.perf_counter()
    models = []
    for k in range(members):
        models.append(make(seed=int(cfg.seed) + 1000 * k) if k else make())
        models[-1].fit(sets["fit"], sets.get("val"))
    fit_seconds = time.perf_counter() - start
    model = models[0]
    out: dict[str, Any] = {f"n_{k}": len(sets[k]) for k in ("fit", "new", "seen")}
    sds = {}
    for name in ("new", "seen"):
        held = sets[name]
        assert held.y is not None
        predictive = pooled_predictive(models, held, num_samples)
        sds[name] = predictive.epistemic_std.numpy()
        out[f"sd_{name}"] = float(sds[name].mean())
        out[f"error_{name}"] = float((predictive.mean - held.y.cpu()).abs().mean())
        scores = evaluate(predictive, held.y.cpu(), seed=cfg.seed)
        out[f"spearman_{name}"], out[f"nll_{name}"] = scores["spearman"], scores["nll"]
    norms = embedding_norms(model, {k: sets[k] for k in ("new", "seen")})
    if norms:
        out["norm_ratio"] = float(norms["new"].mean() / norms["seen"].mean())
        both_norms, both_sds = np.concatenate([norms["new"], norms["seen"]]), np.concatenate([sds["new"], sds["seen"]])
        out["sd_norm_spearman"] = float(pd.Series(both_norms).corr(pd.Series(both_sds), method="spearman"))
    out["sd_ratio"] = out["sd_new"] / out["sd_seen"] if out["sd_seen"] > 0 else float("nan")
    out["error_ratio"] = out["error_new"] / out["error_seen"]
    out["novelty_auroc"] = auroc(sds["new"], sds["seen"])
    out["fit_seconds"] = fit_seconds
    return out


def pooled_predictive(models: Sequence[Any], pairs: Pairs, num_samples: int) -> PredictiveSamples:
    """``num_samples`` predictive samples of the equal-weight mixture of ``models``' posteriors (their ``(S_k, N)``
    samples stacked, ``S_k = num_samples / len(models)``; one model: its own predictive)."""
    if len(models) == 1:
        return models[0].predict(pairs, num_samples=num_samples).cpu()
    parts = [m.predict(pairs, num_samples=max(1, num_samples // len(models))).cpu() for m in models]
    noise = [p.noise_scale.expand(p.num_samples) if p.noise_scale.dim() == 0 else p.noise_scale for p in parts]
    return PredictiveSamples(torch.cat([p.f for p in parts]), torch.cat(noise), parts[0].noise_df)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error over runs per experiment."""
    grouped = runs.groupby("experiment", sort=False)[[c for c in COLUMNS + TRUNK_COLUMNS if c in runs]]
    table = grouped.mean().add_suffix("_mean").join(grouped.sem().add_suffix("_se"))
    table.insert(0, "runs", grouped.size())
    return table


def to_markdown(table: pd.DataFrame) -> str:
    """``table`` (:func:`summarise`) as a markdown table of mean ± standard error."""
    columns = [c for c in COLUMNS + TRUNK_COLUMNS if f"{c}_mean" in table]
    lines = ["| experiment | runs | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for experiment, row in table.iterrows():
        cells = [
            "–" if np.isnan(row[f"{c}_mean"]) else f"{row[f'{c}_mean']:.3f} ± {row[f'{c}_se']:.3f}" for c in columns
        ]
        lines.append(f"| {experiment} | {int(row['runs'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def novelty_figure(panels: dict[str, pd.DataFrame]) -> Figure:
    """One panel per data set: each run's ``error_ratio`` (x) against its ``sd_ratio`` (y), coloured by model.
    On the diagonal a model's epistemic sd grows for new drugs as much as its error does; below 1 it shrinks."""
    fig = Figure(figsize=(4.2 * len(panels), 4.2))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    # One colour per model across the panels.
    colours = {e: f"C{i}" for i, e in enumerate(dict.fromkeys(e for r in panels.values() for e in r["experiment"]))}
    for ax, (title, runs) in zip(axes, panels.items()):
        for experiment, group in runs.groupby("experiment", sort=False):
            ax.plot(
                group["error_ratio"], group["sd_ratio"], "o", color=colours[experiment], alpha=0.7, label=experiment
            )
        high = max(2.0, float(runs[["error_ratio", "sd_ratio"]].max().max()) * 1.05)
        ax.plot([0, high], [0, high], color="grey", linestyle="--", linewidth=1)
        ax.axhline(1.0, color="grey", linewidth=0.5)
        ax.set(xlim=(0.5, high), ylim=(0.2, high), title=title, xlabel="abs. error, new / seen drugs")
        ax.legend(fontsize="x-small")
    axes[0].set(ylabel="epistemic sd, new / seen drugs")
    fig.suptitle("Does the uncertainty grow for drugs the model has not seen? (dots: test sets)", fontsize="medium")
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> pd.DataFrame | None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="almanac")
    parser.add_argument("--score", default=None)
    parser.add_argument(
        "--experiments", nargs="+", default=["normal_gp_identity", "normal", "ensemble", "recover_ensemble"]
    )
    parser.add_argument("--test-seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--seen-frac", type=float, default=0.15)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument(
        "--score-on",
        choices=["test", "val"],
        default="test",
        help="new drugs: the split's test drugs (reported) or its validation drugs (pilots; fits then hold out "
        "their early-stopping data from the training experiments)",
    )
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides for every fit (pilots only)")
    parser.add_argument("--variant", default="", help="with --override: rows are named <experiment>[<variant>]")
    parser.add_argument(
        "--members", type=int, default=1, help="pool the posteriors of this many fits per row (rows: <experiment>xK)"
    )
    parser.add_argument("--out", type=Path, default=None, help="prefix of <out>_runs.csv and <out>.csv")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of finished runs: with --panels, no fits")
    parser.add_argument("--panels", nargs="*", default=[], help="TITLE=RUNS_CSV per panel of --plot")
    args = parser.parse_args(argv)
    if args.plot:
        if not args.panels:
            parser.error("--plot needs --panels TITLE=RUNS_CSV ...")
        panels = {title: pd.read_csv(path) for title, path in (p.split("=", 1) for p in args.panels)}
        novelty_figure(panels).savefig(args.plot, dpi=100)
        return None
    if args.out is None:
        parser.error("--out is required to fit")
    if not 0 < args.seen_frac < 1:
        parser.error(f"--seen-frac must be in (0, 1), got {args.seen_frac}")
    if bool(args.override) != bool(args.variant):
        parser.error("--override and --variant go together: rows fitted with overrides need their own name")
    if args.members < 1:
        parser.error(f"--members must be >= 1, got {args.members}")
    runs_csv = args.out.with_name(args.out.name + "_runs.csv")
    runs_csv.parent.mkdir(parents=True, exist_ok=True)
    with recording(
        args.out.parent,
        command=command_line(__file__, sys.argv[1:] if argv is None else argv),
        description=f"novelty: epistemic sd on new vs seen drugs ({args.out.name})",
        out=args.out.name,
    ):
        return run_all(args, runs_csv)


def run_all(args: argparse.Namespace, runs_csv: Path) -> pd.DataFrame:
    """Fit every (test seed, seed, experiment) not yet in ``runs_csv``; write the runs and the summary."""
    runs = pd.read_csv(runs_csv) if runs_csv.exists() else pd.DataFrame()
    screens: dict[str, tuple[Screen, Features]] = {}  # one load per data set, not per fit
    done = set()
    if len(runs):
        done = set(zip(runs.experiment, runs.test_seed, runs.seed))
    for test_seed in args.test_seeds:
        for seed in args.seeds:
            for experiment in args.experiments:
                name = f"{experiment}[{args.variant}]" if args.variant else experiment
                name += f"x{args.members}" if args.members > 1 else ""
                if (name, test_seed, seed) in done:
                    continue
                cfg = compose_config(args.data, args.score, experiment, test_seed, seed, args.override)
                row = {"experiment": name, "test_seed": test_seed, "seed": seed, "overrides": " ".join(args.override)}
                row["score_on"] = args.score_on
                row.update(run_one(cfg, args.seen_frac, args.num_samples, screens, args.score_on, args.members))
                print(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
                # Re-read first: another process may have appended to the same file meanwhile.
                runs = pd.read_csv(runs_csv) if runs_csv.exists() else pd.DataFrame()
                runs = pd.concat([runs, pd.DataFrame([row])], ignore_index=True)
                runs.to_csv(runs_csv, index=False)
    table = summarise(runs)
    table.to_csv(args.out.with_name(args.out.name + ".csv"))
    print(to_markdown(table))
    return table


if __name__ == "__main__":
    main()
