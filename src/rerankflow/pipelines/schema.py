"""JSON Schema of job files, with one schema per registered stage."""

from __future__ import annotations

from typing import Any

from .. import registry
from .job import Job


def stage_schema(defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Schema of one stage entry: a one-key mapping from a registered name to its params. The
    models its params refer to (``#/$defs/Budget``...) are added to ``defs``, the root's."""
    options: list[dict[str, Any]] = []
    for comp in registry.components():
        params = comp.config.model_json_schema()
        if comp.nested is not None:
            params.setdefault("properties", {})[comp.nested] = {
                "type": "array",
                "minItems": 2,
                "items": {"$ref": "#/$defs/Pipeline"},
            }
            params.setdefault("required", []).append(comp.nested)
        shared = params.pop("$defs", {})
        if defs is not None:
            defs.update(shared)
        options.append(
            {
                "type": "object",
                "properties": {comp.name: params},
                "required": [comp.name],
                "additionalProperties": False,
            }
        )
        if comp.nested is None:
            options.append({"const": comp.name})
    return {"oneOf": options}


def job_schema() -> dict[str, Any]:
    """The full schema of a job file."""
    schema = Job.model_json_schema()
    defs = schema.setdefault("$defs", {})
    defs["Stage"] = stage_schema(defs)
    defs["Pipeline"] = {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/Stage"}}
    schema["properties"]["pipelines"] = {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": {"$ref": "#/$defs/Pipeline"},
        "description": "named pipelines, each a list of stages",
    }
    return schema
