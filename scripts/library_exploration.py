"""Does a plate explore a compound library? Measured ALMANAC MCF7 drugs plus thousands of new molecules.

    python scripts/library_exploration.py --experiments normal_ucb normal_gp_identity_ucb ensemble_ucb \
        --new-drugs 3000 --seeds 0 1 --out benchmarks/results/library/almanac_mcf7

Issue #24's set-up: a lab has measured ``--measured`` random ALMANAC MCF7 experiments (real ComboScores) and
holds a library of the screen's drugs plus ``--new-drugs`` molecules never measured (generated chains, as the
scoring benchmark's library). ``recover_pyro.recommend`` fits the preset (``+experiment=<e>``, as
``recover-recommend`` would) and chooses a plate of ``--q`` over every untested pair of the library. Per run:

* ``plate_new``: the fraction of the plate's pairs with a drug in no measured pair (``plate_generated``: with a
  generated molecule);
* the mean epistemic sd of ``--per-type`` random untested pairs of each type: ``sd_seen`` (both drugs in measured
  pairs), ``sd_unmeasured`` (one drug of the screen in no measured pair), ``sd_new`` (one generated molecule,
  the other measured), ``sd_new_new`` (two generated), and ``sd_ratio = sd_new / sd_seen``;
* ``top_sd_new``: of the ``--q`` typed pairs with the largest epistemic sd, the fraction with a drug in no
  measured pair: what a plate chosen on uncertainty alone would hold.

A model whose uncertainty knows new drugs gives ``sd_ratio > 1``, and a UCB plate then holds new drugs where
their sd outweighs the measured pairs' means. Rows are appended to ``<out>_runs.csv`` (finished (experiment,
seed) rows are skipped, so re-running resumes); ``manifest.json`` in ``<out>``'s folder records how they were
made.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from benchmark_accuracy import compose_config
from benchmark_scoring import generated_smiles
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from small_data_uncertainty import first_round, fit_missing

from recover_pyro.cli.builders import CONFIG_DIR, build_acquisition, build_screen
from recover_pyro.data.screen import Pairs
from recover_pyro.models.base import SynergyModel
from recover_pyro.records.manifest import command_line, recording
from recover_pyro.wetlab import recommend

NUM_SAMPLES = 100
CELL_LINE = "MCF7"
PAIR_TYPES = ("seen", "unmeasured", "new", "new_new")


def library_files(folder: Path, measured: int, new_drugs: int, seed: int) -> tuple[Path, Path, set[str]]:
    """Write ``drugs.csv`` (the ALMANAC MCF7 drugs and ``new_drugs`` generated molecules) and ``round0.csv``
    (``measured`` random MCF7 experiments with their ComboScore); return both paths and the generated ids."""
    screen = build_screen(compose_config("normal", "almanac", None, "random", seed, []))
    drugs = screen.drugs.reset_index()[["drug_id", "name", "smiles"]].astype({"drug_id": str})
    smiles = generated_smiles(new_drugs, np.random.default_rng([seed, 3000]))
    ids = [f"NEW{i:05d}" for i in range(new_drugs)]
    library = pd.concat([drugs, pd.DataFrame({"drug_id": ids, "name": ids, "smiles": smiles})], ignore_index=True)
    experiments = screen.experiments
    rows = experiments.iloc[first_round(len(experiments), measured, seed)[:measured]]
    round0 = rows[["drug_a", "drug_b", "cell_line", "comboscore"]].astype({"drug_a": str, "drug_b": str})
    folder.mkdir(parents=True, exist_ok=True)
    library.to_csv(folder / "drugs.csv", index=False)
    round0.to_csv(folder / "round0.csv", index=False)
    return folder / "drugs.csv", folder / "round0.csv", set(ids)


def recommend_config(experiment: str, drugs: Path, round0: Path, q: int, seed: int, extra: Sequence[str]) -> DictConfig:
    """``recover-recommend``'s configuration of ``+experiment=<experiment>`` on the written library."""
    overrides = [
        f"+experiment={experiment}", f"measured=[{round0}]", f"smiles={drugs}", f"cell_lines=[{CELL_LINE}]",
        "score=comboscore", f"acquisition.q={q}", "fit_progress=false", "scoring.progress=false", f"seed={seed}",
        *extra,
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("recommend", overrides=overrides)


def typed_pairs(
    drug_ids: Sequence[str], fitted: set[str], generated: set[str], measured: set[tuple[str, str]], n: int, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Up to ``n`` distinct random untested pairs ``(a, b)`` (row indices into ``drug_ids``) of each type of
    :data:`PAIR_TYPES`."""
    rng = np.random.default_rng([seed, 5])
    index = np.arange(len(drug_ids))
    kind = np.array(["new" if d in generated else "seen" if d in fitted else "unmeasured" for d in drug_ids])
    pools = {
        "seen": (index[kind == "seen"], index[kind == "seen"]),
        "unmeasured": (index[kind == "unmeasured"], index[kind == "seen"]),
        "new": (index[kind == "new"], index[kind == "seen"]),
        "new_new": (index[kind == "new"], index[kind == "new"]),
    }
    out = {}
    for name, (left, right) in pools.items():
        if len(left) == 0 or len(right) == 0:
            continue
        a, b = rng.choice(left, 4 * n), rng.choice(right, 4 * n)
        keep = (a != b) & np.array([(drug_ids[x], drug_ids[y]) not in measured for x, y in zip(a, b)])
        pairs = np.unique(np.sort(np.stack([a[keep], b[keep]], 1), 1), axis=0)
        pairs = pairs[rng.permutation(len(pairs))[:n]]
        out[name] = (pairs[:, 0], pairs[:, 1])
    return out


def run_one(experiment: str, seed: int, args: argparse.Namespace, extra: Sequence[str]) -> dict[str, Any]:
    """Recommend a plate over the library with ``+experiment=<experiment>``; score typed pairs with its fit."""
    with tempfile.TemporaryDirectory(prefix="recover_pyro_explore_") as tmp:
        drugs_csv, round0_csv, generated = library_files(Path(tmp), args.measured, args.new_drugs, seed)
        cfg = recommend_config(experiment, drugs_csv, round0_csv, args.q, seed, extra)
        fitted_models: list[SynergyModel] = []
        build = instantiate(cfg.model)

        def model(*a: Any, **kw: Any) -> SynergyModel:
            fitted_models.append(build(*a, **kw))
            return fitted_models[-1]

        start = time.perf_counter()
        torch.manual_seed(seed)
        result = recommend(
            [round0_csv], drugs_csv, [CELL_LINE], "comboscore", model, build_acquisition(cfg),
            featurize=lambda screen: instantiate(cfg.features, screen), num_samples=NUM_SAMPLES, seed=seed,
            scoring=instantiate(cfg.scoring, _convert_="all"),
        )  # fmt: skip
        wall = time.perf_counter() - start
        round0 = pd.read_csv(round0_csv, dtype=str)
    screen, plate = result.measured, result.table
    fitted = set(round0.drug_a) | set(round0.drug_b)
    measured = {(a, b) for a, b in zip(round0.drug_a, round0.drug_b)}
    measured |= {(b, a) for a, b in measured}
    in_plate = list(zip(plate.drug_a, plate.drug_b))
    drug_ids = [str(d) for d in screen.drugs.index]
    cell = int(list(screen.cell_lines.index).index(CELL_LINE))
    row: dict[str, Any] = {
        "n_drugs": len(drug_ids),
        "n_candidates": result.n_candidates,
        "plate_new": float(np.mean([a not in fitted or b not in fitted for a, b in in_plate])),
        "plate_generated": float(np.mean([a in generated or b in generated for a, b in in_plate])),
        "plate_sd": float(plate.predicted_std.mean()),
    }
    sds, kinds = [], []
    for name, (a, b) in typed_pairs(drug_ids, fitted, generated, measured, args.per_type, seed).items():
        pairs = Pairs(torch.as_tensor(a), torch.as_tensor(b), torch.full((len(a),), cell))
        sd = fitted_models[-1].predict(pairs, NUM_SAMPLES).epistemic_std.cpu().numpy()
        row[f"sd_{name}"] = float(sd.mean())
        sds.append(sd)
        kinds += [name != "seen"] * len(sd)
    top = np.argsort(-np.concatenate(sds), kind="stable")[: args.q]
    row["top_sd_new"] = float(np.mean(np.array(kinds)[top]))
    row["sd_ratio"] = row["sd_new"] / row["sd_seen"]
    row["wall_s"] = wall
    return row


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="+", default=["normal_ucb", "normal_gp_identity_ucb", "ensemble_ucb"])
    parser.add_argument("--new-drugs", type=int, default=3000)
    parser.add_argument("--measured", type=int, default=60)
    parser.add_argument("--q", type=int, default=30)
    parser.add_argument("--per-type", type=int, default=2000, help="random untested pairs scored per pair type")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
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
        description=f"library exploration: {args.new_drugs} new molecules, {args.measured} measured ({args.out.name})",
        out=args.out.name,
    ):
        base = {"new_drugs": args.new_drugs, "measured": args.measured, "overrides": " ".join(args.override)}
        runs = fit_missing(
            runs_csv, args.experiments, args.seeds, args.variant, base,
            lambda experiment, seed: run_one(experiment, seed, args, args.override),
        )  # fmt: skip
        columns = ["plate_new", "plate_generated", "top_sd_new", "sd_seen", "sd_new", "sd_ratio", "wall_s"]
        table = runs.groupby("experiment", sort=False)[columns].mean()
        print(table.to_string())
        return table


if __name__ == "__main__":
    main()
