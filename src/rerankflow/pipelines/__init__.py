"""YAML jobs, building their pipelines, the job runner, the stage cache and the Ray executor."""

from .job import Job, load_job
from .runner import load_pipeline, run_job

__all__ = ["Job", "load_job", "load_pipeline", "run_job"]
