"""Score a candidate space on a Ray cluster: shards on workers, shortlists merged exactly, one plate.

The space (:class:`~recover_pyro.data.candidates.PairSpace`) is cut into contiguous id ranges, a few per
worker so that the progress bar moves and a slow worker does not hold up the rest. Each worker is a Ray actor
that builds the model once (``model_factory()`` + the fitted ``state_dict``, both from Ray's object store)
and, per range, streams its chunks through the strategy's :class:`~recover_pyro.acquisition.streaming.StreamPlan`,
returning only its shortlists. The driver merges them (exactly: the best ``K`` of a union are the best ``K``
of the parts' best ``K``) and decides the plate, which is therefore the single-process streaming plate, and
where that is proven, the in-memory one. A BNN's posterior weight samples are drawn once by the driver
(``draw_posterior``) and shared through the object store, so every worker scores with the same ``S`` weight
samples.

Random acquisition draws one key per candidate in id order, a sequence shards cannot split: it is chosen on
the driver (it needs no model). Workers run on GPUs with ``device="cuda"`` (one GPU per actor).

On a real cluster: ``ray start --head`` on one machine, ``ray start --address=<head>:6379`` on the others,
then pass ``address="<head>:6379"`` (or set ``RAY_ADDRESS``); see docs/scoring.md.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from recover_pyro.acquisition.batch import SelectedBatch
from recover_pyro.acquisition.streaming import (
    Shortlist,
    StreamPlan,
    merge_collected,
    model_chunks,
    select_streaming,
)
from recover_pyro.acquisition.strategies import Acquisition, RandomAcquisition
from recover_pyro.data.candidates import PairSpace
from recover_pyro.models.base import SynergyModel

ModelFactory = Callable[..., SynergyModel]
"""``factory(device=...) -> SynergyModel``: an untrained model of the fitted one's architecture."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as err:  # an optional dependency: the sweep-ray extra
        raise ImportError(
            "scoring on a Ray cluster needs ray: pip install -c constraints/cpu.txt -e '.[sweep-ray]'"
        ) from err
    return ray


class _Scorer:
    """One worker: the fitted model, built once, scoring id ranges into shortlists."""

    def __init__(
        self,
        factory: ModelFactory,
        state: dict[str, Any],
        draw: Any,
        num_samples: int,
        chunk_size: int,
        device: str,
    ) -> None:
        torch.set_num_threads(1)  # one core per actor: Ray gives each actor one CPU
        self.model = factory(device=device)
        self.model.load_state_dict(state)
        self.draw, self.num_samples, self.chunk_size = draw, num_samples, chunk_size

    def collect(self, plan: dict[str, Any], space: PairSpace, start: int, stop: int) -> dict[int, Shortlist]:
        generator = None
        if plan["generator_state"] is not None:
            generator = torch.Generator()
            generator.set_state(plan["generator_state"])
        worker_plan = StreamPlan(
            plan["acquisition"],
            best_f=plan["best_f"],
            round=plan["round"],
            generator=generator,
            shortlist=plan["size"],
            num_samples=self.num_samples,
        )
        chunks = model_chunks(
            self.model, space, self.num_samples, chunk_size=self.chunk_size, start=start, stop=stop, draw=self.draw
        )
        return worker_plan.collect(chunks)


def select_on_ray(
    acquisition: Acquisition,
    model: SynergyModel,
    model_factory: ModelFactory,
    space: PairSpace,
    num_samples: int,
    *,
    best_f: float | None = None,
    round: int = 0,
    generator: torch.Generator | None = None,
    workers: int | None = None,
    ranges_per_worker: int = 4,
    chunk_size: int = 65536,
    shortlist: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    draw: Any = None,
) -> SelectedBatch:
    """Choose ``acquisition.q`` candidates of ``space`` with ``model``, scored on the Ray cluster that
    ``ray.init`` joined (call it first, e.g. ``ray.init(address="auto")``).

    Args:
        acquisition: the strategy (any that :func:`~recover_pyro.acquisition.streaming.select_streaming`
            takes).
        model: the fitted model (its ``state_dict`` is shipped once through the object store).
        model_factory: builds an untrained model of the same architecture, ``model_factory(device=...)``.
        space: the candidate space, measured and excluded candidates left out.
        num_samples: ``S`` posterior samples per candidate.
        best_f, round, generator, shortlist: as in :func:`~recover_pyro.acquisition.streaming.select_streaming`.
        workers: actors to start (default: the cluster's CPUs, or GPUs with ``device="cuda"``).
        ranges_per_worker: id ranges per actor (more: a smoother progress bar, more per-range overhead).
        chunk_size: candidates per forward pass on a worker.
        device: where workers score (``"cpu"`` or ``"cuda"``; one GPU per actor).
        progress: a bar with ETA over the whole space.
        draw: the model's weight samples (``model.draw_posterior(num_samples)``) if already drawn; else drawn here.

    Returns:
        :class:`SelectedBatch` with global candidate ids (:meth:`PairSpace.decode` gives the pairs).
    """
    ray = _ray()
    if not ray.is_initialized():
        raise RuntimeError("select_on_ray needs a Ray cluster: call ray.init(address=...) first")
    draw_posterior = getattr(model, "draw_posterior", None)
    if draw is None and callable(draw_posterior):
        draw = draw_posterior(num_samples)
    if isinstance(acquisition, RandomAcquisition):  # one key per candidate in id order: not shardable
        return select_streaming(
            acquisition,
            lambda: model_chunks(model, space, num_samples, chunk_size=chunk_size, draw=draw),
            best_f=best_f,
            round=round,
            generator=generator,
            shortlist=shortlist,
        )
    gpu = device.startswith("cuda")
    resources = ray.cluster_resources()
    if workers is None:
        workers = max(1, int(resources.get("GPU" if gpu else "CPU", 1)))
    plan = StreamPlan(
        acquisition, best_f=best_f, round=round, generator=generator, shortlist=shortlist, num_samples=num_samples
    )
    state_ref = ray.put(model.state_dict())
    draw_ref = ray.put(None if draw is None else {k: v.cpu() for k, v in draw.items()})
    space_ref = ray.put(space)
    actor = ray.remote(num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0)(_Scorer)
    scorers = [
        actor.remote(model_factory, state_ref, draw_ref, num_samples, chunk_size, device) for _ in range(workers)
    ]
    ranges = space.shards(workers * ranges_per_worker)
    try:
        while True:
            params = {
                "acquisition": acquisition,
                "best_f": best_f,
                "round": round,
                "size": plan.size,
                "generator_state": plan.state,
            }
            pending = {
                scorers[k % len(scorers)].collect.remote(params, space_ref, a, b): b - a
                for k, (a, b) in enumerate(ranges)
            }
            parts = []
            with tqdm(total=len(space), unit="cand", unit_scale=True, desc="scoring", disable=not progress) as bar:
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1)
                    parts.append(ray.get(done[0]))
                    bar.update(pending.pop(done[0]))
            batch = plan.decide(merge_collected(parts))
            if batch is not None:
                return batch
    finally:
        for scorer in scorers:
            ray.kill(scorer)


def projected_seconds(candidates: float, num_samples: int, rate_per_worker: float, workers: int) -> float:
    """Wall time to score ``candidates`` with ``S`` samples at a measured rate of (candidate x sample) per
    second per worker, assuming linear scaling over ``workers`` (what the benchmark measures for 2)."""
    return math.inf if rate_per_worker <= 0 else candidates * num_samples / (rate_per_worker * workers)
