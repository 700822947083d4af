"""YAML jobs, building their pipelines, the job runner, the stage cache and the Ray executor."""

from .job import Job, load_job
from .oneshot import Reranker, rerank
from .presets import Preset, load_preset, preset_names
from .runner import load_pipeline, run_job

__all__ = ["Job", "Preset", "Reranker", "load_job", "load_pipeline", "load_preset", "preset_names", "rerank", "run_job"]
