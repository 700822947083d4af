"""Presets: a published reranker's whole configuration as data.

A preset (``rerankflow/presets/NAME.yaml``) binds model checkpoints to the stage, the prompt
template (which fixes the passage formatting and identifier style), the settings and the
output budget they were published with, the reference implementation whose format it
reproduces and what the parity test compares, and the published DL19/DL20 nDCG@10 with its
source. ``listwise: {preset: rank_zephyr, backend: ...}`` in a job, or a backend model that a
preset lists, applies it; settings written in the job win over the preset's.
``rerankflow presets list | show NAME`` prints them. Nothing is inferred from model names:
a model is matched only by the ids a preset names.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError
from ..options import describe
from ..suggest import did_you_mean
from ..yamlio import YamlDocument

Stage = Literal["listwise", "pointwise", "pairwise", "setwise", "crossencoder"]


class Preset(BaseModel):
    """One published configuration (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    stage: Stage
    models: list[str] = Field(default_factory=list, description="checkpoint ids this preset is for")
    template: str | None = Field(None, description="built-in prompt template (LLM stages)")
    backend_kind: str | None = Field(
        None, description="the backend kind the checkpoints need (hf_seq2seq for T5); filled in where a job names none"
    )
    settings: dict[str, Any] = Field(default_factory=dict, description="the stage's options as published")
    reference: str = Field(..., description="reference implementation and version whose format this reproduces")
    parity: str = Field(..., description="what the parity test compares, or why there is none")
    published: dict[str, Any] | None = Field(None, description="dl19 / dl20 nDCG@10 and their source")

    @model_validator(mode="after")
    def _template_where_needed(self) -> Preset:
        if (self.stage == "crossencoder") != (self.template is None):
            raise ValueError("LLM stages' presets name a template; a crossencoder preset names none")
        return self


def _folder() -> Path:
    return Path(str(resources.files("rerankflow") / "presets"))


@cache
def catalogue() -> dict[str, Preset]:
    """Every built-in preset by name, read from the package once per process (the validators
    that apply presets consult this table, not the files)."""
    out = {}
    for path in sorted(_folder().glob("*.yaml")):
        doc = YamlDocument(path.read_text(encoding="utf-8"), path)
        try:
            out[path.stem] = Preset.model_validate(doc.data)
        except ValidationError as exc:
            raise ConfigError(f"preset {path.stem!r} is invalid: {describe(exc)}", file=path) from exc
    return out


def preset_names() -> list[str]:
    """The names of the built-in presets."""
    return sorted(catalogue())


def load_preset(name: str) -> Preset:
    """The built-in preset ``name``."""
    found = catalogue().get(name)
    if found is None:
        names = preset_names()
        raise ConfigError(f"no preset {name!r}{did_you_mean(name, names)}; the presets are: {', '.join(names)}")
    return found


def preset_for_model(model: str) -> Preset | None:
    """The preset that names ``model`` among its checkpoints, if any."""
    return next((p for p in catalogue().values() if model in p.models), None)


def resolve(stage: str | None, preset: str | None, model: str | None) -> Preset | None:
    """The preset a stage uses: the one named, else the one that lists the backend's model
    (checked against ``stage`` when given)."""
    found = load_preset(preset) if preset else (preset_for_model(model) if model else None)
    if found is not None and stage is not None and found.stage != stage:
        raise ConfigError(
            f"preset {found.name!r} is for the {found.stage} stage, not {stage}; "
            f"use it as `{found.stage}: {{preset: {found.name}, ...}}`"
        )
    return found


def apply_preset(data: Any, keys: type[BaseModel], model: str | None, stage: str | None = None) -> Any:
    """A stage config (``data``) with the settings (and template) its preset gives and it does
    not, so a dumped job says what ran; ``model`` picks the preset when none is named."""
    if not isinstance(data, dict):
        return data
    try:
        preset = resolve(stage, data.get("preset"), model)
    except ConfigError as exc:  # a validator's error: pydantic then places it at the stage's key and line
        raise ValueError(exc.message) from None
    if preset is None:
        return data
    foreign = sorted(k for k in preset.settings if k not in keys.model_fields)
    if foreign:
        raise ValueError(
            f"preset {preset.name!r} is for the {preset.stage} stage (its settings {foreign} are not this "
            f"stage's); use it as `{preset.stage}: {{preset: {preset.name}, ...}}`"
        )
    template = {"template": preset.template} if preset.template else {}
    out = {**preset.settings, **template, **data, "preset": preset.name}
    for key, value in preset.settings.items():  # mappings merge one level (engine_options: the job's keys win)
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            out[key] = {**value, **data[key]}
    backend = data.get("backend")
    if preset.backend_kind and isinstance(backend, dict) and "kind" not in backend:
        out["backend"] = {**backend, "kind": preset.backend_kind}
    return out
