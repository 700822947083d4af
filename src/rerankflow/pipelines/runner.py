"""Run a job: load the dataset, build each pipeline, evaluate side by side, write outputs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends.models import model_identity
from ..environment import environment
from ..errors import ConfigError
from ..eval.experiment import Experiment, ExperimentResult
from ..eval.outputs import write_outputs
from ..eval.trace import stage_models
from ..io.dataset import Dataset, load_dataset
from ..paths import resolve_path
from ..resources import ResourcePool
from ..stage import Transformer
from ..types import Document
from .build import build_pipeline
from .cache import StageCache
from .context import BuildContext, job_index
from .job import Job, dump_job, job_models, load_job
from .ray_executor import ray_pipeline

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    """What a job produced: the experiment (with or without measures) and the files written."""

    job: Job
    result: ExperimentResult
    output_dir: Path
    files: list[Path]
    pipelines: dict[str, Transformer]


def build_job(
    job: Job, base_dir: Path, resources: ResourcePool | None = None, cache: StageCache | None = None
) -> tuple[Dataset, dict[str, Transformer]]:
    """Load the dataset and build every pipeline (models load later, on first use).
    ``resources`` lets callers share engines across jobs (by default each job has its own);
    with ``cache``, model stages keep their outputs there.
    """
    dataset = load_dataset(job.dataset, base_dir)
    index = job_index(job.dataset.index, base_dir)
    if index is not None:
        dataset.corpus = index.chunks
    ctx = BuildContext(dataset.corpus, base_dir, resources or ResourcePool(), cache, index)
    pipelines = {name: build_pipeline(specs, ctx, ("pipelines", name)) for name, specs in job.pipelines.items()}
    return dataset, pipelines


def load_pipeline(job: Job | str | Path, name: str, base_dir: Path | None = None) -> Transformer:
    """The pipeline ``name`` of a YAML job (a file, or a loaded :class:`Job` whose relative
    paths are relative to ``base_dir``, default the current folder), built with the job's
    dataset corpus; models load on first use."""
    if not isinstance(job, Job):
        path = Path(job)
        job, base_dir = load_job(path), base_dir or path.resolve().parent
    if name not in job.pipelines:
        raise ConfigError(f"no pipeline named {name!r}; the job has: {', '.join(job.pipelines)}")
    _, built = build_job(job.model_copy(update={"pipelines": {name: job.pipelines[name]}}), base_dir or Path.cwd())
    return built[name]


def job_cache(job: Job, base_dir: Path) -> StageCache | None:
    """The job's stage cache, or ``None`` when ``cache.enabled`` is false."""
    if not job.cache.enabled:
        return None
    return StageCache(resolve_path(job.cache.dir, base_dir) if job.cache.dir else None)


def run_job(
    job: Job,
    base_dir: Path,
    output_dir: Path | None = None,
    resources: ResourcePool | None = None,
    *,
    use_cache: bool = True,
) -> JobResult:
    """Run every pipeline of ``job`` and write runs and result tables (each file complete or
    absent: written to a temporary file and renamed). ``use_cache=False`` ignores the stage cache.
    """
    cache = job_cache(job, base_dir) if use_cache else None
    if job.executor == "ray":
        dataset = load_dataset(job.dataset, base_dir)
        cache_dir = str(cache.folder.resolve()) if cache else None
        pipelines: dict[str, Transformer] = {
            name: ray_pipeline(specs, job, base_dir.resolve(), cache_dir) for name, specs in job.pipelines.items()
        }
    else:
        dataset, pipelines = build_job(job, base_dir, resources, cache)
    if not dataset.topics:
        raise ConfigError(
            "the dataset has no queries to run (an index alone is for `rerankflow serve`); add dataset.topics",
            path=("dataset",),
        )
    out = output_dir or (base_dir / job.output.dir if job.output.dir else base_dir / "runs" / job.name)
    experiment = Experiment(
        pipelines,
        dataset.topics,
        dataset.qrels or {},
        job.measures,
        baseline=job.baseline,
        batch_size=max(len(dataset.topics), 1) if job.executor == "ray" else job.batch_size,  # one Ray Dataset
        answers=dataset.answers,
    )
    result = experiment.run()
    result.run = run_record(job, base_dir)
    if job.cost:
        for system in result.systems:
            system.price(stage_models(pipelines[system.name]), job.cost)
    files = write_outputs(
        result,
        out,
        documents=_originals(dataset),
        run_tag=job.name if job.output.run_files else None,
        job_yaml=dump_job(job),  # the job as run, every default written out
    )
    log.info("wrote %d files to %s", len(files), out)
    return JobResult(job, result, out, files, pipelines)


def run_record(job: Job, base_dir: Path) -> dict[str, Any]:
    """What a job's results were produced with: the job's name, the date, the git commit of
    its folder, package versions, hardware, and each model with what identifies its weights."""
    models: dict[str, list[str]] = {}
    for m in job_models(job):
        models.setdefault(m["model"], []).append(f"{m['pipeline']}: {m['where']}")
    return {
        "job": job.name,
        **environment(base_dir),
        "models": [{"model": k, "identity": model_identity(k), "used_by": v} for k, v in models.items()],
    }


def _originals(dataset: Dataset) -> dict[str, Document]:
    """Documents by id as the dataset holds them (the corpus, else the topics' candidates)."""
    if dataset.corpus is not None:
        return {d.docid: d for d in dataset.corpus}
    return {c.docid: c.doc for r in dataset.topics for c in r.candidates}
