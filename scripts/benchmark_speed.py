"""Speed / memory benchmark: campaign round, posterior scoring throughput, whole ALMANAC candidate space.

    python scripts/benchmark_speed.py --out benchmarks/results/speed/speed.csv
    python scripts/benchmark_speed.py --only space_head --threads-space 2     # one measurement
    python scripts/benchmark_speed.py --device cuda --out benchmarks/results/speed/speed_gpu.csv
    python scripts/benchmark_speed.py --only train --out benchmarks/results/speed/train.csv   # all training rows
    python scripts/benchmark_speed.py --table benchmarks/results/speed/train.csv                # as markdown

Every measurement runs in a fresh subprocess (``--measure NAME``) so its peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which sees torch's allocations, unlike tracemalloc) is its own.
Timings are wall clock (``time.perf_counter``) after one untimed warm-up call where noted, and for scoring
also process CPU time over all threads (``score_cpu_s``, insensitive to other processes on the cores);
repeated measurements are reported as mean and sd (ddof = 1).

Measurements (models are built from the same configs as ``python -m recover_pyro.train``):

* ``round_bnn`` / ``round_ensemble`` / ``round_recover_ensemble``: one campaign round on ALMANAC MCF7: fit on
  330 revealed pairs (no validation set, as in campaigns: each model holds out its own 10 % for early stopping
  and its noise estimate), score the other 1146 pairs with ``S = 100``, acquire a UCB batch of ``q = 30``.
  The head-only BNN (``+experiment=normal``, the default before issue #24), the small-net 5-member ensemble
  (``+experiment=ensemble``) and RECOVER's recipe (``+experiment=recover_ensemble``). ``round_gp_identity``: the
  same round of the default campaign BNN (``model=bnn_gp_identity_ucb``, as ``recover-campaign`` builds it). The process's
  one-time import on its first optimiser (``torch._dynamo``, ~2 s) is paid before the first repeat, untimed.
* ``throughput_head`` / ``throughput_all``: candidates x samples per second of ``model.predict`` with
  ``S = 100`` on ALMANAC candidates (all 55 cell lines) for the default model and for
  ``model.bayesian_layers=all``.
* ``space_head`` / ``space_all``: all unordered pairs of ALMANAC's drugs x its cell lines scored with
  ``S = 100``; ``space_all`` may time only the first ``--space-all-subset`` candidates and extrapolate linearly.
* ``space_million``: the default model on all pairs of a synthetic screen of 300 drugs x 23 cell lines
  (1,031,550 candidates), ``S = 100``.

* ``train_<model>_<data>``: training throughput. ``<model>`` is the default BNN (``bnn``, ``+experiment=normal``),
  the fully Bayesian net (``bnn_full``, ``normal_full``), ``deterministic``, ``mc_dropout``, the small-net
  ``ensemble`` and RECOVER's recipe (``recover_ensemble``); ``<data>`` is O'Neil Bliss (all 39 cell lines) or
  ALMANAC (all 55 cell lines). Each fits on a seeded 80 % of the pairs with a 10 % validation set for a fixed
  ``--train-epochs`` (no early stopping; for a BNN that many warm-start and that many SVI epochs), and reports
  training examples per second (passes over the training pairs x their number / fit seconds, where a BNN
  makes ``2 x epochs`` passes, one per stage, and an ensemble epoch trains every member once), the single-thread 1024^3 fp32 GEMM rate measured in the same process, and their ratio, examples per
  GFLOP of machine speed. BNN rows add each stage's rate (warm start, SVI).
* ``fit_bnn_oneil`` / ``fit_deterministic_oneil``: the same, but the whole default fit (early stopping, ELBO
  convergence) as ``+experiment=normal`` / ``deterministic`` run it.
* ``round_bnn_almanac_all``: one campaign round of the default BNN on the ALMANAC all-cell-line pool: fit on a
  seeded 1 % (held-out noise estimate, as in campaigns), score the other 99 % with ``S = 100``, acquire a UCB
  batch of 1 % of the screen.

``--src DIR`` runs every measurement against the package in ``DIR`` (e.g. ``git worktree add /tmp/before
<commit>`` then ``--src /tmp/before/src``) and ``--label`` names that code in the table, so before / after
rows come from one run on one machine. Measurements already in ``--out`` under the same label are skipped
(the run resumes).

``--device cuda`` fits and scores on the GPU (timings wait for it with ``torch.cuda.synchronize``; rows add
the peak GPU memory, ``torch.cuda.max_memory_allocated``) and adds ``score_to_cpu_s`` to the space runs.

Scoring cost does not depend on the fitted weights, so the scoring measurements fit the model for one
epoch only (the guide must be fitted before ``predict``).

A measuring run leaves ``manifest.json`` in ``--out``'s folder (:func:`recover_pyro.records.manifest.recording`:
commit, command, machine, times, files written; an earlier manifest there is kept under ``earlier``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from recover_pyro.data.featurize import Features
from recover_pyro.data.screen import Pairs

# ``--src`` may name a source tree from before the package layout of issue 23 (recover_pyro.builders,
# recover_pyro.inference, Acquisition(kind=...)): the measuring child then imports the old names.
try:
    from recover_pyro.cli.builders import CONFIG_DIR, build_features, build_screen, model_factory
except ImportError:  # a tree from before the layout
    from recover_pyro.builders import CONFIG_DIR, build_features, build_screen, model_factory
try:
    from recover_pyro.records.manifest import command_line, git_state, recording
except ImportError:  # only the measuring parent writes a manifest, and it runs on the current tree
    pass

# Training throughput: model name in the table -> experiment preset; data name -> data overrides.
TRAIN_MODELS = {
    "bnn": "normal",
    "bnn_full": "normal_full",
    "deterministic": "deterministic",
    "mc_dropout": "mc_dropout",
    "ensemble": "ensemble",
    "recover_ensemble": "recover_ensemble",
}
TRAIN_DATA = {"oneil": ("oneil", []), "almanac": ("almanac", ["data.cell_lines=null"])}
TRAIN_MEASUREMENTS = [f"train_{m}_{d}" for d in TRAIN_DATA for m in TRAIN_MODELS]
# Whole default fits (early stopping / ELBO convergence as configured), O'Neil.
FIT_MEASUREMENTS = ["fit_bnn_oneil", "fit_deterministic_oneil"]
MEASUREMENTS = [
    "round_gp_identity",
    "round_bnn",
    "round_ensemble",
    "round_recover_ensemble",
    "throughput_head",
    "throughput_all",
    "space_head",
    "space_all",
    "space_million",
    *TRAIN_MEASUREMENTS,
    *FIT_MEASUREMENTS,
    "round_bnn_almanac_all",
]
GROUPS = {"train": TRAIN_MEASUREMENTS, "fit": FIT_MEASUREMENTS}
# space_million: a synthetic screen whose all-pairs space is 300 * 299 / 2 * 23 = 1,031,550 candidates.
MILLION_DRUGS, MILLION_CELL_LINES = 300, 23
NUM_SAMPLES = 100


DEVICE = "cpu"  # set from --device in the measuring child process


def _config(overrides: Sequence[str], data: str = "almanac") -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[f"data={data}", "inference.progress=false", f"device={DEVICE}", *overrides])


def _sync() -> None:
    """Wait for queued GPU work, so that wall-clock timings include it."""
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(cfg: DictConfig) -> tuple[Pairs, Features]:
    screen = build_screen(cfg)
    return screen.to_pairs(cfg.data.score), build_features(cfg, screen)


def _fitted_model(cfg: DictConfig, features: Features, train: Pairs) -> Any:
    model = model_factory(cfg, features)()
    model.fit(train, None)
    return model


def all_pairs_space(n_drugs: int, n_cells: int) -> Pairs:
    """Every unordered pair of distinct drugs (``a < b``) in every cell line.

    ``n_drugs (n_drugs - 1) / 2 * n_cells`` candidates, cell line by cell line."""
    a, b = torch.triu_indices(n_drugs, n_drugs, offset=1)
    cells = torch.arange(n_cells).repeat_interleave(a.shape[0])
    return Pairs(a.repeat(n_cells), b.repeat(n_cells), cells)


def measure_round(
    experiment: str | None, repeats: int, overrides: Sequence[str] = (), fraction: float | None = None
) -> dict[str, Any]:
    """One campaign round per repeat (seed) of ``+experiment=<experiment>`` (none: the overrides alone): fit on the
    revealed pairs (no validation set: the model holds out its own share, as in campaigns), score the rest with
    S = 100, acquire a UCB batch. Revealed and batch size: 330 and 30 (the MCF7 protocol), or ``fraction`` of the
    screen each."""
    times: dict[str, list[float]] = {"train_s": [], "score_s": [], "acquire_s": [], "round_s": []}
    # The process's first optimiser imports torch._dynamo (~2 s, once per process): a campaign pays it before its
    # first round, not every round, so it is paid here, untimed.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    for seed in range(repeats):
        preset = [] if experiment is None else [f"+experiment={experiment}"]
        cfg = _config([*preset, f"seed={seed}", *overrides])
        pairs, features = _load(cfg)
        n_initial, q = (330, 30) if fraction is None else (int(len(pairs) * fraction),) * 2
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
        revealed, pool = pairs[order[:n_initial]], pairs[order[n_initial:]]
        candidates = Pairs(pool.drug_a, pool.drug_b, pool.cell)
        start = time.perf_counter()
        model = model_factory(cfg, features)()
        model.fit(revealed, None)
        _sync()
        t_train = time.perf_counter()
        predictive = model.predict(candidates, num_samples=NUM_SAMPLES)
        _sync()
        t_score = time.perf_counter()
        ucb(q).select(predictive.f)
        _sync()
        t_acquire = time.perf_counter()
        times["train_s"].append(t_train - start)
        times["score_s"].append(t_score - t_train)
        times["acquire_s"].append(t_acquire - t_score)
        times["round_s"].append(t_acquire - start)
    return {"n_train": n_initial, "n_candidates": len(candidates), "repeats": repeats, "times": times}


def ucb(q: int) -> Any:
    """A UCB rule with ``kappa = 1`` and batch size ``q`` (in a source tree of either layout)."""
    try:
        from recover_pyro.acquisition import UCB

        return UCB(q=q, kappa=1.0)
    except ImportError:  # before the acquisition package: one class with a kind
        from recover_pyro.acquisition import Acquisition

        return Acquisition(kind="ucb", q=q, kappa=1.0)


def gemm_gflops(n: int = 1024, repeats: int = 20) -> float:
    """Rate of an ``n x n`` by ``n x n`` fp32 matrix product on this process's threads (GFLOP/s,
    :math:`2 n^3` per product), after a warm-up: the machine speed that training rates are divided by."""
    a, b = torch.randn(n, n, device=DEVICE), torch.randn(n, n, device=DEVICE)
    for _ in range(3):
        a @ b
    _sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def measure_train(model: str, data: str, epochs: int | None) -> dict[str, Any]:
    """Fit ``model`` for exactly ``epochs`` (``None``: as configured, with its early stopping) on 80 % of
    ``data`` (10 % validation); examples per second and per GFLOP of the single-thread GEMM rate (see the
    module docstring)."""
    try:
        import recover_pyro.bnn.inference as inference
    except ImportError:  # a --src tree from before the package layout of issue 23
        import recover_pyro.inference as inference

    data_name, data_overrides = TRAIN_DATA[data]
    if epochs is None:
        fixed = []
    elif model.startswith("bnn"):
        fixed = [f"inference.warm_start_epochs={epochs}", f"inference.epochs={epochs}", "inference.stopping=none"]
    else:
        fixed = [f"model.training.epochs={epochs}", f"model.training.patience={epochs + 1}"]
    cfg = _config([f"+experiment={TRAIN_MODELS[model]}", "seed=0", *data_overrides, *fixed], data=data_name)
    pairs, features = _load(cfg)
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0))
    n_train, n_val = int(0.8 * len(pairs)), int(0.1 * len(pairs))
    train, val = pairs[order[:n_train]], pairs[order[n_train : n_train + n_val]]
    # fit_svi looks its stages up in the module when it calls them: wrap them to time each stage.
    stage_s: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            _sync()
            stage_s[name] = stage_s.get(name, 0.0) + time.perf_counter() - start
            return out

        return wrapper

    inference.warm_start = timed("warm_start", inference.warm_start)  # type: ignore[assignment]
    inference._svi_stage = timed("svi", inference._svi_stage)  # type: ignore[assignment]
    gflops = gemm_gflops()
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its first use imports torch._dynamo (~1 s, once)
    built = model_factory(cfg, features)()
    start = time.perf_counter()
    report = built.fit(train, val)
    _sync()
    seconds = time.perf_counter() - start
    # Epochs each stage ran (an ensemble's curve has one row per member and epoch).
    rows = [r for r in report.curve if r.get("member", 0) == 0]
    stage_epochs = {stage: sum(r["stage"] == stage for r in rows) for stage in {r["stage"] for r in rows}}
    passes = sum(stage_epochs.values())
    times: dict[str, list[float]] = {
        "fit_s": [seconds],
        "examples_per_s": [passes * n_train / seconds],
        "gemm_gflops": [gflops],
        "examples_per_gflop": [passes * n_train / seconds / gflops],
    }
    for stage, sec in stage_s.items():
        times[f"{stage}_epochs"] = [stage_epochs.get(stage, 0)]
        times[f"{stage}_examples_per_s"] = [stage_epochs.get(stage, 0) * n_train / sec]
        times[f"{stage}_examples_per_gflop"] = [stage_epochs.get(stage, 0) * n_train / sec / gflops]
    return {"n_train": n_train, "epochs": epochs if epochs is not None else passes, "times": times}


def _space_setup(layers: str, million: bool = False) -> tuple[Any, Pairs]:
    model_overrides = ["+experiment=normal", f"model.bayesian_layers={layers}", "inference.epochs=1"]
    if million:
        cfg = _config(
            [
                *model_overrides,
                f"data.screen.n_drugs={MILLION_DRUGS}",
                f"data.screen.n_cell_lines={MILLION_CELL_LINES}",
            ],
            data="synthetic",
        )
    else:
        cfg = _config([*model_overrides, "data.cell_lines=null"])
    pairs, features = _load(cfg)
    train = pairs[torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0))[:512]]
    model = _fitted_model(cfg, features, train)
    space = all_pairs_space(features.drug.shape[0], features.cell.shape[0])
    return model, space


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], list[float]]:
    """(wall seconds, process CPU seconds) of ``repeats`` calls after one warm-up call. CPU seconds over all
    threads do not grow when other processes compete for the cores, wall seconds do."""
    fn()  # warm-up (allocator, lazy init, CUDA kernels)
    _sync()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        _sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def measure_throughput(layers: str, n_candidates: int, repeats: int) -> dict[str, Any]:
    model, space = _space_setup(layers)
    subset = space[torch.randperm(len(space), generator=torch.Generator().manual_seed(0))[:n_candidates]]
    times, cpu = _timed(lambda: model.predict(subset, num_samples=NUM_SAMPLES), repeats)
    return {
        "n_candidates": n_candidates,
        "repeats": repeats,
        "times": {
            "score_s": times,
            "score_cpu_s": cpu,
            "cand_samples_per_s": [n_candidates * NUM_SAMPLES / t for t in times],
        },
    }


def measure_space(layers: str, subset: int | None, repeats: int, million: bool = False) -> dict[str, Any]:
    """Score the whole candidate space (``score_s``); on a GPU the candidates start there (as a campaign
    keeps them) and ``score_to_cpu_s`` adds copying the ``(S, N)`` samples back to the CPU."""
    model, space = _space_setup(layers, million)
    n_total = len(space)
    scored = (space if subset is None else space[:subset]).to(DEVICE)
    times, cpu = _timed(lambda: model.predict(scored, num_samples=NUM_SAMPLES), repeats)
    scale = n_total / len(scored)
    result = {
        "n_candidates": n_total,
        "n_scored": len(scored),
        "extrapolated": subset is not None,
        "repeats": repeats,
        "times": {"score_s": [t * scale for t in times], "score_cpu_s": [t * scale for t in cpu]},
    }
    if DEVICE != "cpu":
        to_cpu, _ = _timed(lambda: model.predict(scored, num_samples=NUM_SAMPLES).cpu(), repeats)
        result["times"]["score_to_cpu_s"] = [t * scale for t in to_cpu]
    return result


def run_measurement(name: str, args: argparse.Namespace) -> dict[str, Any]:
    if name == "round_gp_identity":
        return measure_round(None, args.repeats, ["model=bnn_gp_identity_ucb"])
    if name == "round_bnn":
        return measure_round("normal", args.repeats)
    if name == "round_ensemble":
        return measure_round("ensemble", args.repeats)
    if name == "round_recover_ensemble":
        return measure_round("recover_ensemble", args.repeats)
    if name == "throughput_head":
        return measure_throughput("head", args.throughput_candidates, args.repeats)
    if name == "throughput_all":
        return measure_throughput("all", args.throughput_all_candidates, args.repeats)
    if name == "space_head":
        return measure_space("head", None, args.repeats)
    if name == "space_all":
        return measure_space("all", args.space_all_subset or None, 1)
    if name == "space_million":
        return measure_space("head", None, args.repeats, million=True)
    if name.startswith("train_"):
        model, data = name.removeprefix("train_").rsplit("_", 1)
        return measure_train(model, data, args.train_epochs)
    if name.startswith("fit_"):
        model, data = name.removeprefix("fit_").rsplit("_", 1)
        return measure_train(model, data, None)
    if name == "round_bnn_almanac_all":
        return measure_round("normal", args.repeats, ["data.cell_lines=null"], fraction=0.01)
    raise ValueError(f"unknown measurement {name!r}; choose from {MEASUREMENTS}")


def _threads(name: str, args: argparse.Namespace) -> int:
    return args.threads_space if name.startswith("space") else args.threads


def _rows(name: str, threads: int, result: dict[str, Any], label: str) -> list[dict[str, Any]]:
    """One row per timed quantity: mean and sd over repeats, plus the run's peak RSS (and peak GPU memory)."""
    rows = []
    for key, values in result["times"].items():
        v = np.asarray(values, dtype=float)
        rows.append(
            {
                "code": label,
                "measurement": name,
                "quantity": key,
                "mean": v.mean(),
                "sd": v.std(ddof=1) if len(v) > 1 else float("nan"),
                "n": len(v),
                "threads": threads,
                "n_candidates": result.get("n_candidates"),
                "n_train": result.get("n_train"),
                "epochs": result.get("epochs"),
                "n_scored": result.get("n_scored"),
                "extrapolated": result.get("extrapolated", False),
                "peak_rss_mb": result["peak_rss_mb"],
                "device": result["device"],
                "peak_gpu_mb": result.get("peak_gpu_mb"),
            }
        )
    return rows


def training_table(table: pd.DataFrame) -> str:
    """Markdown table of the training measurements in ``table`` (rows of :func:`_rows`): one line per
    measurement, one column (examples / s and, in brackets, examples / GFLOP) per code label, and the speed-up
    of the last label over the first."""
    rates = table[table["measurement"].str.match(r"(train|fit)_") & (table["quantity"] == "examples_per_s")]
    per_gflop = table[table["quantity"] == "examples_per_gflop"].set_index(["code", "measurement"])["mean"]
    rss = rates.set_index(["code", "measurement"])["peak_rss_mb"]
    labels = list(dict.fromkeys(rates["code"]))
    head = ["measurement", *(f"{c}: examples/s (/GFLOP)" for c in labels), "speed-up", "peak RSS (MB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in dict.fromkeys(rates["measurement"]):
        cells, values = [], []
        for code in labels:
            row = rates[(rates["code"] == code) & (rates["measurement"] == name)]
            if row.empty:
                cells.append("")
                continue
            values.append(float(row["mean"].iloc[0]))
            cells.append(f"{values[-1]:,.0f} ({per_gflop.get((code, name), float('nan')):.0f})")
        speedup = f"{values[-1] / values[0]:.1f}x" if len(values) == len(labels) > 1 else ""
        last_rss = rss.get((labels[-1], name), float("nan"))
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {speedup} | {last_rss:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> pd.DataFrame | None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed/speed.csv"))
    parser.add_argument(
        "--only", nargs="+", default=MEASUREMENTS, choices=[*MEASUREMENTS, *GROUPS], help="measurements or 'train'"
    )
    parser.add_argument("--train-epochs", type=int, default=5, help="epochs of each training measurement")
    parser.add_argument("--src", type=Path, default=None, help="import recover_pyro from this source tree")
    parser.add_argument("--label", default="current", help="name of the measured code in the table")
    parser.add_argument(
        "--table", nargs="+", type=Path, default=None, help="print the training table of these CSVs and exit"
    )
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # child process: one measurement
    parser.add_argument("--threads", type=int, default=1, help="torch threads for rounds and throughput")
    parser.add_argument("--threads-space", type=int, default=2, help="torch threads for the whole-space runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--throughput-candidates", type=int, default=20000)
    parser.add_argument("--throughput-all-candidates", type=int, default=2000)
    parser.add_argument(
        "--space-all-subset",
        type=int,
        default=0,
        help="time only the first N candidates of space_all and extrapolate (0: all)",
    )
    parser.add_argument("--device", default="cpu", help="where models fit and score: cpu, cuda, ...")
    args = parser.parse_args(argv)
    if args.table:
        print(training_table(pd.concat([pd.read_csv(p) for p in args.table], ignore_index=True)))
        return None

    if args.measure:
        global DEVICE
        DEVICE = args.device
        torch.set_num_threads(_threads(args.measure, args))
        result = run_measurement(args.measure, args)
        result["peak_rss_mb"] = _peak_rss_mb()
        result["device"] = torch.cuda.get_device_name() if DEVICE.startswith("cuda") else "cpu"
        if DEVICE.startswith("cuda"):
            result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        print("RESULT " + json.dumps(result), flush=True)
        return None

    names = [m for name in args.only for m in GROUPS.get(name, [name])]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with recording(
        args.out.parent,
        command=command_line(__file__, sys.argv[1:] if argv is None else argv),
        description=f"speed / memory measurements ({args.out.name}, code label {args.label!r})",
        out=args.out.name,
        device=args.device,
        src=None if args.src is None else {"path": str(args.src), "commit": git_state(args.src)[0]},
    ):
        return measure_all(args, names)


def measure_all(args: argparse.Namespace, names: list[str]) -> pd.DataFrame:
    """Run each measurement of ``names`` in its own subprocess, appending its rows to ``args.out``."""
    rows: list[dict[str, Any]] = []
    if args.out.exists():  # resume: keep earlier rows, skip what this label already measured
        rows = pd.read_csv(args.out).to_dict("records")
    done = {(r.get("code", "current"), r["measurement"]) for r in rows}
    child_args = [
        "--train-epochs",
        str(args.train_epochs),
        "--threads",
        str(args.threads),
        "--threads-space",
        str(args.threads_space),
        "--repeats",
        str(args.repeats),
        "--throughput-candidates",
        str(args.throughput_candidates),
        "--throughput-all-candidates",
        str(args.throughput_all_candidates),
        "--space-all-subset",
        str(args.space_all_subset),
        "--device",
        args.device,
    ]
    for name in names:
        if (args.label, name) in done:
            print(f"{name} ({args.label}): already in {args.out}, skipped", flush=True)
            continue
        threads = _threads(name, args)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        if args.src is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(args.src.resolve()), env.get("PYTHONPATH", "")])
        proc = subprocess.run(
            [sys.executable, __file__, "--measure", name, *child_args], env=env, capture_output=True, text=True
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.exit(f"measurement {name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        rows += _rows(name, threads, json.loads(lines[-1][len("RESULT ") :]), args.label)
        table = pd.DataFrame(rows)
        table.to_csv(args.out, index=False)
        print(table[(table["measurement"] == name) & (table["code"] == args.label)].to_string(index=False), flush=True)
    return pd.DataFrame(rows)


if __name__ == "__main__":
    main()
