"""YAML jobs: a dataset, named pipelines of registered stages, measures and outputs.

A pipeline is a list of stages; a stage is ``{name: {param: value}}`` (or just ``name``).
Fusion stages hold sub-pipelines under ``inputs``. Everything is validated on load: unknown
keys and bad values fail with the YAML path (``pipelines.hybrid[0].rrf.k``), the file line
and the valid choices. ``load_job(dump_job(job)) == job`` holds for every valid job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_serializer,
    field_validator,
    model_validator,
)

from .. import registry
from ..backends.models import check_name
from ..errors import BackendError, ConfigError
from ..eval.measures import parse_measures
from ..eval.trace import Price
from ..io.dataset import DatasetSpec
from ..options import StageOptions
from ..paths import OptionalJobPath, missing_paths, paths_outside, resolve_path
from ..prompts.template import builtin_names
from ..suggest import did_you_mean
from ..yamlio import YamlDocument, validation_to_config_error
from .ray_options import RayOptions
from .tune_spec import TuneSpec, check_space

KeyPath = tuple[str | int, ...]
"""Where a value sits in a job file: keys and list indices, e.g. ("pipelines", "main", 0, "bm25")."""


@dataclass(frozen=True)
class StageSpec:
    """A validated stage: registry name, its config, and sub-pipelines (fusion inputs)."""

    name: str
    config: StageOptions
    inputs: tuple[tuple[StageSpec, ...], ...] = ()

    def to_yaml(self) -> dict[str, Any]:
        """``{name: {params..., inputs: [...]}}`` with every default written out."""
        body = self.config.model_dump(mode="json")
        nested = registry.get(self.name).nested
        if nested is not None:
            body[nested] = [[s.to_yaml() for s in p] for p in self.inputs]
        return {self.name: body}


Pipeline = tuple[StageSpec, ...]


def parse_stage(raw: Any, path: KeyPath) -> StageSpec:
    """Validate one stage entry found at ``path``."""
    if isinstance(raw, str):
        name, params = raw, dict[str, Any]()
    elif isinstance(raw, dict) and len(raw) == 1:
        name, params = next(iter(raw.items()))
        params = {} if params is None else params
    else:
        raise ConfigError("a stage is written as 'name' or {name: {param: value}} (exactly one key)", path=path)
    if not isinstance(name, str):
        raise ConfigError(f"stage name must be a string, got {name!r}", path=path)
    try:
        comp = registry.get(name)
    except ConfigError as exc:
        raise ConfigError(exc.message, path=path) from None
    if not isinstance(params, dict):
        raise ConfigError(
            f"parameters of {name!r} must be a mapping, got {type(params).__name__}",
            path=(*path, name),
        )
    params = dict(params)
    inputs: tuple[Pipeline, ...] = ()
    if comp.nested is not None:
        raw_inputs = params.pop(comp.nested, None)
        ipath = (*path, name, comp.nested)
        if not isinstance(raw_inputs, list) or len(raw_inputs) < 2:
            raise ConfigError(
                f"{name!r} needs '{comp.nested}': a list of at least two pipelines (each a list of stages)",
                path=ipath,
            )
        inputs = tuple(parse_pipeline(p, (*ipath, i)) for i, p in enumerate(raw_inputs))
    try:
        config = comp.config.model_validate(params)
    except ValidationError as exc:
        raise validation_to_config_error(exc, comp.config, (*path, name)) from None
    return StageSpec(comp.name, config, inputs)


def parse_pipeline(raw: Any, path: KeyPath) -> Pipeline:
    """Validate a list of stages found at ``path``."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError("a pipeline is a non-empty list of stages", path=path)
    return tuple(parse_stage(s, (*path, i)) for i, s in enumerate(raw))


def stage_paths(
    pipeline: Pipeline, where: KeyPath, find: Callable[[Any, KeyPath], Iterable[tuple[KeyPath, Any]]]
) -> list[tuple[KeyPath, Any]]:
    """What ``find(config, yaml_path)`` reports for each stage of a pipeline (fusion inputs
    included): path parameters that leave the job's folder, or that do not exist."""
    found: list[tuple[KeyPath, Any]] = []
    for i, spec in enumerate(pipeline):
        found += find(spec.config, (*where, i, spec.name))
        nested = registry.get(spec.name).nested or "inputs"
        for j, sub in enumerate(spec.inputs):
            found += stage_paths(sub, (*where, i, spec.name, nested, j), find)
    return found


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutputSpec(_Strict):
    """What the job writes."""

    dir: OptionalJobPath = Field(None, description="output folder (default: runs/<job name> beside the job file)")
    run_files: bool = Field(True, description="write one TREC run file per pipeline")


class CacheSpec(_Strict):
    """The on-disk stage cache of rerankers, compressors and generators (docs/reliability.md)."""

    enabled: bool = Field(True, description="reuse stored stage outputs; a rerun after a crash resumes")
    dir: OptionalJobPath = Field(None, description="cache folder (default: $RERANKFLOW_HOME/stages)")


class ServeSpec(_Strict):
    """How ``rerankflow serve`` exposes the job's pipelines (docs/serving.md)."""

    host: str = Field("127.0.0.1", description="address to bind; loopback by default")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    pipelines: list[str] | None = Field(None, description="pipelines to serve (default: all)")
    api_key_env: str = Field(
        "RERANKFLOW_API_KEY",
        description=(
            "environment variable holding the API key; when it is set, every path but /healthz and /readyz "
            "needs 'Bearer <key>'"
        ),
    )
    allow_unauthenticated: bool = Field(
        False,
        description="serve on a non-loopback address without an API key (anyone who reaches the port can use it)",
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="largest request body accepted (413 above)")
    max_concurrent: int = Field(8, ge=1, description="requests in progress at once; more get 429")
    timeout_s: float = Field(120.0, gt=0, description="per-request time limit (504 after it)")
    queue_timeout_s: float = Field(
        30.0, gt=0, description="longest wait for a request's work to start (503 after it; the work is dropped)"
    )
    max_documents: int = Field(1000, ge=1, description="most documents one /v1/rerank request may send")
    max_tokens: int = Field(1024, ge=1, description="largest max_tokens a chat request may ask for")
    filter_max_values: int = Field(
        1000, ge=1, description="most values one in/nin/eq/ne condition of a request's filter may list"
    )
    filter_max_glob_chars: int = Field(256, ge=1, description="longest glob pattern a request's filter may use")
    warm_up: bool = Field(True, description="load every model at start-up (readiness waits for it)")
    allow_system_messages: bool = Field(
        True, description="a chat request's system messages reach the answering model (false: they are dropped)"
    )
    budget_ms: int | None = Field(
        None,
        ge=1,
        description="time budget of a request that sets none (anytime rerankers stop there; none: no budget)",
    )
    max_budget_ms: int | None = Field(
        None, ge=1, description="largest budget_ms a request may set (larger ones are cut)"
    )


_PIPELINES_SCHEMA = WithJsonSchema({"type": "object", "description": "named pipelines; see the stage schemas"})
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class Job(_Strict):
    """A rerankflow job (the top level of a job YAML file)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str = Field("job", description="used in output folder names and run tags")
    dataset: DatasetSpec
    pipelines: Annotated[dict[str, Pipeline], _PIPELINES_SCHEMA]
    measures: list[str] = Field(
        default_factory=lambda: ["nDCG@10"],
        description="ir-measures names, e.g. nDCG@10, R(rel=2)@100",
    )
    baseline: str | None = Field(None, description="pipeline that significance tests compare against")
    batch_size: int = Field(64, ge=1, description="queries per batch through each pipeline")
    output: OutputSpec = Field(default_factory=lambda: OutputSpec())
    executor: Literal["local", "ray"] = Field("local", description="run pipelines in this process or on Ray")
    ray: RayOptions = Field(default_factory=lambda: RayOptions(), description="settings of executor: ray")
    cache: CacheSpec = Field(default_factory=lambda: CacheSpec(), description="the stage cache of `rerankflow run`")
    serve: ServeSpec = Field(default_factory=lambda: ServeSpec(), description="settings of `rerankflow serve`")
    cost: dict[str, Price] = Field(
        default_factory=dict,
        description="prices by model name as the job writes it: {input_per_mtok, output_per_mtok} in dollars; "
        "the run table's $/q, the chat response's usage and the trace spans show the cost",
    )
    allow_outside_paths: bool = Field(
        False,
        description="let relative paths climb out of the job's folder (../data); absolute paths are always allowed",
    )
    tune: TuneSpec | None = Field(None, description="what `rerankflow tune` searches (ignored by `rerankflow run`)")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("use letters, digits, '_', '-' and '.' only")
        return v

    @field_validator("pipelines", mode="before")
    @classmethod
    def _parse_pipelines(cls, raw: Any) -> dict[str, Pipeline]:
        if not isinstance(raw, dict) or not raw:
            raise ConfigError(
                "'pipelines' maps names to lists of stages and needs at least one",
                path=("pipelines",),
            )
        out: dict[str, Pipeline] = {}
        for name, value in raw.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise ConfigError(
                    f"pipeline name {name!r}: use letters, digits, '_', '-' and '.' only",
                    path=("pipelines", str(name)),
                )
            if isinstance(value, tuple) and all(isinstance(s, StageSpec) for s in value):
                out[name] = value
            else:
                out[name] = parse_pipeline(value, ("pipelines", name))
        return out

    @field_validator("measures")
    @classmethod
    def _measures_ok(cls, v: list[str]) -> list[str]:
        parse_measures(v)
        return v

    @model_validator(mode="after")
    def _paths_confined(self) -> Job:
        if self.allow_outside_paths:
            return self
        found = [*paths_outside(self.dataset, ("dataset",)), *paths_outside(self.output, ("output",))]
        found += paths_outside(self.cache, ("cache",))
        for name, pipeline in self.pipelines.items():
            found += stage_paths(pipeline, ("pipelines", name), paths_outside)
        if found:
            where, value = found[0]
            raise ConfigError(
                f"{value!r} leaves the job's folder; give an absolute path, "
                "or set 'allow_outside_paths: true' at the top of the job if it is meant to",
                path=where,
            )
        return self

    @model_validator(mode="after")
    def _tune_paths_exist(self) -> Job:
        if self.tune is not None:
            check_space(self.tune, self._dump_pipelines(self.pipelines))
        return self

    @model_validator(mode="after")
    def _baseline_known(self) -> Job:
        if self.baseline is not None and self.baseline not in self.pipelines:
            raise ConfigError(
                f"baseline {self.baseline!r} is not a pipeline; choose one of: {', '.join(self.pipelines)}",
                path=("baseline",),
            )
        unknown = [p for p in self.serve.pipelines or [] if p not in self.pipelines]
        if unknown:
            raise ConfigError(
                f"serve.pipelines names {', '.join(map(repr, unknown))}, which the job does not define; "
                f"choose from: {', '.join(self.pipelines)}",
                path=("serve", "pipelines"),
            )
        return self

    @field_serializer("pipelines")
    def _dump_pipelines(self, pipelines: dict[str, Pipeline]) -> dict[str, list[dict[str, Any]]]:
        return {name: [s.to_yaml() for s in p] for name, p in pipelines.items()}


def parse_job(data: Any, *, file: str | Path | None = None, doc: YamlDocument | None = None) -> Job:
    """Validate a job given as plain data (what ``yaml.safe_load`` returns)."""
    try:
        if not isinstance(data, dict):
            raise ConfigError(
                f"a job file is a YAML mapping with keys {', '.join(Job.model_fields)}; got {type(data).__name__}"
            )
        return Job.model_validate(data)
    except ValidationError as exc:
        err = validation_to_config_error(exc, Job)
        raise (doc.locate(err) if doc else err.located(file, None)) from None
    except ConfigError as err:
        raise (doc.locate(err) if doc else err.located(file, None)) from None


INPUT_FILES = ("corpus", "index", "topics", "qrels", "run", "beir", "questions")
"""The dataset keys that name files or folders a run reads (they must exist)."""


def check_inputs(job: Job, file: str | Path) -> None:
    """Raise a :class:`ConfigError` with FILE:LINE for the first input a run would read that
    does not exist: a dataset file or folder, a prompt template given as a file, or a model
    name one typo away from a packaged model."""
    base = Path(file).parent
    doc = YamlDocument(Path(file).read_text(encoding="utf-8"), file)
    for key in INPUT_FILES:
        value = getattr(job.dataset, key)
        if value and not resolve_path(value, base).exists():
            fix = "make it with: rerankflow index SOURCE... -o FOLDER" if key == "index" else "check the path"
            err = ConfigError(f"{resolve_path(value, base)} not found; {fix}", path=("dataset", key))
            raise doc.locate(err)
    for name, pipeline in job.pipelines.items():
        templates = stage_paths(pipeline, ("pipelines", name), _template_files)
        for where, value in templates:
            if not resolve_path(value, base).is_file():
                valid = ", ".join(builtin_names())
                err = ConfigError(
                    f"template {value!r} is neither a built-in ({valid}) nor a file{did_you_mean(value, builtin_names())}",
                    path=where,
                )
                raise doc.locate(err)
        for where, value in stage_paths(pipeline, ("pipelines", name), _loaded_models):
            try:
                check_name(value)
            except BackendError as exc:
                raise doc.locate(ConfigError(str(exc), path=where)) from None


def job_models(job: Job) -> list[dict[str, str]]:
    """Every model a job's pipelines name: pipeline, where in the YAML, model name."""
    return [
        {"pipeline": name, "where": ".".join(str(k) for k in where[2:] if not isinstance(k, int)), "model": value}
        for name, pipeline in job.pipelines.items()
        for where, value in stage_paths(pipeline, ("pipelines", name), _model_names)
    ]


def _model_names(config: Any, where: KeyPath, served: bool = True) -> list[tuple[KeyPath, Any]]:
    """Every ``model`` setting of a stage config, nested settings (backends) included; with
    ``served=False`` not those of HTTP backends (the server's own names for its models)."""
    found: list[tuple[KeyPath, Any]] = []
    if not served and getattr(config, "kind", None) == "http":
        return found
    for key in getattr(type(config), "model_fields", {}):
        value = getattr(config, key)
        if key == "model" and isinstance(value, str):
            found.append(((*where, key), value))
        elif hasattr(type(value), "model_fields"):
            found += _model_names(value, (*where, key), served)
    return found


def _loaded_models(config: Any, where: KeyPath) -> list[tuple[KeyPath, Any]]:
    """The models a stage loads itself (not through an HTTP server)."""
    return _model_names(config, where, served=False)


def _template_files(config: Any, where: KeyPath) -> list[tuple[KeyPath, Any]]:
    """A stage config's ``template`` when it names no built-in template (so it is a file)."""
    value = getattr(config, "template", None)
    return [((*where, "template"), value)] if isinstance(value, str) and value not in builtin_names() else []


def load_job_text(text: str, *, file: str | Path | None = None) -> Job:
    """Parse and validate a job from YAML text (with ``file``: backend options written as
    paths must exist relative to its folder)."""
    doc = YamlDocument(text, file)
    job = parse_job(doc.data, file=file, doc=doc)
    if file is not None:
        base = Path(file).parent
        for name, pipeline in job.pipelines.items():
            missing = stage_paths(pipeline, ("pipelines", name), lambda c, w: missing_paths(c, base, w))
            if missing:
                where, resolved = missing[0]
                raise doc.locate(ConfigError(f"{resolved} not found (relative to the job's folder)", path=where))
    return job


def load_job(path: str | Path) -> Job:
    """Parse and validate a job file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("job file not found", file=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"job file is not valid UTF-8 ({exc.reason})", file=path) from None
    return load_job_text(text, file=path)


def dump_job(job: Job) -> str:
    """YAML text of a job with every default written out (``load_job_text`` reads it back)."""
    data = job.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
