"""Settings, declared once.

Every built-in stage, backend, HTTP transport, executor and tokenizer declares its settings in
one pydantic model next to its class (its ``Options``): types, defaults, bounds, descriptions
and cross-field rules. The constructor takes the objects the class works with (a backend, an
encoder, a corpus, a model name) plus either an ``options`` object or the settings as
keywords, validates them once, here, and reads them as ``self.options``. The YAML layer
derives each config from the same model (a stage's config adds the keys that name its
objects: ``backend``, ``template``, ``model``...; a backend's ``options`` are its model), so a
setting has one default and one check wherever it is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError, RerankflowError
from .suggest import did_you_mean

OptionsT = TypeVar("OptionsT", bound="Options")


class Options(BaseModel):
    """Base of every settings model: frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def build(
        cls: type[OptionsT],
        given: OptionsT | None,
        settings: Mapping[str, Any],
        owner: str,
        error: type[RerankflowError] = ConfigError,
    ) -> OptionsT:
        """``given`` (or the defaults) with ``settings`` applied, validated; an ``error`` names
        ``owner``, each bad setting and what it should be."""
        if given is not None and not isinstance(given, cls):
            raise error(f"{owner} takes options of type {cls.__name__}, got {type(given).__name__}")
        if given is not None and not settings:
            return given
        data = {**(given.model_dump(exclude_unset=True) if given is not None else {}), **settings}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise error(f"{owner}: {describe(exc, cls)}") from None

    def pick(self, options: type[OptionsT]) -> OptionsT:
        """The fields of ``options`` taken from this model (a YAML config is the stage's
        options plus the keys that name its objects)."""
        return options.model_validate({name: getattr(self, name) for name in options.model_fields})


class StageOptions(Options):
    """Base of every stage's settings."""


def describe(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """A pydantic error as one line: ``setting: problem (got value)`` for each problem; an
    unknown setting of ``model`` names the closest valid ones and lists them all."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden" and model is not None and len(err["loc"]) == 1:
            valid = list(model.model_fields)
            hint = did_you_mean(where, valid)
            parts.append(f"unknown setting {where!r}{hint}; valid settings: {', '.join(valid)}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        got = f" (got {err['input']!r})" if err["type"] not in ("value_error", "missing") else ""
        parts.append(f"{where}: {msg}{got}" if where else msg)
    return "; ".join(parts)
