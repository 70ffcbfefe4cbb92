"""Discovery benchmark: simulated campaigns on a measured screen (RECOVER's in-silico protocol).

Protocols (``--protocol``):

* ``mcf7``: ALMANAC ComboScore in MCF7 (1,476 experiments), 30 random initial, 10 rounds of q = 30;
* ``oneil``: O'Neil / DrugComb Bliss, all 39 cell lines as one pool (22,737 experiments), 1 % initial, 10
  rounds of q = 1 % (227).

Runs ``recover_pyro.campaign.run_campaign`` in-process for every (experiment, seed), one at a time and
single-threaded, keeps each campaign's ``rounds.csv`` under ``<results>/<tag>/runs/<experiment>_s<seed>.csv``
and its ``rounds.json`` (the campaign's settings, acquisition, resolved config fingerprint and rows) beside it
as ``<experiment>_s<seed>.rounds.json`` (finished runs are skipped when the script is rerun, so a killed
benchmark continues where it stopped) and aggregates:

* ``<results>/<tag>/per_round.csv``: per experiment and round, mean and sd over seeds of top-1 % / top-5 %
  recall, ``n_measured`` and wall time (train / score / acquire);
* ``<results>/<tag>/final.csv``: recall after 5 and after the last round (mean, sd, seeds), enrichment over
  random at 5 % and 10 % of the pool explored, and mean wall time per round;
* a recall-vs-experiments plot (mean +/- sd band per experiment, random for reference);
* ``<results>/<tag>/manifest.json``: commit, command, machine, times and files written
  (:func:`recover_pyro.records.manifest.recording`; an earlier manifest of the tag is kept under ``earlier``).

Enrichment at a fraction ``x`` explored = top-1 % recall (linearly interpolated at ``n_measured = x N``) / ``x``,
the recall random acquisition has in expectation; 1 = no better than random
(:func:`recover_pyro.metrics.enrichment_over_random`).

Pretraining (``--override data.cell_lines=null campaign.pretrain=other_cell_lines``): ``--pretrain-override``
sets the pretraining fit's own settings (the library's ``pretrain_overrides``), and each pretrained state is
cached on disk (``--pretrain-cache``, keyed by the pretraining model's resolved config and seed), so that
experiments differing only in the acquisition rule reuse one pretraining fit: the campaign then gives exactly
the rows it would give with its own fit (``run_campaign(pretrained=...)``), but round 0's ``train_s`` is the
cached fit's time.

Campaign run folders (tables and the per-round checkpoint) go to ``--runs-dir``
(``<tmp>/recover_pyro_discovery/<tag>/<experiment>_s<seed>`` by default, never under ``benchmarks/``); a
campaign killed mid-way resumes there from its last finished round when the script is rerun.

Examples::

    python scripts/benchmark_discovery.py --tag mcf7 --seeds 0 1 2 3 4 \\
        --experiments random ensemble_ucb normal_ucb laplace_ucb
    python scripts/benchmark_discovery.py --tag mcf7_pretrain --seeds 0 1 2 --experiments laplace_ucb \\
        --override data.cell_lines=null campaign.pretrain=other_cell_lines \\
        --pretrain-override inference.epochs=3 inference.lr=0.003
    python scripts/benchmark_discovery.py --tag mcf7 --aggregate-only --plot docs/img/discovery_mcf7.png
    python scripts/benchmark_discovery.py --protocol oneil --tag oneil --seeds 0 1 2 \\
        --experiments random ensemble_ucb scale_mixture_ucb
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: the benchmark machine's cores are shared

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from recover_pyro.acquisition import UCB
from recover_pyro.campaign import TIME_COLUMNS, CampaignConfig, run_campaign
from recover_pyro.cli.builders import CONFIG_DIR, build_acquisition, build_features, build_screen, model_factory
from recover_pyro.cli.campaign import model_label, pretrain_model_factory
from recover_pyro.cli.run_config import config_fingerprint
from recover_pyro.metrics import enrichment_over_random
from recover_pyro.records.files import atomic_write_csv, atomic_write_text
from recover_pyro.records.manifest import command_line, machine_description, recording

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "discovery"
RECALLS = ("recall_top1pct", "recall_top5pct")
# Model settings that only BNN experiments understand (kept off the baselines' configs).
BNN_PREFIXES = ("inference.", "prior.", "guide.", "model.bayesian_layers", "model.noise", "acquisition.kappa")
# Base overrides and plot title of each protocol.
PROTOCOLS = {
    "mcf7": (["data=almanac", "campaign=almanac_mcf7"], "ALMANAC MCF7 discovery ({tag}): 30 initial + 10 x 30"),
    "oneil": (
        ["data=oneil", "campaign=oneil_all", "acquisition.q=227"],
        "O'Neil Bliss, 39 cell lines as one pool ({tag}): 227 initial + 10 x 227",
    ),
}
ENRICHMENT_AT = (0.05, 0.10)

log = logging.getLogger("benchmark_discovery")


def machine() -> str:
    """``<CPU model name>, <n> cores, torch <version>[, <GPU>], <date>`` for the report."""
    m = machine_description()
    gpu = f", {m['gpu']}" if m["gpu"] else ""
    return f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}{gpu}, {time.strftime('%Y-%m-%d %H:%M %Z')}"


def is_ucb(acquisition_cfg) -> bool:
    """Whether a composed ``acquisition`` config builds a UCB rule (its ``_target_`` is :class:`UCB` or a
    subclass; a target that cannot be imported here counts by its name)."""
    target = str(acquisition_cfg.get("_target_", ""))
    try:
        return issubclass(get_class(target), UCB)
    except Exception:  # not importable (yet): judge by name
        return target.endswith(".UCB")


def is_bnn(experiment: str) -> bool:
    return experiment not in (
        "ensemble_ucb",
        "ensemble",
        "recover_ensemble_ucb",
        "recover_ensemble",
        "deterministic",
        "mc_dropout",
    )


def compose_config(
    protocol: str, experiment: str, seed: int, common: list[str], bnn: list[str], pretrain: list[str] = ()
):
    """Hydra config of one campaign: protocol + experiment + overrides (+ the pretraining fit's settings)."""
    overrides = [
        *PROTOCOLS[protocol][0],
        f"+experiment={experiment}",
        f"seed={seed}",
        "campaign.progress=false",
        *common,
    ]
    if pretrain:
        overrides.append(f"pretrain_overrides={json.dumps(list(pretrain))}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        if is_bnn(experiment):
            # kappa is a UCB setting: greedy / Thompson / random configs have no such key. Decided by the
            # composed acquisition's class, not the preset's name (scale_mixture_ucb_pretrained is UCB too).
            ucb = is_ucb(compose(config_name="campaign", overrides=overrides).acquisition)
            dropped = [o for o in bnn if not ucb and o.startswith("acquisition.kappa")]
            if dropped:
                log.info("%s: not a UCB preset, %s not applied", experiment, " ".join(dropped))
            overrides += [o for o in bnn if o not in dropped]
        return compose(config_name="campaign", overrides=overrides)


class ScreenCache:
    """Screens and features by data config (loading and featurising ALMANAC is the slow part)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple] = {}

    def get(self, cfg):
        key = repr((cfg.data, cfg.features))
        if key not in self._cache:
            screen = build_screen(cfg)
            self._cache[key] = (screen, build_features(cfg, screen))
        return self._cache[key]


def pretrain_key(cfg) -> str:
    """Identifies a pretraining fit: the pretraining model's resolved config, data, features, seed and what it
    is fitted on (``campaign.pretrain`` relative to the pool ``campaign.pool_cell_lines``: a fit for one pool
    includes every other cell line's experiments, so it must never be reused for another pool)."""
    merged = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(cfg.get("pretrain_overrides") or [])))
    campaign = OmegaConf.to_container(merged.campaign, resolve=True)
    text = json.dumps(
        {k: OmegaConf.to_container(merged[k], resolve=True) for k in ("model", "data", "features")}
        | {"seed": merged.seed}
        | {k: campaign.get(k) for k in ("pretrain", "pool_cell_lines")},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_one(
    protocol: str,
    experiment: str,
    seed: int,
    common: list[str],
    bnn: list[str],
    cache: ScreenCache,
    out_csv: Path,
    pretrain: list[str],
    pretrain_cache: Path,
    run_dir: Path,
) -> pd.DataFrame:
    """One campaign in ``run_dir`` (resumed from its checkpoint if one is there); its per-round rows are
    written to ``out_csv`` (with experiment and seed columns)."""
    cfg = compose_config(protocol, experiment, seed, common, bnn, pretrain)
    screen, features = cache.get(cfg)
    acquisition = build_acquisition(cfg)
    config: CampaignConfig = instantiate(cfg.campaign, _convert_="all")
    cached, pretrained = None, None
    if config.pretrain != "none":
        cached = pretrain_cache / f"{pretrain_key(cfg)}.pt"
        if cached.exists():
            pretrained = torch.load(cached, map_location="cpu", weights_only=True)
    result = run_campaign(
        screen,
        features,
        model_factory(cfg, features),
        acquisition,
        config,
        run_dir,
        score=cfg.data.score,
        resume=True,
        pretrain_factory=pretrain_model_factory(cfg, features),
        pretrained=pretrained,
        fingerprint=config_fingerprint(cfg),
        model_name=model_label(cfg),
    )
    if cached is not None and pretrained is None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        torch.save(result.pretrained, tmp)
        tmp.replace(cached)  # atomic: parallel benchmark processes may share the cache
    rounds = result.rounds.assign(experiment=experiment, seed=seed)
    # The campaign's rounds.json (settings, acquisition, config fingerprint, rows) is kept beside its rows: the
    # run folder lives outside the repository. The CSV comes last: its existence marks the campaign done.
    atomic_write_text(rounds_json_path(out_csv), result.rounds_json.read_text(encoding="utf-8"))
    atomic_write_csv(out_csv, rounds)
    return rounds


def rounds_json_path(out_csv: Path) -> Path:
    """Where a campaign's ``rounds.json`` is kept: ``<experiment>_s<seed>.rounds.json`` beside its CSV."""
    return out_csv.with_suffix(".rounds.json")


def load_runs(tag_dir: Path) -> pd.DataFrame:
    files = sorted((tag_dir / "runs").glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no finished campaigns under {tag_dir / 'runs'}")
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def enrichment(run: pd.DataFrame, fraction: float, column: str = RECALLS[0]) -> float:
    """Enrichment over random of one campaign's ``column`` at ``fraction`` of the pool explored."""
    pool = round(run["n_measured"].iloc[0] / run["fraction_explored"].iloc[0])
    return enrichment_over_random(run["n_measured"], run[column], pool, fraction)


def aggregate(runs: pd.DataFrame, mid_round: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-round mean / sd over seeds, and the table after ``mid_round`` and the last round."""
    columns = ["n_measured", *RECALLS, *TIME_COLUMNS]
    grouped = runs.groupby(["experiment", "round"])[columns]
    per_round = grouped.mean().add_suffix("_mean").join(grouped.std().add_suffix("_sd"))
    per_round["n_seeds"] = grouped.size()
    per_round = per_round.reset_index()
    rows = []
    for experiment, df in runs.groupby("experiment"):
        last = int(df["round"].max())
        acq_rounds = df[df["round"] >= 1]
        row = {"experiment": experiment, "n_seeds": df["seed"].nunique(), "last_round": last}
        for r, name in ((mid_round, f"r{mid_round}"), (last, "final")):
            at = df[df["round"] == r]
            for c in RECALLS:
                row[f"{c}_{name}_mean"], row[f"{c}_{name}_sd"] = at[c].mean(), at[c].std()
        for x in ENRICHMENT_AT:
            values = [enrichment(run.sort_values("round"), x) for _, run in df.groupby("seed")]
            name = f"enrich_{x * 100:g}pct"
            row[f"{name}_mean"], row[f"{name}_sd"] = np.mean(values), pd.Series(values).std()
        for c in TIME_COLUMNS:
            row[f"{c}_per_round"] = acq_rounds[c].mean()
        row["total_s_per_round"] = sum(row[f"{c}_per_round"] for c in TIME_COLUMNS)
        row["round0_train_s"] = df.loc[df["round"] == 0, "train_s"].mean()  # pretraining, if any
        rows.append(row)
    final = pd.DataFrame(rows).sort_values(f"{RECALLS[0]}_final_mean", ascending=False)
    return per_round, final


MODEL_COLOURS = {
    "normal": "tab:blue",
    "laplace": "tab:orange",
    "scale_mixture": "tab:green",
    "sparse_dropout": "tab:purple",
    "ensemble": "tab:red",
    "random": "black",
}
ACQUISITION_LINES = {"ucb": "-", "greedy": ":", "thompson": "-.", "random": "--"}


def line_style(experiment: str) -> dict[str, str]:
    """Colour by model (prior), line style by acquisition, so that 14 curves stay readable."""
    model, _, acquisition = experiment.rpartition("_")
    model, acquisition = (model or experiment), (acquisition if model else "random")
    return {"color": MODEL_COLOURS.get(model, "grey"), "linestyle": ACQUISITION_LINES.get(acquisition, "-")}


def plot(per_round: pd.DataFrame, path: Path, title: str) -> None:
    """Top-1 % and top-5 % recall against experiments done; mean line, +/- sd band, one colour each."""
    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2, sharey=True)
    order = per_round.groupby("experiment")[f"{RECALLS[0]}_mean"].max().sort_values(ascending=False).index
    for ax, column in zip(axes, RECALLS):
        for experiment in order:
            df = per_round[per_round["experiment"] == experiment]
            n, m, s = df["n_measured_mean"], df[f"{column}_mean"], df[f"{column}_sd"].fillna(0.0)
            (line,) = ax.plot(n, m, marker=".", label=experiment, **line_style(experiment))
            ax.fill_between(n, m - s, m + s, alpha=0.12, color=line.get_color())
        ax.set(
            xlabel="experiments done",
            title=column.replace("recall_top", "top ").replace("pct", " % recall"),
            ylim=(0, 1.02),
        )
    axes[0].set_ylabel("recall (mean +/- sd over seeds)")
    axes[1].legend(loc="upper left", fontsize="x-small", ncol=2)
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=80)


def print_table(final: pd.DataFrame) -> None:
    mid = [c for c in final.columns if c.endswith("_mean") and "_r" in c and "final" not in c]
    print(
        f"{'experiment':<24}{'seeds':>6}  "
        + "  ".join(f"{c.replace('_mean', ''):>22}" for c in [*mid, *(f"{r}_final_mean" for r in RECALLS)])
        + "   train_s  score_s  acq_s"
    )
    for _, r in final.iterrows():
        cells = [
            f"{r[c]:.3f} +/- {r[c.replace('_mean', '_sd')]:.3f}" for c in [*mid, *(f"{x}_final_mean" for x in RECALLS)]
        ]
        print(
            f"{r['experiment']:<24}{int(r['n_seeds']):>6}  "
            + "  ".join(f"{c:>22}" for c in cells)
            + f"  {r['train_s_per_round']:8.2f} {r['score_s_per_round']:8.3f} {r['acquire_s_per_round']:6.3f}"
        )


def markdown_table(final: pd.DataFrame) -> str:
    """The final table as Markdown (recall mean +/- sd after round 5 and the last round, seconds per round)."""
    enrich = [f"enrich_{x * 100:g}pct" for x in ENRICHMENT_AT]
    lines = [
        "| experiment | seeds | top-1 % r5 | top-5 % r5 | top-1 % r10 | top-5 % r10 | "
        + " | ".join(f"enrich. {x * 100:g} %" for x in ENRICHMENT_AT)
        + " | train s | score s | acquire s | total s/round |",
        "|" + "---|" * (10 + len(enrich)),
    ]
    last = final["last_round"].max()
    for _, r in final.iterrows():
        cells = [f"{r[f'{c}_{w}_mean']:.3f} ± {r[f'{c}_{w}_sd']:.3f}" for w in ("r5", "final") for c in RECALLS]
        cells += [f"{r[f'{e}_mean']:.2f} ± {r[f'{e}_sd']:.2f}" for e in enrich]
        # A campaign stopped early reports its last round in the r10 columns: say so.
        name = r["experiment"] + ("" if r["last_round"] == last else f" (stopped after round {r['last_round']})")
        lines.append(
            f"| {name} | {int(r['n_seeds'])} | "
            + " | ".join(cells)
            + f" | {r['train_s_per_round']:.2f} | {r['score_s_per_round']:.3f} "
            f"| {r['acquire_s_per_round']:.4f} | {r['total_s_per_round']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", required=True, help="results sub-folder, e.g. mcf7 or mcf7_pretrain")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="mcf7")
    parser.add_argument("--experiments", nargs="*", default=[], help="conf/experiment names")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides for every campaign")
    parser.add_argument(
        "--bnn-override",
        nargs="*",
        default=[],
        help="Hydra overrides for BNN campaigns only (e.g. inference.epochs=100)",
    )
    parser.add_argument(
        "--pretrain-override",
        nargs="*",
        default=[],
        help="settings of the pretraining fit only (pretrain_overrides), e.g. inference.epochs=3",
    )
    parser.add_argument(
        "--pretrain-cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "recover_pyro_pretrain",
        help="folder of cached pretrained states (outside the repository)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "recover_pyro_discovery",
        help="campaign run folders (checkpoints; killed campaigns resume from them)",
    )
    parser.add_argument("--aggregate-only", action="store_true")
    parser.add_argument(
        "--random-from",
        default=None,
        help="take the random campaigns of this tag (their picks do not depend on the model or "
        "its pretraining, so they are the same campaigns)",
    )
    parser.add_argument("--plot", type=Path, default=None, help="PNG path (default: none)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    bad = [o for o in args.bnn_override if not o.lstrip("+~").startswith(BNN_PREFIXES)]
    if bad:
        parser.error(f"--bnn-override only takes {BNN_PREFIXES} settings, got {bad}")

    tag_dir = args.results / args.tag
    if args.aggregate_only and not (tag_dir / "runs").is_dir():
        parser.error(f"--aggregate-only: no campaigns under {tag_dir / 'runs'}")
    with recording(
        tag_dir,
        command=command_line(__file__, sys.argv[1:] if argv is None else argv),
        description=f"discovery campaigns ({args.protocol} protocol, tag {args.tag})",
        plot=None if args.plot is None else str(args.plot),
    ):
        run_and_aggregate(args, tag_dir)


def run_and_aggregate(args: argparse.Namespace, tag_dir: Path) -> None:
    """Run the missing campaigns of ``args`` into ``tag_dir/runs`` and write the aggregate tables (and plot)."""
    print(f"machine: {machine()}")
    if not args.aggregate_only:
        cache = ScreenCache()
        for seed in args.seeds:  # seeds outermost: every experiment gets seed 0 before any gets seed 1
            for experiment in args.experiments:
                out_csv = tag_dir / "runs" / f"{experiment}_s{seed}.csv"
                if out_csv.exists():
                    continue
                start = time.perf_counter()
                pretrain = [
                    o for o in args.pretrain_override if o.startswith("inference.") == is_bnn(experiment)
                ]  # BNN vs baseline settings
                rounds = run_one(
                    args.protocol,
                    experiment,
                    seed,
                    args.override,
                    args.bnn_override,
                    cache,
                    out_csv,
                    pretrain,
                    args.pretrain_cache,
                    args.runs_dir / args.tag / f"{experiment}_s{seed}",
                )
                last = rounds.iloc[-1]
                print(
                    f"{experiment} seed {seed}: top1 {last['recall_top1pct']:.3f} top5 "
                    f"{last['recall_top5pct']:.3f} after {int(last['n_measured'])} "
                    f"({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
    runs = load_runs(tag_dir)
    if args.random_from:
        other = load_runs(args.results / args.random_from)
        runs = pd.concat(
            [runs[runs["experiment"] != "random"], other[other["experiment"] == "random"]], ignore_index=True
        )
    per_round, final = aggregate(runs)
    per_round.to_csv(tag_dir / "per_round.csv", index=False, float_format="%.4g")
    final.to_csv(tag_dir / "final.csv", index=False, float_format="%.4g")
    print_table(final)
    print(markdown_table(final))
    if args.plot is not None:
        plot(per_round, args.plot, PROTOCOLS[args.protocol][1].format(tag=args.tag))
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
