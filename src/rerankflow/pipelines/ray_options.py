"""The settings of ``executor: ray`` (a job's ``ray:`` section and :class:`~.ray_executor.RayPipeline`),
declared once, apart from the executor so a job can be validated without Ray."""

from __future__ import annotations

from pydantic import Field

from ..options import Options


class RayOptions(Options):
    """How ``executor: ray`` lays a job out on a Ray cluster (docs/scale.md)."""

    address: str | None = Field(
        None, description="cluster to join: 'auto', 'ray://host:10001'; none starts a local cluster"
    )
    local_cpus: int | None = Field(None, ge=1, description="CPUs of a local cluster (default: all)")
    actors: int = Field(1, ge=1, description="actors per model stage (one model/engine each)")
    num_cpus: float = Field(1.0, ge=0, description="CPUs each model actor reserves")
    num_gpus: float = Field(0.0, ge=0, description="GPUs each model actor reserves (tensor_parallel_size for vLLM TP)")
    task_cpus: float = Field(1.0, gt=0, description="CPUs of each task of a stage without a model")
    batch_size: int | None = Field(
        None, ge=1, description="queries per map_batches call (default: the job's batch_size; 16 outside a job)"
    )
