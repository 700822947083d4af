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

What the stage recorded for a query (LLM usage, compression counts) is stored with it and
restored on a hit, so reports of a resumed run match an uninterrupted one; repair counters
(``problems``) count only the queries computed in this run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..accounting import ReportsUsage
from ..backends.base import Usage
from ..compressors.base import Compressor, QueryCompression
from ..errors import DataError
from ..io.files import atomic_write
from ..io.rankings import ranking_from_dict, ranking_to_dict
from ..paths import cache_home
from ..stage import Transformer
from ..types import Query, Ranking

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
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


@dataclass
class CacheStats:
    """How a cached stage's queries were answered (thread-safe counters)."""

    hits: int = 0
    computed: int = 0
    corrupt: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, *, hits: int = 0, computed: int = 0, corrupt: int = 0) -> None:
        """Add to the counters."""
        with self._lock:
            self.hits += hits
            self.computed += computed
            self.corrupt += corrupt

    def as_dict(self) -> dict[str, int]:
        """Plain data."""
        return {"hits": self.hits, "computed": self.computed, "corrupt": self.corrupt}


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


def export_records(stage: Transformer, qid: str) -> dict[str, Any]:
    """What ``stage`` recorded about query ``qid`` (usage, compression), as plain data."""
    out: dict[str, Any] = {}
    if isinstance(stage, ReportsUsage) and qid in stage.usage.by_query:
        out["usage"] = stage.usage.by_query[qid].as_dict()
    if isinstance(stage, Compressor) and qid in stage.compression:
        out["compression"] = stage.compression[qid].as_dict()
    return out


def restore_records(stage: Transformer, qid: str, records: Mapping[str, Any]) -> None:
    """Put records saved by :func:`export_records` back into ``stage``."""
    if isinstance(stage, ReportsUsage) and "usage" in records:
        stage.usage.restore(qid, Usage(**records["usage"]))
    if isinstance(stage, Compressor) and "compression" in records:
        stage.compression[qid] = QueryCompression(**records["compression"])


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
        self.cache_stats = CacheStats()

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

    def cache_report(self) -> dict[str, Any]:
        """Queries answered from the cache, computed, and corrupt entries recomputed."""
        return self.cache_stats.as_dict()

    def children(self) -> list[Transformer]:
        """The wrapped stage."""
        return [self.stage]

    def forget(self, queries: Sequence[Query]) -> None:
        """Forwarded to the wrapped stage."""
        self.stage.forget(queries)

    def transform(self, batch: Sequence[Ranking]) -> list[Ranking]:
        """Answer cached queries from disk, run the stage on the rest, store what it returns."""
        inputs = [digest(ranking_to_dict(r)) for r in batch]
        out: list[Ranking | None] = [None] * len(batch)
        todo: list[int] = []
        corrupt = 0
        for i, (ranking, input_key) in enumerate(zip(batch, inputs, strict=True)):
            payload, bad = self.cache.get(self.key, input_key)
            if payload is not None:
                try:
                    cached = ranking_from_dict(payload["ranking"])
                    if cached.query == ranking.query:
                        restore_records(self.stage, ranking.query.qid, payload.get("records", {}))
                        out[i] = cached
                        continue
                except (DataError, KeyError, TypeError):
                    pass
                bad = True
            corrupt += bad
            todo.append(i)
        if todo:
            computed = self.stage([batch[i] for i in todo])
            for i, ranking in zip(todo, computed, strict=True):
                records = export_records(self.stage, ranking.query.qid)
                self.cache.put(self.key, inputs[i], {"ranking": ranking_to_dict(ranking), "records": records})
                out[i] = ranking
        self.cache_stats.count(hits=len(batch) - len(todo), computed=len(todo), corrupt=corrupt)
        return [r for r in out if r is not None]

    def __repr__(self) -> str:
        return f"CachedStage({self.stage!r})"
