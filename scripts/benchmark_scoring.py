"""Whole-library scoring benchmark: streaming vs in-memory acquisition, memory against N, Ray workers.

    python scripts/benchmark_scoring.py --out benchmarks/results/scoring/scoring.csv            # everything
    python scripts/benchmark_scoring.py --only stream_1e6 memory_1e6 --out ...                   # some rows
    python scripts/benchmark_scoring.py --table benchmarks/results/scoring/scoring.csv           # as markdown

A library of ``D`` drugs in one cell line has ``N = D (D - 1) / 2`` candidate pairs; drugs get 1024 random
fingerprint bits (5 % set) plus a one-hot identity, as ``features=morgan`` gives real drugs, and the model is
the default BNN (``model=bnn``: Bayesian head on the RECOVER trunk) fitted for one epoch on 300 random pairs
(scoring cost does not depend on the fitted weights). Every measurement runs in a fresh subprocess
(``--measure``), so its peak resident memory (``ru_maxrss``) is its own; ``score_cpu_s`` is the process CPU
time over all threads, insensitive to other processes on the cores. ``S = 100`` throughout, UCB with ``q = 30``
and ``max_per_drug = 3`` unless the row names another rule.

Measurements:

* ``memory_<N>``: today's in-memory path, all ``(S, N)`` samples at once then :meth:`UCB.select`.
* ``stream_<N>``: :func:`~recover_pyro.acquisition.streaming.select_streaming` over
  :func:`~recover_pyro.acquisition.streaming.model_chunks` (chunks of 65,536), same plate (checked where both
  run: ``same_plate``).
* ``rule_<name>``: the streaming path with each acquisition rule at ``N = --rule-n``.
* ``ray_<W>``: :func:`~recover_pyro.acquisition.distributed.select_on_ray` with ``W`` workers on a local Ray
  head (``ray.init(num_cpus=W)``) at ``N = --ray-n``.
* ``recommend_<D>``: the command itself, ``python -m recover_pyro.recommend`` as shipped (``+experiment=normal``,
  UCB, ``q = 30``), over all pairs of a library of ``D`` generated molecules (distinct random heteroatom
  chains, RDKit-canonical) in one cell line, after one measured round of 60 pairs: wall time and the peak
  resident memory of the command's process.

Throughput is candidates x samples per second of wall time (one thread unless stated; ``--threads``).
A run leaves ``manifest.json`` in ``--out``'s folder; rows already in ``--out`` are skipped (it resumes).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

SIZES = {"1e6": 1_000_000, "1e7": 10_000_000, "1e8": 100_000_000, "4.76e6": 4_763_241}
RULES = ("ucb", "greedy", "thompson", "ei", "pi", "qei", "qpi", "random")
NUM_SAMPLES = 100


def drugs_for(n_candidates: int) -> int:
    """The smallest ``D`` with ``D (D - 1) / 2 >= n_candidates``."""
    return math.ceil((1 + math.sqrt(1 + 8 * n_candidates)) / 2)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup(n_drugs: int) -> tuple[Any, Any, Any]:
    import torch

    from recover_pyro.bnn.inference import SVIConfig
    from recover_pyro.bnn.model import BNNSynergyModel
    from recover_pyro.data.candidates import PairSpace
    from recover_pyro.data.screen import Pairs

    g = torch.Generator().manual_seed(0)
    bits = (torch.rand(n_drugs, 1024, generator=g) < 0.05).float()
    drug = torch.cat([bits, torch.eye(n_drugs)], 1)
    cell = torch.eye(1)
    factory = functools.partial(
        BNNSynergyModel, drug, cell, inference=SVIConfig(epochs=1, warm_start_epochs=1, progress=False), seed=0
    )
    model = factory()
    a = torch.randint(n_drugs, (300,), generator=g)
    b = (a + 1 + torch.randint(n_drugs - 1, (300,), generator=g)) % n_drugs
    model.fit(Pairs(a, b, torch.zeros(300, dtype=torch.long), torch.randn(300, generator=g)))
    return model, factory, PairSpace(n_drugs, cells=[0])


def _acquisition(rule: str) -> Any:
    from recover_pyro.acquisition import Acquisition

    kwargs: dict[str, Any] = {"q": 30, "max_per_drug": 3}
    if rule == "ucb":
        kwargs.update(kappa=2.0, kappa_decay=0.8)
    return Acquisition.from_kind(rule, **kwargs)


def generated_smiles(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct canonical SMILES of random C/N/O/S chains of 6-14 atoms (stand-ins for a compound library)."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    seen: set[str] = set()
    smiles: list[str] = []
    while len(smiles) < n:
        chain = "".join(rng.choice(list("CCCNOS"), size=int(rng.integers(6, 15))))
        mol = Chem.MolFromSmiles(chain)
        canonical = None if mol is None else Chem.MolToSmiles(mol)
        if canonical and canonical not in seen:
            seen.add(canonical)
            smiles.append(canonical)
    return smiles


def library_files(n_drugs: int, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A drug table of ``n_drugs`` distinct generated molecules and a measured round of 60 of their pairs."""
    rng = np.random.default_rng(seed)
    smiles = generated_smiles(n_drugs, rng)
    ids = [f"M{i:05d}" for i in range(n_drugs)]
    folder.mkdir(parents=True, exist_ok=True)
    drugs = folder / "drugs.csv"
    pd.DataFrame({"drug_id": ids, "name": ids, "smiles": smiles}).to_csv(drugs, index=False)
    a = rng.choice(200, size=200, replace=True)
    b = rng.choice(200, size=200, replace=True)
    pairs = sorted({(min(x, y), max(x, y)) for x, y in zip(a, b) if x != y})[:60]
    round0 = folder / "round0.csv"
    pd.DataFrame(
        {
            "drug_a": [ids[x] for x, _ in pairs],
            "drug_b": [ids[y] for _, y in pairs],
            "cell_line": "MCF7",
            "synergy": rng.normal(0, 10, len(pairs)).round(3),
        }
    ).to_csv(round0, index=False)
    return drugs, round0


def measure_recommend(n_drugs: int, args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="recover_pyro_library_"))
    drugs, round0 = library_files(n_drugs, folder)
    cmd = [
        sys.executable, "-m", "recover_pyro.recommend", f"measured=[{round0}]", f"smiles={drugs}",
        "cell_lines=[MCF7]", "score=synergy", "+experiment=normal", "acquisition.q=30", "scoring.progress=false",
        "fit_progress=false", f"out={folder / 'plate.csv'}", f"hydra.run.dir={folder / 'run'}",
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"recover-recommend failed:\n{proc.stderr[-3000:]}")
    plate = pd.read_csv(folder / "plate.csv", dtype=str)
    n = n_drugs * (n_drugs - 1) // 2
    return {
        "measurement": f"recommend_{n_drugs}",
        "rule": "ucb",
        "n_drugs": n_drugs,
        "n_candidates": n,
        "num_samples": NUM_SAMPLES,
        "threads": args.threads,
        "wall_s": wall,
        "score_cpu_s": float("nan"),
        "cand_samples_per_s": n * NUM_SAMPLES / wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "plate": json.dumps(list(zip(plate["drug_a"], plate["drug_b"]))),
    }


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    kind, size = name.split("_", 1)
    if kind == "recommend":
        return measure_recommend(int(size), args)
    n = args.rule_n if kind == "rule" else args.ray_n if kind == "ray" else SIZES[size]
    n_drugs = drugs_for(n)
    model, factory, space = _setup(n_drugs)
    rule = size if kind == "rule" else "ucb"
    acquisition = _acquisition(rule)
    best_f = 1.0
    generator = torch.Generator().manual_seed(0)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if kind == "memory":
        from recover_pyro.acquisition.streaming import CandidateChunk

        chunk = next(space.chunks(len(space)))
        f = model.predict(chunk.pairs, num_samples=NUM_SAMPLES).f
        drugs = torch.stack([chunk.pairs.drug_a, chunk.pairs.drug_b], 1)
        batch = acquisition.select(f, candidate_drugs=drugs, best_f=best_f, generator=generator)
        plate = chunk.ids[batch.indices].tolist()
        del CandidateChunk
    elif kind == "ray":
        import ray

        from recover_pyro.acquisition.distributed import select_on_ray

        # A throwaway single-machine cluster on loopback only, leaving no auth token in ~/.ray (scripts/ci_ray.sh).
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=int(size), include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        batch = select_on_ray(
            acquisition, model, factory, space, NUM_SAMPLES, best_f=best_f, generator=generator,
            workers=int(size), progress=False,
        )  # fmt: skip
        plate = batch.indices.tolist()
        ray.shutdown()
    else:
        from recover_pyro.acquisition.streaming import model_chunks, select_streaming

        batch = select_streaming(
            acquisition,
            lambda: model_chunks(model, space, NUM_SAMPLES, chunk_size=args.chunk),
            best_f=best_f,
            generator=generator,
        )
        plate = batch.indices.tolist()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "measurement": name,
        "rule": rule,
        "n_drugs": n_drugs,
        "n_candidates": len(space),
        "num_samples": NUM_SAMPLES,
        "threads": args.threads,
        "wall_s": wall,
        "score_cpu_s": cpu,
        "cand_samples_per_s": len(space) * NUM_SAMPLES / wall,
        "peak_rss_mb": _peak_rss_mb(),
        "plate": json.dumps(plate),
    }


def default_names() -> list[str]:
    return [
        "memory_1e6",
        "stream_1e6",
        "memory_4.76e6",
        "stream_4.76e6",
        "stream_1e7",
        *[f"rule_{r}" for r in RULES],
        "ray_1",
        "ray_2",
        "stream_1e8",
        "recommend_10000",
    ]


def run_all(args: argparse.Namespace, names: Sequence[str]) -> pd.DataFrame:
    out = Path(args.out)
    done = pd.read_csv(out) if out.is_file() else pd.DataFrame()
    for name in names:
        if len(done) and name in set(done["measurement"]):
            continue
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        cmd = [sys.executable, __file__, "--measure", name, "--threads", str(args.threads),
               "--rule-n", str(args.rule_n), "--ray-n", str(args.ray_n), "--chunk", str(args.chunk)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"measurement {name} failed")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        done.to_csv(out, index=False)
        print(f"{name}: {row['wall_s']:.1f} s, {row['cand_samples_per_s']:.3g} cand x samples / s, "
              f"peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
    return done


def table(results: pd.DataFrame) -> str:
    """Markdown table of the results, with ``same_plate`` for memory / stream pairs of one ``N``."""
    rows = results.copy()
    plates = dict(zip(rows["measurement"], rows["plate"]))
    rows["same_plate"] = [
        (plates.get(m.replace("stream", "memory")) == p) if m.startswith("stream") and m.replace("stream", "memory") in plates else ""
        for m, p in zip(rows["measurement"], rows["plate"])
    ]  # fmt: skip
    cols = [
        "measurement",
        "rule",
        "n_candidates",
        "threads",
        "wall_s",
        "cand_samples_per_s",
        "peak_rss_mb",
        "same_plate",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in rows[cols].iterrows():
        lines.append(
            f"| {r.measurement} | {r.rule} | {int(r.n_candidates):,} | {int(r.threads)} | {r.wall_s:.1f} | "
            f"{r.cand_samples_per_s:.3g} | {r.peak_rss_mb:.0f} | {r.same_plate} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/scoring/scoring.csv")
    parser.add_argument("--only", nargs="*", help="measurement names (default: all)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rule-n", type=int, default=2_000_000, help="candidates of the per-rule rows")
    parser.add_argument("--ray-n", type=int, default=10_000_000, help="candidates of the Ray rows (start-up amortised)")
    parser.add_argument("--chunk", type=int, default=65536, help="candidates per streamed chunk")
    parser.add_argument("--table", help="print a results CSV as markdown and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(table(pd.read_csv(args.table)))
        return
    if args.measure:
        print(json.dumps(measure(args.measure, args)))
        return
    from recover_pyro.records.manifest import recording

    with recording(Path(args.out).parent, description="whole-library scoring: streaming vs in-memory, Ray"):
        run_all(args, args.only or default_names())


if __name__ == "__main__":
    main()
