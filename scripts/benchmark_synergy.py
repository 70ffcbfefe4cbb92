"""Speed of the synergy scores: all four (Bliss, HSA, Loewe, ZIP) for 6 x 6 dose-response blocks on one core.

    OMP_NUM_THREADS=1 python scripts/benchmark_synergy.py --out benchmarks/results/synergy

Blocks are synthetic plate-reader blocks (seeded): drug A and drug B at 0 and 5 three-fold doses each, every
single drug an LL.4 curve with a random EC50 inside the dose range, Hill slope 0.6-3 and top 50-100 %
inhibition, the combinations Bliss-independent plus a random interaction, and Gaussian noise (sd 5 points),
so the curve fits meet what real blocks give them: clean curves, flat ones and noisy ones with several local
optima. Two measurements, wall clock (``time.perf_counter``) and process CPU time:

* ``one_at_a_time``: each of ``--single`` blocks scored on its own (``score_blocks([block])``, the latency of
  one block); median, 90th percentile and maximum per block;
* ``screen``: ``--blocks`` blocks scored in one call (the curve fits of all blocks run together), total and
  per block.

Both for the default convention (SynergyFinder 3.x) and, for the screen, also ``drugcomb`` (2.x). On a shared
machine the wall time includes waiting for a core; the CPU time does not (the manifest records the load
average at the end). Writes
``timings.csv`` (one row per measurement), ``per_block.csv`` (the one-at-a-time times) and ``manifest.json``
(:func:`recover_pyro.records.manifest.recording`: commit, command, machine, times) into ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from recover_pyro.data.blocks import DoseResponseBlock
from recover_pyro.data.synergy import score_blocks
from recover_pyro.records.manifest import command_line, recording


def synthetic_blocks(count: int, seed: int = 0, doses: int = 5, noise: float = 5.0) -> list[DoseResponseBlock]:
    """``count`` seeded ``(doses + 1) x (doses + 1)`` blocks (see the module docstring)."""
    rng = np.random.default_rng(seed)
    grid = np.concatenate([[0.0], 10.0 / 3.0 ** np.arange(doses)[::-1]])  # 0, 0.12 ... 10 uM
    blocks = []
    for k in range(count):
        curves = []
        for _ in range(2):
            ec50 = 10 ** rng.uniform(np.log10(grid[1]), np.log10(grid[-1]))
            hill, top = rng.uniform(0.6, 3.0), rng.uniform(50, 100)
            with np.errstate(divide="ignore"):
                curves.append(top / (1 + (ec50 / grid) ** hill))
        fa, fb = curves[0][:, None], curves[1][None, :]
        bliss = fa + fb - fa * fb / 100
        interaction = rng.normal(0, 8) * (fa > 0) * (fb > 0) * np.sqrt(fa * fb) / 50
        response = bliss + interaction + rng.normal(0, noise, bliss.shape)
        n = grid.size
        blocks.append(
            DoseResponseBlock(
                block_id=str(k + 1),
                drug_row=f"D{2 * k}",
                drug_col=f"D{2 * k + 1}",
                cell_line="synthetic",
                study="benchmark",
                conc_row=grid,
                conc_col=grid,
                unit_row="uM",
                unit_col="uM",
                response=response,
                n_replicates=np.ones((n, n), dtype=int),
                well_order=np.arange(n * n),
                line=2 + k * n * n,
                source="synthetic",
            )
        )
    return blocks


def timed(call) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """``(wall seconds, process CPU seconds)`` of ``call()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/synergy"))
    parser.add_argument("--blocks", type=int, default=1000, help="blocks of the one-call screen")
    parser.add_argument("--single", type=int, default=100, help="blocks scored one at a time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # per-block notes (L.4 fallbacks) are not what is measured
    threads = os.environ.get("OMP_NUM_THREADS")
    with recording(
        args.out,
        command=command_line(__file__, sys.argv[1:] if argv is None else argv),
        description="synergy scores (Bliss, HSA, Loewe, ZIP) of synthetic 6 x 6 blocks: time per block, one core",
        blocks=args.blocks,
        single=args.single,
        seed=args.seed,
        omp_num_threads=threads,
    ) as manifest:
        screen = synthetic_blocks(args.blocks, seed=args.seed)
        score_blocks(screen[:2])  # warm-up: imports, first calls
        rows, per_block = [], []
        for block in screen[: args.single]:
            wall, cpu = timed(lambda block=block: score_blocks([block]))
            per_block.append({"block_id": block.block_id, "wall_s": wall, "cpu_s": cpu})
        times = pd.DataFrame(per_block)
        rows.append(
            {
                "measurement": "one_at_a_time",
                "convention": "synergyfinder3",
                "blocks": len(times),
                "wall_s": times["wall_s"].sum(),
                "cpu_s": times["cpu_s"].sum(),
                "ms_per_block_median": 1000 * times["wall_s"].median(),
                "ms_per_block_p90": 1000 * times["wall_s"].quantile(0.9),
                "ms_per_block_max": 1000 * times["wall_s"].max(),
                "ms_per_block_mean": 1000 * times["wall_s"].mean(),
                "cpu_ms_per_block_median": 1000 * times["cpu_s"].median(),
                "cpu_ms_per_block_p90": 1000 * times["cpu_s"].quantile(0.9),
            }
        )
        for convention in ("synergyfinder3", "drugcomb"):
            wall, cpu = timed(lambda convention=convention: score_blocks(screen, convention=convention))
            rows.append(
                {
                    "measurement": "screen",
                    "convention": convention,
                    "blocks": len(screen),
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "ms_per_block_mean": 1000 * wall / len(screen),
                    "cpu_ms_per_block_mean": 1000 * cpu / len(screen),
                }
            )
        table = pd.DataFrame(rows)
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "timings.csv", index=False)
        times.to_csv(args.out / "per_block.csv", index=False)
        load = os.getloadavg()
        manifest.extra["load_average_after"] = [round(v, 2) for v in load]
        manifest.notes = (
            f"one at a time: median {table.loc[0, 'ms_per_block_median']:.1f} ms wall, "
            f"{table.loc[0, 'cpu_ms_per_block_median']:.1f} ms CPU per 6x6 block; screen of {args.blocks}: "
            f"{table.loc[1, 'wall_s']:.1f} s (3.x), {table.loc[2, 'wall_s']:.1f} s (drugcomb); load average "
            f"{load[0]:.1f} on the machine's cores (shared: wall time includes waiting)"
        )
        print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    main()
