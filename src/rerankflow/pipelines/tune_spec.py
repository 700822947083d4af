"""The ``tune:`` section of a job: what ``rerankflow tune`` searches and how it scores a trial.

A setting is named by its path into the tuned pipeline as written in YAML: stage index, stage
name, then keys and list indices, dot-separated (``0.rrf.k``, ``0.rrf.weights.1``,
``0.rrf.inputs.0.0.bm25.k``, ``1.listwise.budget.calls``). The path must lead to a setting the
job (with its defaults written out) has.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import ConfigError

Cost = Literal["llm_calls", "tokens", "llm_seconds"]
COST_HELP = {
    "llm_calls": "LLM calls per query",
    "tokens": "prompt + output tokens per query",
    "llm_seconds": "summed LLM call seconds per query (kept by the stage cache, so repeat trials price alike)",
}


class Param(BaseModel):
    """One tuned setting: a range (``low``/``high``, optional ``step`` and ``log``; integers
    when ``low``, ``high`` and ``step`` are) or a list of ``choices``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float | None = None
    high: float | None = None
    step: float | None = Field(None, gt=0)
    log: bool = False
    choices: list[str | int | float | bool | None] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _range_or_choices(self) -> Param:
        ranged = self.low is not None or self.high is not None
        if (self.choices is None) == (not ranged):
            if self.choices is not None:
                raise ValueError("give either choices or low/high, not both")
            raise ValueError("give low and high (a range) or choices (a list)")
        if ranged and (self.low is None or self.high is None or self.low > self.high):
            raise ValueError(f"need low <= high, got low={self.low}, high={self.high}")
        if self.log and ranged and (self.low or 0) <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    @property
    def integer(self) -> bool:
        """Whether the range is of integers."""
        values = [self.low, self.high] + ([self.step] if self.step is not None else [])
        return all(isinstance(v, int) or (isinstance(v, float) and v.is_integer()) for v in values if v is not None)


class TuneSpec(BaseModel):
    """What ``rerankflow tune`` searches (see docs/guide.md, "Tuning")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline: str = Field(..., description="the pipeline whose settings are tuned")
    space: dict[str, Param] = Field(..., min_length=1, description="path into the pipeline -> range or choices")
    objective: str = Field("nDCG@10", description="the measure to maximise (an ir-measures name, or EM/F1 for RAG)")
    costs: list[Cost] = Field(
        default_factory=list,
        description="cost measures to minimise beside it (a Pareto front): " + ", ".join(COST_HELP),
    )
    trials: int = Field(30, ge=1, description="trials in all (a resumed study runs only the missing ones)")
    tune_fraction: float = Field(0.5, gt=0, lt=1, description="share of the queries tuned on; the rest are held out")
    seed: int = Field(0, description="seeds the query split and the sampler")
    sampler: Literal["auto", "tpe", "nsga2", "random", "grid"] = Field(
        "auto", description="auto: TPE for one objective, NSGA-II with costs; grid needs choices everywhere"
    )
    pick_within: float = Field(
        0.0, ge=0, description="the chosen point: the cheapest front point within this much of the best objective"
    )

    @model_validator(mode="after")
    def _grid_needs_choices(self) -> TuneSpec:
        if self.sampler == "grid" and any(p.choices is None for p in self.space.values()):
            raise ValueError("sampler grid enumerates choices; give every setting in space a list of choices")
        return self


def split_path(path: str) -> list[str | int]:
    """``"0.rrf.weights.1"`` -> ``[0, "rrf", "weights", 1]``."""
    return [int(p) if p.isdigit() else p for p in path.split(".")]


def get_at(data: Any, path: str) -> Any:
    """The value at ``path`` in plain data (KeyError/IndexError naming the part that is missing)."""
    node = data
    for part in split_path(path):
        listed = isinstance(part, int) and isinstance(node, list) and part < len(node)
        if listed or (isinstance(part, str) and isinstance(node, dict) and part in node):
            node = node[part]
        else:
            keys = (
                list(node)
                if isinstance(node, dict)
                else f"indices 0..{len(node) - 1}"
                if isinstance(node, list)
                else []
            )
            raise KeyError(f"{part!r} is not in {path!r} (there: {keys})")
    return node


def set_at(data: Any, path: str, value: Any) -> None:
    """Set the value at ``path`` (which must exist) in plain data."""
    *parents, last = split_path(path)
    node = data
    for part in parents:
        node = node[part]
    get_at(data, path)  # raises with a helpful message when absent
    node[last] = value


def check_space(spec: TuneSpec, pipelines: dict[str, Any]) -> None:
    """Every path of ``spec.space`` exists in the tuned pipeline (plain data, defaults written)."""
    if spec.pipeline not in pipelines:
        raise ConfigError(
            f"tune.pipeline {spec.pipeline!r} is not a pipeline; choose one of: {', '.join(pipelines)}",
            path=("tune", "pipeline"),
        )
    for path in spec.space:
        try:
            get_at(pipelines[spec.pipeline], path)
        except KeyError as exc:
            raise ConfigError(
                f"{exc.args[0]}; a path is stage index, stage name, then keys, e.g. 0.rrf.k",
                path=("tune", "space", path),
            ) from None
