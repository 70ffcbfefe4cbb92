"""Regenerate the result tables of the docs from the result files under ``benchmarks/results/``.

    python scripts/benchmark_tables.py            # rewrite every table in README.md and docs/*.md
    python scripts/benchmark_tables.py --check    # exit 1 if a table differs from what the result files give
    python scripts/benchmark_tables.py --list     # the table names and the result files each one reads

A generated table sits between two markers, which the script keeps::

    <!-- table:accuracy_almanac_pair -->
    | model | ... |
    <!-- /table -->

Everything between them is replaced by :data:`TABLES` ``[name]`` rendered from the committed CSVs, so a
documented number cannot drift from the result it reports: after a new benchmark run, rerun this script (and
``--check`` runs in the test suite, ``tests/scripts/test_benchmark_tables.py``). Only the tables are generated;
the prose around them is written by hand and cites the tables. The script needs pandas, numpy and scipy only
(no torch, no Hydra), and reads nothing but ``benchmarks/results/``.

Conventions: mean ± standard error over (test set, seed) runs where a table spans several test sets, mean ± sd
over seeds where it has one test set or one pool; a paired difference ``a - b`` is the mean over the pairs with
its Student-t 95 % interval ``[lo, hi]``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
# Files scanned for markers, relative to the root (docs/*.md is globbed).
DOC_FILES = ("README.md", "docs/*.md")
# A marker is a line of its own (so that prose may quote one in backticks).
MARKER = re.compile(r"^(<!-- table:(?P<name>[a-z0-9_]+) -->\n)(?P<body>.*?)^(<!-- /table -->)$", re.S | re.M)
OPENING = re.compile(r"^<!-- table:[^\n]*-->$", re.M)
CLOSING = re.compile(r"^<!-- /table -->$", re.M)

# Row labels and order of the models of the accuracy tables (train presets; `gbt` is the benchmark's own).
MODELS = {
    "normal_gp_identity": "**BNN, GP head + identity effects** (`normal_gp_identity`, the default)",
    "normal": "BNN, Bayesian head only, Normal prior (`normal`)",
    "laplace": "BNN, Laplace prior (`laplace`)",
    "scale_mixture": "BNN, scale mixture (`scale_mixture`)",
    "sparse_dropout": "BNN, sparse var. dropout (`sparse_dropout`)",
    "deterministic": "deterministic net (`deterministic`)",
    "ensemble": "5 small nets (`ensemble`)",
    "recover_ensemble": "**RECOVER's ensemble**, published recipe (`recover_ensemble`)",
    "mc_dropout": "MC dropout (`mc_dropout`)",
    "gbt": "gradient-boosted trees (benchmark script only)",
}
# Short labels of the campaign presets.
PRESETS = {
    "normal_gp_identity_ucb": "**BNN, GP head + identity effects + UCB** (`normal_gp_identity_ucb`, the default)",
    "normal_ucb": "BNN, Bayesian head only + UCB, kappa 2 x 0.8 per round (`normal_ucb`)",
    "recover_ensemble_ucb": "**RECOVER's ensemble + UCB** (`recover_ensemble_ucb`)",
    "ensemble_ucb": "5 small nets + UCB (`ensemble_ucb`)",
    "random": "random (`random`, fits no model)",
    "scale_mixture_ucb_pretrained": "BNN, scale mixture + UCB, pretrained (`scale_mixture_ucb_pretrained`)",
    "normal_gp_identity_ucb_pretrained": "**default BNN + UCB, pretrained** (`normal_gp_identity_ucb_pretrained`)",
}
PRETRAINED_DEFAULT = "mcf7_pretrained_v5_default"  # the default's pretrained preset on MCF7

TableFn = Callable[[Path], str]
TABLES: dict[str, TableFn] = {}
SOURCES: dict[str, tuple[str, ...]] = {}


def table(*sources: str) -> Callable[[TableFn], TableFn]:
    """Register a table under the function's name; ``sources`` (relative to the results folder) for ``--list``."""

    def register(fn: TableFn) -> TableFn:
        TABLES[fn.__name__] = fn
        SOURCES[fn.__name__] = sources
        return fn

    return register


# --- formatting -------------------------------------------------------------------------------------------


def markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def pm(mean: float, err: float, digits: int = 3) -> str:
    """``mean ± err``; a missing spread (one run) prints the mean alone."""
    if pd.isna(mean):
        return "–"
    if pd.isna(err):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {err:.{digits}f}"


def scientific(x: float) -> str:
    """``6.85e6`` (three significant digits, no ``+0`` in the exponent)."""
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def t_interval(x: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean (the point itself for constant values, NaN for fewer than 2)."""
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return float("nan"), float("nan")
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def paired(x: Iterable[float]) -> str:
    """``+mean [lo, hi]`` of paired differences (NaNs dropped: older runs lack some metrics)."""
    x = np.asarray(list(x), dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return "–"
    lo, hi = t_interval(x)
    return f"{x.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]"


def ordered(frame: pd.DataFrame, order: Sequence[str], column: str = "experiment") -> pd.DataFrame:
    """Rows of ``frame`` in the order of ``order`` (rows not in it dropped)."""
    index = {name: i for i, name in enumerate(order)}
    kept = frame[frame[column].isin(index)]
    return kept.iloc[np.argsort([index[v] for v in kept[column]], kind="stable")]


# --- accuracy ---------------------------------------------------------------------------------------------


def over_test_sets(path: Path) -> str:
    """A ``scripts/paired_accuracy.py`` summary: mean ± standard error over (test set, seed) runs."""
    frame = ordered(pd.read_csv(path), list(MODELS))
    rows = []
    for _, r in frame.iterrows():
        rows.append(
            [MODELS[r["experiment"]], str(int(r["n_runs"]))]
            + [pm(r[f"{m}_mean"], r[f"{m}_sem"]) for m in ("r2", "spearman", "nll", "coverage_90")]
            + [f"{r['coverage_90_set_min']:.3f} / {r['coverage_90_set_max']:.3f}"]
            + [pm(r["coverage_50_mean"], r["coverage_50_sem"])]
            + [pm(r[f"{m}_mean"], r[f"{m}_sem"], 1) for m in ("epistemic_sd", "aleatoric_sd")]
        )
    header = ["model", "runs", "r2 (sq. Pearson)", "Spearman", "NLL", "90 % coverage", "lowest / highest test set"]
    return markdown(header + ["50 % coverage", "epistemic sd", "aleatoric sd"], rows)


def one_test_set(path: Path) -> str:
    """A ``scripts/benchmark_accuracy.py`` table: mean ± sd over seeds on one test set."""
    frame = ordered(pd.read_csv(path), list(MODELS))
    rows = []
    for _, r in frame.iterrows():
        rows.append(
            [MODELS[r["experiment"]], str(int(r["n_runs"]))]
            + [pm(r[f"{m}_mean"], r[f"{m}_sd"]) for m in ("r2", "spearman", "nll")]
            + [pm(r["crps_mean"], r["crps_sd"], 2), pm(r["coverage_90_mean"], r["coverage_90_sd"])]
            + [pm(r[f"{m}_mean"], r[f"{m}_sd"], 1) for m in ("epistemic_sd", "aleatoric_sd")]
        )
    header = ["model", "seeds", "r2 (sq. Pearson)", "Spearman", "NLL", "CRPS", "90 % coverage"]
    return markdown(header + ["epistemic sd", "aleatoric sd"], rows)


@table("accuracy/test_sets/summary.csv")
def accuracy_almanac_pair(results: Path) -> str:
    return over_test_sets(results / "accuracy/test_sets/summary.csv")


@table("accuracy/test_sets/summary_unseen_drug.csv")
def accuracy_almanac_unseen_drug(results: Path) -> str:
    return over_test_sets(results / "accuracy/test_sets/summary_unseen_drug.csv")


@table("accuracy/oneil_bliss_random.csv")
def accuracy_oneil_pair(results: Path) -> str:
    return one_test_set(results / "accuracy/oneil_bliss_random.csv")


@table("accuracy/oneil_bliss_unseen_drug.csv")
def accuracy_oneil_unseen_drug(results: Path) -> str:
    return one_test_set(results / "accuracy/oneil_bliss_unseen_drug.csv")


@table("accuracy/test_sets/summary_oneil_pair.csv", "accuracy/test_sets/summary_oneil_unseen_drug.csv")
def accuracy_oneil_test_sets(results: Path) -> str:
    """The O'Neil models re-run on more test sets (the rows with more than one)."""
    rows = []
    for split, name in (("pairs", "summary_oneil_pair.csv"), ("unseen drugs", "summary_oneil_unseen_drug.csv")):
        frame = ordered(pd.read_csv(results / "accuracy/test_sets" / name), list(MODELS))
        for _, r in frame[frame["n_test_sets"] > 1].iterrows():
            rows.append(
                [f"{split} ({int(r['n_test_sets'])} test sets)", MODELS[r["experiment"]], str(int(r["n_runs"]))]
                + [pm(r[f"{m}_mean"], r[f"{m}_sem"]) for m in ("r2", "spearman", "nll", "coverage_90")]
                + [f"{r['coverage_90_set_min']:.3f} / {r['coverage_90_set_max']:.3f}"]
                + [pm(r["epistemic_sd_mean"], r["epistemic_sd_sem"], 2)]
                + [pm(r["sd_error_spearman_mean"], r["sd_error_spearman_sem"])]
            )
    header = ["O'Neil Bliss", "model", "runs", "r2 (sq. Pearson)", "Spearman", "NLL", "90 % coverage"]
    return markdown(header + ["lowest / highest test set", "epistemic sd", "`sd_error_spearman`"], rows)


# The default BNN's paired comparisons (``scripts/paired_accuracy.py --a normal_gp_identity --b <b>``): protocol,
# the ``<out>`` under accuracy/test_sets/default_vs/ (``<name>_vs_<b>``), b. RECOVER's recipe ran on O'Neil's pair
# test set 0 only.
DEFAULT_PAIRED = (
    ("ALMANAC MCF7 pairs, 8 test sets x 3 seeds", "almanac_pair", "ensemble"),
    ("ALMANAC MCF7 unseen drugs, 8 test sets x 3 seeds", "almanac_unseen_drug", "ensemble"),
    ("O'Neil pairs, 3 test sets x 3 seeds", "oneil_pair", "ensemble"),
    ("O'Neil unseen drugs, 4 test sets x 3 seeds", "oneil_unseen_drug", "ensemble"),
    ("ALMANAC MCF7 pairs, 8 test sets x 3 seeds", "almanac_pair", "recover_ensemble"),
    ("ALMANAC MCF7 unseen drugs, 8 test sets x 3 seeds", "almanac_unseen_drug", "recover_ensemble"),
    ("O'Neil pairs, test set 0 x 3 seeds", "oneil_pair", "recover_ensemble"),
    ("O'Neil unseen drugs, 4 test sets x 3 seeds", "oneil_unseen_drug", "recover_ensemble"),
)


@table("accuracy/test_sets/default_vs/*_paired.csv")
def accuracy_paired(results: Path) -> str:
    """The default BNN against the small-net ensemble and RECOVER's recipe, paired by (test set, seed)."""
    rows = []
    for label, name, b in DEFAULT_PAIRED:
        diffs = pd.read_csv(results / f"accuracy/test_sets/default_vs/{name}_vs_{b}_paired.csv")
        rows.append(
            [label, f"`normal_gp_identity` - `{b}`", str(len(diffs))]
            + [paired(diffs[m]) for m in ("spearman", "nll", "r2", "coverage_90", "sd_error_spearman")]
        )
    header = ["protocol", "a - b", "pairs", "Spearman", "NLL", "r2", "90 % coverage", "`sd_error_spearman`"]
    return markdown(header, rows)


@table(
    "accuracy/test_sets/summary.csv",
    "accuracy/test_sets/summary_unseen_drug.csv",
    "accuracy/oneil_bliss_random.csv",
    "accuracy/oneil_bliss_unseen_drug.csv",
)
def accuracy_sd_error(results: Path) -> str:
    """``sd_error_spearman`` of every model on the four protocols (0 for a constant predictive sd)."""
    columns = [
        ("ALMANAC MCF7 pairs (8 test sets x 3 seeds)", "accuracy/test_sets/summary.csv", "sem"),
        ("ALMANAC MCF7 unseen drugs (8 x 3)", "accuracy/test_sets/summary_unseen_drug.csv", "sem"),
        ("O'Neil pairs (3 seeds)", "accuracy/oneil_bliss_random.csv", "sd"),
        ("O'Neil unseen drugs (3 seeds)", "accuracy/oneil_bliss_unseen_drug.csv", "sd"),
    ]
    frames = [pd.read_csv(results / path).set_index("experiment") for _, path, _ in columns]
    rows = []
    for model in [m for m in MODELS if any(m in f.index for f in frames)]:
        cells = []
        for frame, (_, _, err) in zip(frames, columns):
            if model not in frame.index:
                cells.append("–")
                continue
            mean, spread = frame.loc[model, "sd_error_spearman_mean"], frame.loc[model, f"sd_error_spearman_{err}"]
            cells.append(
                "0 (constant sd)"
                if pd.isna(mean) or (mean == 0 and (pd.isna(spread) or spread == 0))
                else pm(mean, spread)
            )
        rows.append([MODELS[model], *cells])
    return markdown(["model", *(c[0] for c in columns)], rows)


@table(
    "accuracy/novelty/synthetic_runs.csv",
    "accuracy/novelty/almanac_mcf7_runs.csv",
    "accuracy/novelty/oneil_bliss_runs.csv",
)
def accuracy_novelty(results: Path) -> str:
    """New-drug against seen-drug experiments of one fit (``scripts/novelty_uncertainty.py``), as shipped."""
    rows = []
    for label, name in (("synthetic", "synthetic"), ("ALMANAC MCF7", "almanac_mcf7"), ("O'Neil Bliss", "oneil_bliss")):
        runs = pd.read_csv(results / f"accuracy/novelty/{name}_runs.csv")
        runs = runs.drop_duplicates(subset=["experiment", "test_seed", "seed"], keep="last")
        for model in ("normal_gp_identity", "normal", "ensemble", "recover_ensemble"):
            df = runs[runs["experiment"] == model]
            if df.empty:
                continue
            cells = [pm(df[c].mean(), df[c].sem(), 2) for c in ("error_ratio", "sd_ratio", "novelty_auroc")]
            trunk = ["", ""]
            if model == "normal" and "norm_ratio" in df and df["norm_ratio"].notna().any():
                trunk = [pm(df[c].mean(), df[c].sem(), 2) for c in ("norm_ratio", "sd_norm_spearman")]
            rows.append([f"{label} ({df['test_seed'].nunique()})", MODELS[model], *cells, *trunk])
    header = ["data (test sets)", "model", "abs. error new / seen", "epistemic sd new / seen", "`novelty_auroc`"]
    return markdown(header + ["BNN trunk norm new / seen", "BNN `sd_norm_spearman`"], rows)


@table("library/almanac_mcf7_runs.csv")
def library_exploration(results: Path) -> str:
    """A plate over ALMANAC MCF7 drugs plus new molecules after 60 measured pairs (``scripts/library_exploration.py``)."""
    runs = pd.read_csv(results / "library/almanac_mcf7_runs.csv")
    rows = []
    for name, df in runs.groupby("experiment", sort=False):
        cells = [f"{df[c].mean():.2f}" for c in ("plate_generated", "plate_new")]
        cells += [f"{df[c].mean():.1f}" for c in ("sd_seen", "sd_unmeasured", "sd_new", "sd_new_new")]
        rows.append([preset_label(str(name)), str(df["seed"].nunique()), *cells, f"{df['sd_ratio'].mean():.2f}"])
    header = [
        "preset",
        "seeds",
        "plate: new molecule",
        "plate: drug in no measured pair",
        "epistemic sd: measured drugs",
    ]
    return markdown(
        header + ["one unmeasured screen drug", "one new molecule", "two new molecules", "sd new / measured"], rows
    )


# --- discovery --------------------------------------------------------------------------------------------


def campaigns(folders: Sequence[Path], experiment: str) -> list[pd.DataFrame]:
    """Every campaign ``<folder>/runs/<experiment>_s<seed>.csv`` (a seed read from the first folder having it)."""
    found: dict[int, pd.DataFrame] = {}
    for folder in folders:
        for path in sorted((folder / "runs").glob(f"{experiment}_s*.csv")):
            seed = int(path.stem.rsplit("_s", 1)[1])
            if seed not in found:
                found[seed] = pd.read_csv(path)
    return [found[s] for s in sorted(found)]


def recall_cells(runs: list[pd.DataFrame], mid_round: int = 5) -> list[str]:
    """Top-1 % / top-5 % recall (mean ± sd over seeds) after ``mid_round`` and after the last round."""
    cells = []
    for at in ("mid", "last"):
        for column in ("recall_top1pct", "recall_top5pct"):
            values = [
                run.loc[run["round"] == (mid_round if at == "mid" else run["round"].max()), column].iloc[0]
                for run in runs
            ]
            cells.append(pm(np.mean(values), pd.Series(values).std()))
    return cells


def seconds_per_round(runs: list[pd.DataFrame]) -> float:
    """Train + score + acquire seconds per acquisition round (rounds >= 1), mean over rounds and seeds."""
    rounds = pd.concat([run[run["round"] >= 1] for run in runs])
    return float((rounds["train_s"] + rounds["score_s"] + rounds["acquire_s"]).mean())


def discovery_table(rows_in: list[tuple[str, list[pd.DataFrame]]], extra: dict[str, str] | None = None) -> str:
    rows = []
    for label, runs in rows_in:
        row = [label, str(len(runs)), *recall_cells(runs), f"{seconds_per_round(runs):.2f}"]
        if extra is not None:
            row.append(extra.get(label, ""))
        rows.append(row)
    random = [r for r in rows if r[0].startswith("random")]
    rows = sorted([r for r in rows if r not in random], key=lambda r: -float(r[4].split(" ")[0])) + random
    header = ["strategy", "seeds", "top-1 % r5", "top-5 % r5", "top-1 % r10", "top-5 % r10", "s / round"]
    return markdown(header + (["pretraining fit s"] if extra is not None else []), rows)


def preset_label(name: str) -> str:
    return PRESETS.get(name, f"`{name}`")


# Presets whose shipped campaigns ran after a protocol's base folder, by protocol: preset -> its own folder.
MCF7_LATER = {"normal_ucb": "mcf7_v3_normal_ucb", "normal_gp_identity_ucb": "mcf7_v4_gp_identity_ucb"}
ONEIL_LATER = {"normal_ucb": "oneil_v3_normal_ucb", "normal_gp_identity_ucb": "oneil_v5_cells"}


def protocol_table(results: Path, base: str, later: dict[str, str], seeds: int | None = None) -> str:
    """Every preset of ``base``'s campaigns (a preset in ``later`` from its own folder; ``later``'s others appended),
    each from its first ``seeds`` campaigns (all by default)."""
    d = results / "discovery"
    names = sorted({p.stem.rsplit("_s", 1)[0] for p in (d / base / "runs").glob("*.csv")})
    names += [n for n in later if n not in names]
    rows = [(preset_label(n), campaigns([d / later.get(n, base)], n)[:seeds]) for n in names]
    return discovery_table(rows)


@table("discovery/mcf7_v2/runs/", "discovery/mcf7_v3_normal_ucb/runs/", "discovery/mcf7_v4_gp_identity_ucb/runs/")
def discovery_mcf7(results: Path) -> str:
    """RECOVER's MCF7 protocol, every campaign preset as shipped (`normal_ucb`: the run of its kappa schedule)."""
    return protocol_table(results, "mcf7_v2", MCF7_LATER)


@table("discovery/oneil_v2/runs/", "discovery/oneil_v3_normal_ucb/runs/", "discovery/oneil_v5_cells/runs/")
def discovery_oneil(results: Path) -> str:
    """O'Neil, all 39 cell lines as one pool, 1 % revealed + 10 rounds of 1 %; seeds 0-2."""
    return protocol_table(results, "oneil_v2", ONEIL_LATER, seeds=3)


@table(
    f"discovery/{PRETRAINED_DEFAULT}/runs/",
    "discovery/mcf7_pretrained_v4/runs/",
    "discovery/mcf7_pretrained_v2_ens/runs/",
    "discovery/mcf7_pretrained_more_ens/runs/",
    "discovery/mcf7_pretrained_v2_recover/runs/",
)
def discovery_pretrained(results: Path) -> str:
    """MCF7, pretrained on the other 54 ALMANAC cell lines."""
    d = results / "discovery"
    rows = [
        (
            preset_label("normal_gp_identity_ucb_pretrained"),
            campaigns([d / PRETRAINED_DEFAULT], "normal_gp_identity_ucb_pretrained"),
        ),
        (
            preset_label("scale_mixture_ucb_pretrained"),
            campaigns([d / "mcf7_pretrained_v4"], "scale_mixture_ucb_pretrained"),
        ),
        (
            "5 small nets + UCB, pretrained 3 epochs (`ensemble_ucb` + overrides)",
            campaigns([d / "mcf7_pretrained_v2_ens", d / "mcf7_pretrained_more_ens"], "ensemble_ucb"),
        ),
        (
            "RECOVER's ensemble + UCB, pretrained 3 epochs (`recover_ensemble_ucb` + overrides)",
            campaigns([d / "mcf7_pretrained_v2_recover"], "recover_ensemble_ucb"),
        ),
    ]
    pretrain = {}
    for label, runs in rows:
        fits = [float(run.loc[run["round"] == 0, "train_s"].iloc[0]) for run in runs]
        made = [f for f in fits if f > 1.0]  # under a second: a cached fit reused (loading only)
        pretrain[label] = f"{np.mean(made):.0f}" if made else ""
    return discovery_table(rows, pretrain)


MAIN_MODELS = ("normal_gp_identity", "recover_ensemble", "ensemble")
CELL_LINES = ("MCF7", "KM12", "UACC-257", "A498", "NCI-H322M", "SF268")


def pool_metric_campaigns(results: Path, preset: str) -> list[pd.DataFrame]:
    """The six-cell-line campaigns of ``preset`` that record the pool's metrics: ``uq_cells2/`` (the earlier presets
    re-run with them), else ``uq_cells/`` (the default's own runs have them)."""
    d = results / "discovery"
    return [run for cell in CELL_LINES for run in campaigns([d / "uq_cells2" / cell, d / "uq_cells" / cell], preset)]


@table("discovery/uq_cells/<cell line>/runs/")
def discovery_cells(results: Path) -> str:
    """The MCF7 protocol on MCF7 and the five ALMANAC cell lines with the most pairs; 5 seeds each."""
    presets = ("normal_gp_identity_ucb", "normal_ucb", "recover_ensemble_ucb", "ensemble_ucb")
    rows, means = [], {p: [] for p in presets}
    for cell in CELL_LINES:
        folder = results / "discovery/uq_cells" / cell
        runs = {p: campaigns([folder], p) for p in presets}
        top = {
            p: [float(r.loc[r["round"] == r["round"].max(), c].iloc[0]) for r in runs[p]]
            for p in presets
            for c in ("recall_top1pct",)
        }
        top5 = {
            p: [float(r.loc[r["round"] == r["round"].max(), "recall_top5pct"].iloc[0]) for r in runs[p]]
            for p in presets
        }
        train = {p: np.mean([r["train_s"].sum() for r in runs[p]]) for p in presets}
        for p in presets:
            means[p].append((np.mean(top[p]), np.mean(top5[p]), train[p]))
        rows.append(
            [cell, str(len(runs["normal_gp_identity_ucb"]))]
            + [" / ".join(f"{np.mean(x[p]):.3f}" for p in presets) for x in (top, top5)]
            + [" / ".join(f"{train[p]:.1f}" for p in presets)]
        )
    rows.append(
        ["mean", ""]
        + [" / ".join(f"{np.mean([m[i] for m in means[p]]):.3f}" for p in presets) for i in (0, 1)]
        + [" / ".join(f"{np.mean([m[2] for m in means[p]]):.1f}" for p in presets)]
    )
    header = [
        "cell line",
        "seeds",
        "top-1 % r10: default BNN / head-only BNN / RECOVER / small nets",
        "top-5 % r10: default / head-only / RECOVER / small nets",
    ]
    return markdown(header + ["training s per campaign: default / head-only / RECOVER / small nets"], rows)


@table(
    "discovery/uq_cells/paired_*_vs_*.csv",
    "discovery/cells/paired.csv",
    "discovery/oneil_more/paired_normal_ucb_vs_ensemble_ucb.csv",
    "discovery/oneil_v5_cells/paired_normal_gp_identity_ucb_vs_ensemble_ucb.csv",
    "discovery/mcf7_pretrained_v4/paired_vs_*.csv",
    f"discovery/{PRETRAINED_DEFAULT}/paired_vs_ensemble_ucb.csv",
)
def discovery_paired(results: Path) -> str:
    """Paired differences ``a - b`` by (cell line, seed): recall after the last round and pool metrics."""
    d = results / "discovery"
    comparisons = [
        (
            "six cell lines x 5 seeds",
            "normal_gp_identity_ucb",
            "ensemble_ucb",
            d / "uq_cells/paired_normal_gp_identity_ucb_vs_ensemble_ucb.csv",
        ),
        (
            "six cell lines x 5 seeds",
            "normal_gp_identity_ucb",
            "recover_ensemble_ucb",
            d / "uq_cells/paired_normal_gp_identity_ucb_vs_recover_ensemble_ucb.csv",
        ),
        (
            "O'Neil pool, 8 seeds",
            "normal_gp_identity_ucb",
            "ensemble_ucb",
            d / ONEIL_LATER["normal_gp_identity_ucb"] / "paired_normal_gp_identity_ucb_vs_ensemble_ucb.csv",
        ),
        (
            "six cell lines x 5 seeds",
            "normal_ucb",
            "recover_ensemble_ucb",
            d / "uq_cells/paired_normal_ucb_vs_recover_ensemble_ucb.csv",
        ),
        (
            "six cell lines x 5 seeds",
            "normal_ucb",
            "ensemble_ucb",
            d / "uq_cells/paired_normal_ucb_vs_ensemble_ucb.csv",
        ),
        ("six cell lines x 5 seeds", "normal_thompson", "recover_ensemble_ucb", d / "cells/paired.csv"),
        ("O'Neil pool, 8 seeds", "normal_ucb", "ensemble_ucb", d / "oneil_more/paired_normal_ucb_vs_ensemble_ucb.csv"),
        (
            "MCF7 pretrained, 10 seeds",
            "normal_gp_identity_ucb_pretrained",
            "ensemble_ucb (pretrained)",
            d / PRETRAINED_DEFAULT / "paired_vs_ensemble_ucb.csv",
        ),
        (
            "MCF7 pretrained, 10 seeds",
            "scale_mixture_ucb_pretrained",
            "ensemble_ucb (pretrained)",
            d / "mcf7_pretrained_v4/paired_vs_ensemble_ucb.csv",
        ),
        (
            "MCF7 pretrained, 5 seeds",
            "scale_mixture_ucb_pretrained",
            "recover_ensemble_ucb (pretrained)",
            d / "mcf7_pretrained_v4/paired_vs_recover_ensemble_ucb.csv",
        ),
    ]
    rows = []
    for label, a, b, path in comparisons:
        frame = pd.read_csv(path)
        pool = [paired(frame[c]) if c in frame else "–" for c in ("d_sd_error", "d_pool_r2")]
        rows.append(
            [label, f"`{a}` - `{b.split(' ')[0]}`{' ' + b.split(' ', 1)[1] if ' ' in b else ''}", str(len(frame))]
            + [f"{frame['a_top1'].mean():.3f} / {frame['b_top1'].mean():.3f}", paired(frame["d_top1"])]
            + [f"{frame['a_top5'].mean():.3f} / {frame['b_top5'].mean():.3f}", paired(frame["d_top5"])]
            + pool
        )
    header = ["pools", "a - b", "pairs", "top-1 % a / b", "top-1 % a - b", "top-5 % a / b", "top-5 % a - b"]
    return markdown(header + ["pool `sd_error_spearman` a - b", "pool r2 a - b"], rows)


@table("discovery/uq_cells2/<cell line>/runs/", "discovery/uq_cells/<cell line>/runs/")
def discovery_pool_calibration(results: Path) -> str:
    """Model metrics on the unrevealed pool during the six-cell-line campaigns (mean over rounds 1-10)."""
    rows = []
    for preset in ("normal_gp_identity_ucb", "normal_ucb", "recover_ensemble_ucb", "ensemble_ucb"):
        runs = pool_metric_campaigns(results, preset)
        rounds = pd.concat([run[run["round"] >= 1] for run in runs])
        rows.append(
            [preset_label(preset), str(len(runs))]
            + [f"{rounds[c].mean():.3f}" for c in ("spearman", "nll", "coverage_90", "sd_error_spearman")]
            + [f"{rounds[c].mean():.1f}" for c in ("epistemic_sd", "aleatoric_sd")]
        )
    header = ["preset", "campaigns", "pool Spearman", "pool NLL", "pool 90 % coverage", "pool `sd_error_spearman`"]
    return markdown(header + ["epistemic sd", "aleatoric sd"], rows)


# --- speed ------------------------------------------------------------------------------------------------


def quantity(frame: pd.DataFrame, measurement: str, name: str) -> pd.Series:
    return frame[(frame["measurement"] == measurement) & (frame["quantity"] == name)].iloc[0]


@table("speed/train_after.csv")
def speed_training(results: Path) -> str:
    """Training throughput (1 thread): examples per second and per GFLOP of the machine's measured GEMM rate."""
    frame = pd.read_csv(results / "speed/train_after.csv")
    rows = []
    for measurement in dict.fromkeys(frame["measurement"]):
        if not measurement.startswith(("train_", "fit_")):
            continue
        rate = quantity(frame, measurement, "examples_per_s")
        per_gflop = quantity(frame, measurement, "examples_per_gflop")["mean"]
        fit_s = quantity(frame, measurement, "fit_s")["mean"]
        rows.append(
            [
                f"`{measurement}`",
                f"{rate['mean']:,.0f}",
                f"{per_gflop:.0f}",
                f"{fit_s:.1f}",
                f"{rate['peak_rss_mb']:.0f}",
            ]
        )
    return markdown(["measurement", "examples / s", "examples / GFLOP", "fit s", "peak RSS (MB)"], rows)


@table("speed/rounds.csv", "speed/train_after.csv")
def speed_rounds(results: Path) -> str:
    """One campaign round (fit, score S = 100, acquire), 1 thread, mean ± sd over seeds 0-2."""
    rounds = pd.read_csv(results / "speed/rounds.csv")
    # the side-by-side run of the current default (2026-12-07, the one-time optimiser import paid before timing)
    rounds = rounds[
        rounds["code"].astype(str).str.startswith("2026-12-07 (bd44b94)")
        & rounds["measurement"].str.startswith("round_")
    ]
    train = pd.read_csv(results / "speed/train_after.csv")
    rows = []
    labels = {
        "round_gp_identity": "default BNN (`normal_gp_identity_ucb`'s model), ALMANAC MCF7, 330 revealed, 1,146 scored",
        "round_bnn": "head-only BNN (`normal`), same",
        "round_ensemble": "5 small nets (`ensemble`), same",
        "round_recover_ensemble": "RECOVER's ensemble (`recover_ensemble`), same",
        "round_bnn_almanac_all": "head-only BNN (`normal`), ALMANAC all cell lines, 741 revealed, 73,398 scored (2026-11-30)",
    }
    for source, measurement in [(rounds, m) for m in dict.fromkeys(rounds["measurement"])] + [
        (train, "round_bnn_almanac_all")
    ]:
        cells = [
            pm(quantity(source, measurement, q)["mean"], quantity(source, measurement, q)["sd"], d)
            for q, d in (("train_s", 2), ("score_s", 3), ("acquire_s", 4), ("round_s", 2))
        ]
        rows.append([labels.get(measurement, f"`{measurement}`"), *cells])
    return markdown(["round", "train s", "score s", "acquire s", "round s"], rows)


@table("speed/rounds.csv", "speed/scoring_check.csv", "speed/speed_gpu.csv")
def speed_scoring(results: Path) -> str:
    """Posterior scoring (default model, S = 100): CPU numbers of the current scoring code, GPU of a lent H100."""
    rounds = pd.read_csv(results / "speed/rounds.csv")
    check = pd.read_csv(results / "speed/scoring_check.csv")
    gpu = pd.read_csv(results / "speed/speed_gpu.csv")
    cpu_through = rounds[rounds["code"].astype(str).str.contains("5ac3de6")]
    cpu_space = check[check["code"] == "now idle"]
    gpu = gpu[gpu["note"].astype(str).str.contains("final code")]

    def row(label: str, date: str, frame: pd.DataFrame, measurement: str, copy: bool) -> list[str]:
        score = quantity(frame, measurement, "score_s")
        cells = [
            label,
            date,
            f"{int(score['n_candidates']):,}",
            str(int(score["threads"])),
            pm(score["mean"], score["sd"]),
        ]
        if copy:
            to_cpu = quantity(frame, measurement, "score_to_cpu_s")
            cells.append(pm(to_cpu["mean"], to_cpu["sd"]))
        else:
            cells.append("")
        rate = frame[(frame["measurement"] == measurement) & (frame["quantity"] == "cand_samples_per_s")]
        cells.append(scientific(rate["mean"].iloc[0]) if len(rate) else "")
        return cells

    rows = [
        row("CPU, 20,000 random ALMANAC candidates", "2026-11-30", cpu_through, "throughput_head", False),
        row("CPU, whole ALMANAC space", "2026-11-30", cpu_space, "space_head", False),
        row("H100, 20,000 random ALMANAC candidates", "2026-11-25", gpu, "throughput_head", False),
        row("H100, whole ALMANAC space", "2026-11-25", gpu, "space_head", True),
        row("H100, synthetic 300 drugs x 23 cell lines", "2026-11-25", gpu, "space_million", True),
    ]
    header = ["where, candidates", "date", "candidates", "threads", "score s", "+ copy to host s"]
    return markdown(header + ["candidates x samples / s"], rows)


@table("scoring/scoring.csv")
def scoring_library(results: Path) -> str:
    """Whole-library scoring (``scripts/benchmark_scoring.py``): in memory against streamed, Ray workers."""
    frame = pd.read_csv(results / "scoring/scoring.csv")
    plates = dict(zip(frame["measurement"], frame["plate"]))
    # The benchmark appends rows in the order they finish; the table reads by path, then by size.
    group = (
        frame["measurement"]
        .astype(str)
        .str.split("_", n=1)
        .str[0]
        .map({"memory": 0, "stream": 0, "rule": 1, "ray": 2, "recommend": 3})
    )
    frame = frame.assign(_group=group, _size=frame["n_candidates"].where(group == 0, 0))
    frame = frame.sort_values(["_group", "_size"], kind="stable")
    rows = []
    for _, r in frame.iterrows():
        kind = str(r["measurement"]).split("_", 1)[0]
        label = {
            "memory": "in memory (all (S, N) samples)",
            "stream": "streamed",
            "rule": f"streamed, {r['rule']}",
            "ray": f"Ray, {str(r['measurement']).split('_')[1]} worker(s)",
            "recommend": "`recover-recommend` as shipped",
        }[kind]
        twin = str(r["measurement"]).replace("stream", "memory")
        same = (
            "yes"
            if kind == "stream" and plates.get(twin) == r["plate"]
            else ("no" if twin in plates and kind == "stream" else "")
        )
        rows.append(
            [label, f"{int(r['n_candidates']):,}", f"{r['wall_s']:.0f}", scientific(r["cand_samples_per_s"]),
             f"{r['peak_rss_mb']:,.0f}", same]
        )  # fmt: skip
    header = ["path", "candidates", "wall s", "candidates x samples / s", "peak RSS MB", "same plate as in memory"]
    return markdown(header, rows)


# --- README -----------------------------------------------------------------------------------------------


@table(
    "accuracy/test_sets/summary*.csv",
    "accuracy/oneil_bliss_*.csv",
    "discovery/mcf7_v2/, mcf7_v4_gp_identity_ucb/, uq_cells/, uq_cells2/, oneil_v2/, oneil_more/, oneil_v5_cells/, mcf7_pretrained_*/",
)
def headline(results: Path) -> str:
    """The README's table: the default BNN, RECOVER's published ensemble and the 5-small-net ensemble."""
    acc, d = results / "accuracy", results / "discovery"
    rows = []
    for label, path, err in (
        ("ALMANAC MCF7, new pairs: Spearman (8 test sets x 3 seeds)", acc / "test_sets/summary.csv", "sem"),
        ("ALMANAC MCF7, unseen drugs: Spearman (8 x 3)", acc / "test_sets/summary_unseen_drug.csv", "sem"),
        ("O'Neil Bliss, new pairs: Spearman (3 seeds)", acc / "oneil_bliss_random.csv", "sd"),
        ("O'Neil Bliss, unseen drugs: Spearman (3 seeds)", acc / "oneil_bliss_unseen_drug.csv", "sd"),
    ):
        frame = pd.read_csv(path).set_index("experiment")
        rows.append([label] + [pm(frame.loc[m, "spearman_mean"], frame.loc[m, f"spearman_{err}"]) for m in MAIN_MODELS])
    frame = pd.read_csv(acc / "test_sets/summary.csv").set_index("experiment")
    rows.append(
        ["ALMANAC MCF7, new pairs: 90 % coverage, aim 0.90 (8 x 3)"]
        + [pm(frame.loc[m, "coverage_90_mean"], frame.loc[m, "coverage_90_sem"]) for m in MAIN_MODELS]
    )
    novelty = pd.read_csv(acc / "novelty/oneil_bliss_runs.csv")
    novelty = novelty.drop_duplicates(subset=["experiment", "test_seed", "seed"], keep="last")
    rows.append(
        ["O'Neil, unseen drugs: `novelty_auroc`, 0.5 = blind, > 0.5 = grows for new drugs (4 test sets)"]
        + [pm(*novelty.loc[novelty["experiment"] == m, "novelty_auroc"].agg(["mean", "sem"]), 2) for m in MAIN_MODELS]
    )

    def recall(folders: list[Path], preset: str) -> str:
        values = [
            float(r.loc[r["round"] == r["round"].max(), "recall_top1pct"].iloc[0]) for r in campaigns(folders, preset)
        ]
        return f"{np.mean(values):.3f} ± {pd.Series(values).std():.3f} ({len(values)})"

    def cells_recall(preset: str) -> str:
        values = [
            float(r.loc[r["round"] == r["round"].max(), "recall_top1pct"].iloc[0])
            for cell in CELL_LINES
            for r in campaigns([d / "uq_cells" / cell], preset)
        ]
        return f"{np.mean(values):.3f} ({len(values)})"

    rows.append(
        ["Discovery, MCF7: top-1 % recall after 330 of 1,476 (seeds)"]
        + [
            recall([d / MCF7_LATER["normal_gp_identity_ucb"]], "normal_gp_identity_ucb"),
            recall([d / "mcf7_v2"], "recover_ensemble_ucb"),
            recall([d / "mcf7_v2"], "ensemble_ucb"),
        ]
    )
    rows.append(
        ["Discovery, six ALMANAC cell lines: top-1 % recall (campaigns)"]
        + [cells_recall(p) for p in ("normal_gp_identity_ucb", "recover_ensemble_ucb", "ensemble_ucb")]
    )
    rows.append(
        ["Discovery, O'Neil pool: top-1 % recall after 11 % (seeds)"]
        + [
            recall([d / ONEIL_LATER["normal_gp_identity_ucb"]], "normal_gp_identity_ucb"),
            recall([d / "oneil_v2"], "recover_ensemble_ucb"),
            recall([d / "oneil_v2", d / "oneil_more"], "ensemble_ucb"),
        ]
    )
    rows.append(
        [
            "Discovery, MCF7 pretrained on 54 other cell lines (BNN: `normal_gp_identity_ucb_pretrained`; ensembles: "
            "a 3-epoch pretraining fit): top-1 % (seeds)"
        ]
        + [
            recall([d / PRETRAINED_DEFAULT], "normal_gp_identity_ucb_pretrained"),
            recall([d / "mcf7_pretrained_v2_recover"], "recover_ensemble_ucb"),
            recall([d / "mcf7_pretrained_v2_ens", d / "mcf7_pretrained_more_ens"], "ensemble_ucb"),
        ]
    )
    calibration = [
        pd.concat([r[r["round"] >= 1] for r in pool_metric_campaigns(results, p)])
        for p in ("normal_gp_identity_ucb", "recover_ensemble_ucb", "ensemble_ucb")
    ]
    rows.append(
        ["Six-cell-line campaigns: 90 % coverage of the unrevealed pool, aim 0.90 (30 campaigns, rounds 1-10)"]
        + [f"{rounds['coverage_90'].mean():.3f}" for rounds in calibration]
    )
    # accuracy, then discovery, then the three rows about the uncertainty itself
    rows = rows[:4] + rows[6:10] + [rows[4], rows[10], rows[5]]
    header = ["protocol", "default BNN (`normal_gp_identity` / `_ucb`)", "RECOVER's ensemble", "5 small nets"]
    return markdown(header, rows)


# --- the docs ---------------------------------------------------------------------------------------------


def doc_files(root: Path) -> list[Path]:
    return [p for pattern in DOC_FILES for p in sorted(root.glob(pattern)) if p.is_file()]


def render(text: str, results: Path, cache: dict[str, str]) -> tuple[str, list[str]]:
    """``text`` with every marked table regenerated, and the names of the tables that changed."""
    changed: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in TABLES:
            raise KeyError(f"unknown table '{name}' (known: {', '.join(sorted(TABLES))})")
        if name not in cache:
            cache[name] = TABLES[name](results)
        if match["body"] != cache[name]:
            changed.append(name)
        return match.group(1) + cache[name] + match.group(4)

    new = MARKER.sub(replace, text)
    opened, closed = len(OPENING.findall(text)), len(CLOSING.findall(text))
    if opened != closed or opened != len(MARKER.findall(text)):
        raise ValueError("unbalanced table markers: every <!-- table:NAME --> needs its own <!-- /table -->")
    return new, changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (README.md, docs/)")
    parser.add_argument("--results", type=Path, default=None, help="result files (default <root>/benchmarks/results)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is out of date")
    parser.add_argument("--list", action="store_true", help="list the tables and the result files they read")
    args = parser.parse_args(argv)
    if args.list:
        for name, sources in SOURCES.items():
            print(f"{name}: {', '.join(sources)}")
        return 0
    results = args.results or args.root / "benchmarks" / "results"
    cache: dict[str, str] = {}
    stale = []
    for path in doc_files(args.root):
        text = path.read_text(encoding="utf-8")
        try:
            new, changed = render(text, results, cache)
        except (KeyError, ValueError) as error:
            print(f"{path.relative_to(args.root)}: {error}", file=sys.stderr)
            return 2
        if changed:
            stale.append(f"{path.relative_to(args.root)}: {', '.join(changed)}")
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if stale:
        verb = "out of date (run python scripts/benchmark_tables.py)" if args.check else "regenerated"
        print(f"tables {verb}:\n  " + "\n  ".join(stale), file=sys.stderr if args.check else sys.stdout)
        return 1 if args.check else 0
    print(f"every table is up to date ({len(cache)} tables)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
