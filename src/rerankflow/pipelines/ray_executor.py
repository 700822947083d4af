"""Run pipelines on a Ray cluster with Ray Data (``executor: ray`` in a job).

A :class:`RayPipeline` is a stage like any other: the batch it receives becomes a Ray
Dataset of serialised rankings, and each of its stages runs as ``map_batches`` over that
dataset. A stage that holds a model runs in a pool of actors (``actors`` of them, each
reserving ``num_cpus`` and ``num_gpus``) that build the stage once, from a picklable
zero-argument factory: one engine per GPU, or per tensor-parallel group when ``num_gpus``
equals the backend's ``tensor_parallel_size``. Other stages (retrievers, fusion, cut-offs)
run as Ray tasks of ``task_cpus`` CPUs; each worker process builds such a stage once and
keeps it for later tasks. Rows keep their position, so the
output has the batch's length and order, and each ranking's trace (usage, repairs,
compression, cache use) comes back with it, so reports look the same as in local mode.

Failures: Ray Data restarts a dead actor and retries its batch (``max_restarts=-1``,
``max_task_retries=-1`` are Ray Data's defaults for actor pools). With the stage cache on
(a folder every node can see), a rerun after a driver crash also resumes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import registry
from ..errors import ConfigError, MissingDependencyError, PipelineTypeError
from ..io.dataset import load_dataset
from ..io.rankings import ranking_from_dict, ranking_to_dict
from ..stage import Transformer, check_contract
from ..types import Ranking
from .build import CACHED_KINDS, build_stage
from .cache import StageCache
from .context import BuildContext, job_index
from .ray_options import RayOptions

log = logging.getLogger(__name__)

StageFactory = Callable[[], Transformer]
"""Builds a stage inside a Ray actor; must be picklable (a module-level function or a
``functools.partial`` of one; Ray pickles lambdas and closures with cloudpickle)."""


def connect(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """The ``ray`` module, connected: to ``address`` (``auto``, ``ray://host:10001``), or to
    a new local cluster when ``None``. An existing connection in this process is reused.
    """
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError("ray[data]", "ray") from exc
    if not ray.is_initialized():
        started = time.perf_counter()
        try:
            ray.init(address=address, num_cpus=num_cpus if address is None else None, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(
                f"cannot connect to the Ray cluster at {address!r}: {exc}", path=("ray", "address")
            ) from None
        log.info("connected to Ray (%s) in %.1f s", address or "local cluster", time.perf_counter() - started)
    return ray


def _run_rows(stage: Transformer, batch: dict[str, Any]) -> dict[str, list[Any]]:
    """Run ``stage`` on a Ray Data batch of rows (rankings travel with their traces)."""
    out = stage([ranking_from_dict(json.loads(s)) for s in batch["ranking"]])
    return {"position": list(batch["position"]), "ranking": [json.dumps(ranking_to_dict(r)) for r in out]}


class StageWorker:
    """The Ray Data callable class of a model stage: one per actor, holding one built stage."""

    def __init__(self, factory: StageFactory) -> None:
        self.stage = factory()
        self.stage.warm_up()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        """Run the stage on one batch of rows."""
        return _run_rows(self.stage, batch)


_BUILT: dict[str, Transformer] = {}
"""Stages built by tasks in this worker process, by factory key (kept for later tasks)."""


def run_stage_task(batch: dict[str, Any], factory: StageFactory, key: str) -> dict[str, list[Any]]:
    """The Ray Data function of a stage without a model (built once per worker process)."""
    if key not in _BUILT:
        _BUILT[key] = factory()
    return _run_rows(_BUILT[key], batch)


@dataclass(frozen=True)
class RayStage:
    """One stage of a :class:`RayPipeline`: how to build it, its name, and whether it holds a
    model (an actor pool, loaded once per actor) or not (stateless Ray tasks)."""

    factory: StageFactory
    name: str = "stage"
    holds_model: bool = True


class RayPipeline(Transformer):
    """A chain of stages run on Ray (see the module docstring). ``batch_size`` is the number
    of queries per ``map_batches`` call (also the unit a retry repeats)."""

    Options = RayOptions
    options: RayOptions

    def __init__(self, stages: Sequence[RayStage], *, options: RayOptions | None = None, **settings: Any) -> None:
        if not stages:
            raise PipelineTypeError("a Ray pipeline needs at least one stage")
        self.options = RayOptions.build(options, settings, "the Ray executor")
        self.stages = list(stages)

    @property
    def batch_size(self) -> int:
        """Queries per ``map_batches`` call."""
        return self.options.batch_size or 16

    def warm_up(self) -> None:
        """Connect to the cluster (actors load their models when the first batch runs)."""
        connect(self.options.address, num_cpus=self.options.local_cpus)

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Run every stage over ``batch`` on the cluster; same length and order out."""
        if not batch:
            return []
        ray = connect(self.options.address, num_cpus=self.options.local_cpus)
        rows = [{"position": i, "ranking": json.dumps(ranking_to_dict(r))} for i, r in enumerate(batch)]
        ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // self.batch_size)))
        for stage in self.stages:
            if stage.holds_model:
                ds = ds.map_batches(
                    StageWorker,
                    fn_constructor_args=(stage.factory,),
                    batch_size=self.batch_size,
                    compute=ray.data.ActorPoolStrategy(size=self.options.actors),
                    num_cpus=self.options.num_cpus,
                    num_gpus=self.options.num_gpus or None,
                )
            else:
                key = hashlib.sha256(ray.cloudpickle.dumps(stage.factory)).hexdigest()
                ds = ds.map_batches(
                    run_stage_task,
                    fn_kwargs={"factory": stage.factory, "key": key},
                    batch_size=self.batch_size,
                    num_cpus=self.options.task_cpus,
                )
        done = sorted(ds.take_all(), key=lambda row: int(row["position"]))
        out = [ranking_from_dict(json.loads(row["ranking"])) for row in done]
        check_contract(self, batch, out)
        return out

    def __repr__(self) -> str:
        return f"RayPipeline({' >> '.join(s.name for s in self.stages)}, actors={self.options.actors})"


def build_on_worker(spec: Any, dataset: Any, base_dir: Path, cache_dir: str | None) -> Transformer:
    """Build one YAML stage inside an actor: its own dataset corpus (retrievers and fusion
    only), its own resources, the job's stage cache in ``cache_dir`` (``None``: no cache).
    """
    needs_corpus = registry.get(spec.name).kind in ("retriever", "fusion")
    index = job_index(dataset.index, base_dir) if needs_corpus else None
    corpus = load_dataset(dataset, base_dir).corpus if needs_corpus and index is None else None
    cache = StageCache(cache_dir) if cache_dir is not None else None
    return build_stage(spec, BuildContext(corpus=corpus, base_dir=base_dir, cache=cache, index=index))


def ray_pipeline(specs: Sequence[Any], job: Any, base_dir: Path, cache_dir: str | None) -> RayPipeline:
    """A job pipeline (validated stage specs) as a :class:`RayPipeline` with the job's ``ray``
    settings; rerankers, compressors and generators run in actor pools, the rest as tasks."""
    stages = [
        RayStage(
            functools.partial(build_on_worker, s, job.dataset, base_dir, cache_dir),
            s.name,
            holds_model=registry.get(s.name).kind in CACHED_KINDS,
        )
        for s in specs
    ]
    return RayPipeline(stages, options=job.ray.model_copy(update={"batch_size": job.ray.batch_size or job.batch_size}))
