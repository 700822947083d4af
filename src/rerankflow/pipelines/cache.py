"""The on-disk stage cache: a rerun after a crash resumes where the last one stopped.

A :class:`CachedStage` wraps a reranker, compressor or generator. Each query's output is
stored under two keys:

* the **stage key**, a SHA-256 over the stage class, its validated parameters (for YAML
  jobs: the registry name and the full config, backend settings included) and the identity
  of every model and prompt template the stage holds (``identity`` properties: template
  digest, model package version or local folder signature, revision);
* the **input key**, a SHA-256 over the incoming ranking (query, every candidate's
  document, score and history).

Entries are JSON files written through a temporary file and an atomic rename, so a crash or
Ctrl-C never leaves half an entry, and several processes may share one folder (the last
complete write wins; readers never see a partial file). Every entry carries a checksum of
its content; an entry that fails to parse or check is logged, deleted and recomputed.

What the stage recorded for a query (its records in the ranking's trace: LLM usage, repairs,
compression counts) is stored with it and restored on a hit, so reports of a resumed run
match an uninterrupted one. Every record the stage adds is marked with how the cache answered
(``cache``: ``hit``, ``computed``, or ``corrupt`` when a corrupt entry was recomputed); a
stage that records nothing gets a record holding just that mark. A ranking whose reranking
depended on the clock (a ``seconds`` budget or a request's deadline, ``BudgetUse.timed``) is
never stored: another run could have had more time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..io.files import atomic_write
from ..io.rankings import ranking_from_dict, ranking_to_dict, record_from_dict, record_to_dict
from ..paths import cache_home
from ..stage import Transformer
from ..types import CacheUse, Ranking, StageRecord

log = logging.getLogger(__name__)

CACHE_FORMAT = 2
"""Bumped whenever the entry layout or the key recipe changes (old entries are then misses)."""


def canonical_json(data: Any) -> str:
    """One spelling of ``data``: sorted keys, no spaces, ASCII only (lone surrogates escaped)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def digest(data: Any) -> str:
    """SHA-256 hex digest of :func:`canonical_json` of ``data``."""
    return hashlib.sha256(canonical_json(data).encode("ascii")).hexdigest()


def component_identities(stage: object) -> list[str]:
    """``identity`` of every model, encoder and template the stage holds as an attribute."""
    found: set[str] = set()
    for value in vars(stage).values():
        for item in value if isinstance(value, list | tuple) else (value,):
            if isinstance(getattr(type(item), "identity", None), property):
                found.add(str(item.identity))
    return sorted(found)


class StageCache:
    """A folder of cache entries (default ``$RERANKFLOW_HOME/stages``)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder).expanduser() if folder is not None else cache_home() / "stages"

    def path(self, stage_key: str, input_key: str) -> Path:
        """Where an entry lives: one folder per stage, fanned out by the input key."""
        return self.folder / stage_key[:24] / input_key[:2] / f"{input_key}.json"

    def get(self, stage_key: str, input_key: str) -> tuple[dict[str, Any] | None, bool]:
        """``(payload, corrupt)``: the payload stored for these keys, or ``None`` when absent
        or corrupt; a corrupt entry is deleted (and ``corrupt`` is true) so it is recomputed.
        """
        path = self.path(stage_key, input_key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None, False
        except OSError as exc:
            log.warning("cannot read stage cache entry %s (%s); recomputing", path, exc)
            return None, False
        payload = _verified(raw, stage_key, input_key)
        if payload is None:
            log.warning("stage cache entry %s is corrupt; deleting it and recomputing", path)
            path.unlink(missing_ok=True)
            return None, True
        return payload, False

    def put(self, stage_key: str, input_key: str, payload: Mapping[str, Any]) -> None:
        """Store ``payload`` atomically (a temporary file renamed into place)."""
        body = canonical_json(payload)
        entry = {
            "format": CACHE_FORMAT,
            "stage": stage_key,
            "input": input_key,
            "sha256": hashlib.sha256(body.encode("ascii")).hexdigest(),
            "payload": payload,
        }
        with atomic_write(self.path(stage_key, input_key)) as fh:
            fh.write(canonical_json(entry))


def _verified(raw: bytes, stage_key: str, input_key: str) -> dict[str, Any] | None:
    """The payload of an entry if it parses, names these keys and matches its checksum."""
    try:
        entry = json.loads(raw.decode("ascii"))
        payload = entry["payload"]
        ok = (
            entry["format"] == CACHE_FORMAT
            and entry["stage"] == stage_key
            and entry["input"] == input_key
            and entry["sha256"] == hashlib.sha256(canonical_json(payload).encode("ascii")).hexdigest()
            and isinstance(payload, dict)
        )
    except (ValueError, KeyError, TypeError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return payload if ok else None


class CachedStage(Transformer):
    """``stage`` with its per-query outputs cached in ``cache`` (see the module docstring).

    ``identity`` is what the stage's output depends on beyond its class, models and
    templates: for YAML jobs, the registry name and validated config. Python users pass the
    parameters they built the stage with.
    """

    def __init__(self, stage: Transformer, cache: StageCache, identity: Mapping[str, Any]) -> None:
        self.stage = stage
        self.cache = cache
        self.identity = dict(identity)

    @property
    def name(self) -> str:
        """The wrapped stage's name."""
        return self.stage.name

    @cached_property
    def key(self) -> str:
        """The stage key (computed on first use: model identities may look at files)."""
        cls = type(self.stage)
        return digest(
            {
                "format": CACHE_FORMAT,
                "class": f"{cls.__module__}.{cls.__qualname__}",
                "identity": self.identity,
                "components": component_identities(self.stage),
            }
        )

    def children(self) -> list[Transformer]:
        """The wrapped stage."""
        return [self.stage]

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Answer cached queries from disk, run the stage on the rest, store what it returns."""
        inputs = [digest(ranking_to_dict(r, trace=False)) for r in batch]
        out: list[Ranking | None] = [None] * len(batch)
        todo: dict[int, CacheUse] = {}
        for i, (ranking, input_key) in enumerate(zip(batch, inputs, strict=True)):
            payload, bad = self.cache.get(self.key, input_key)
            if payload is not None:
                try:
                    cached = ranking_from_dict(payload["ranking"])
                    records = tuple(record_from_dict(r) for r in payload["records"])
                    if cached.query == ranking.query:
                        out[i] = replace(cached, trace=ranking.trace + _marked(records, "hit"))
                        continue
                except (DataError, KeyError, TypeError, ValueError):
                    pass
                bad = True
            todo[i] = "corrupt" if bad else "computed"
        if todo:
            computed = self.stage([batch[i] for i in todo])
            for (i, use), ranking in zip(todo.items(), computed, strict=True):
                records = ranking.trace[len(batch[i].trace) :] or (StageRecord(self.name),)
                out[i] = replace(ranking, trace=batch[i].trace + _marked(records, use))
                if any(r.budget is not None and r.budget.timed for r in records):
                    continue  # what a deadline allowed differs run to run: never reused
                payload = {
                    "ranking": ranking_to_dict(ranking, trace=False),
                    "records": [record_to_dict(r) for r in records],
                }
                self.cache.put(self.key, inputs[i], payload)
        return [r for r in out if r is not None]

    def __repr__(self) -> str:
        return f"CachedStage({self.stage!r})"


def _marked(records: Sequence[StageRecord], use: CacheUse) -> tuple[StageRecord, ...]:
    """``records`` marked with how the cache answered."""
    return tuple(replace(r, cache=use) for r in records)
