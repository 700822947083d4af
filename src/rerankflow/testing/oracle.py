"""A judge that answers reranking prompts from relevance judgments, with controlled noise.

It reads the prompts rerankflow's built-in templates produce: the query from the line
``Query: ...`` (or, for query likelihood, from the continuation), the passages from lines
``[label] text``, ``Passage A: text`` or ``Passage: text``. Each passage's *perceived*
relevance is its judged grade (0 when unjudged) plus Gaussian noise of standard deviation
``noise`` drawn per prompt (seeded by the prompt's text, so answers are reproducible and
independent of call order), plus a tiny per-document offset that makes equal grades a
consistent total order. With ``noise=0`` it is a perfect judge.

Answers: label calls get log-probabilities that order the labels by perceived relevance
(yes/no and grade labels for a single passage); generation returns ``[c] > [a] > [b]``; a
continuation gets ``perceived - 4`` nats per word. For two passages whose grades differ by
``d``, a comparison comes out right with probability ``Phi(d / (noise * sqrt(2)))``.
Passages must reach the judge uncut: ``truncate`` never cuts.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence

from ..backends.base import LLMBackend
from ..backends.types import Completion, ContinuationScores, GenerationParams, LabelScores, Prompt
from ..errors import BackendError
from ..types import Document, Query, document_text, one_line
from .fake import prompt_text

_PASSAGE = re.compile(r"^(?:\[([^\]]{1,8})\]|Passage(?: ([A-Z]))?:) ?(.*)$")


def _stable_unit(text: str) -> float:
    """A number in [0, 1) fixed by ``text`` (independent of Python's hash seed)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


class OracleJudge(LLMBackend):
    """Answers from ``qrels`` (``qid -> docid -> grade``); see the module docstring."""

    kind = "oracle"

    def __init__(
        self,
        qrels: Mapping[str, Mapping[str, int]],
        queries: Iterable[Query],
        documents: Iterable[Document],
        *,
        noise: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(f"oracle(noise={noise})")
        if noise < 0:
            raise BackendError(f"noise must be >= 0, got {noise}")
        self.qrels = qrels
        self.noise = noise
        self.seed = seed
        self._qid = {one_line(q.text): q.qid for q in queries}
        self._docid: dict[str, str] = {}
        for doc in documents:
            self._docid.setdefault(one_line(document_text(doc)), doc.docid)

    def load(self) -> None:
        """Nothing to load."""

    def count_tokens(self, text: str) -> int:
        """Whitespace-separated words."""
        return len(text.split())

    def truncate_many(self, texts: Sequence[str], max_tokens: int) -> list[str]:
        """Never cuts (the judge must recognise whole passages)."""
        return list(texts)

    # -- reading prompts ----------------------------------------------------------------------
    def _read(self, prompt: Prompt, query: str | None = None) -> tuple[list[str | None], list[float]]:
        text = prompt_text(prompt)
        lines = text.splitlines()
        if query is None:
            query = next((ln[len("Query: ") :] for ln in lines if ln.startswith("Query: ")), None)
        qid = self._qid.get(one_line(query or ""))
        if qid is None:
            raise BackendError(f"oracle: no known query in the prompt (looked for a 'Query: ' line): {text[:120]!r}")
        rng = random.Random(f"{self.seed}:{text}:{query}")
        labels: list[str | None] = []
        perceived: list[float] = []
        for line in lines:
            match = _PASSAGE.match(line)
            if not match:
                continue
            docid = self._docid.get(one_line(match.group(3)))
            if docid is None:
                raise BackendError(f"oracle: unknown passage in the prompt: {match.group(3)[:80]!r}")
            grade = self.qrels.get(qid, {}).get(docid, 0)
            noise = rng.gauss(0.0, self.noise) if self.noise else 0.0
            labels.append(match.group(1) or match.group(2))
            perceived.append(grade + noise + 1e-3 * _stable_unit(docid))
        if not perceived:
            raise BackendError(f"oracle: no passages in the prompt: {text[:120]!r}")
        return labels, perceived

    # -- answers -------------------------------------------------------------------------------
    def _label_scores(self, prompt: Prompt, wanted: Sequence[str]) -> dict[str, float]:
        labels, perceived = self._read(prompt)
        if len(perceived) == 1 and labels[0] is None:
            x = perceived[0]
            if list(wanted) == ["yes", "no"]:
                return {"yes": -math.log1p(math.exp(-(x - 1.5))), "no": -math.log1p(math.exp(x - 1.5))}
            if all(w.isdigit() for w in wanted):
                return {w: -((int(w) - x) ** 2) for w in wanted}
            raise BackendError(f"oracle: cannot score labels {list(wanted)} for a single passage")
        by_label = dict(zip(labels, perceived, strict=True))
        missing = [w for w in wanted if w not in by_label]
        if missing:
            raise BackendError(f"oracle: labels {missing} name no passage of the prompt")
        return {w: 4.0 * by_label[w] for w in wanted}

    async def _alabel_logprobs(self, prompts: list[Prompt], labels: list[str]) -> list[LabelScores]:
        out = []
        for p in prompts:
            stats = self.stats(self.count_tokens(prompt_text(p)), 1, 0.0)
            norm = LabelScores(self._label_scores(p, labels), stats).normalized()
            out.append(LabelScores({k: v - 0.01 for k, v in norm.items()}, stats))
        return out

    async def _agenerate(self, prompts: list[Prompt], params: GenerationParams) -> list[Completion]:
        out = []
        for p in prompts:
            labels, perceived = self._read(p)
            order = sorted(range(len(labels)), key=lambda i: -perceived[i])
            text = " > ".join(f"[{labels[i]}]" for i in order)
            out.append(Completion(text, self.stats(self.count_tokens(prompt_text(p)), len(order), 0.0), "stop"))
        return out

    async def _acontinuation_logprobs(
        self, prompts: list[Prompt], continuations: list[str]
    ) -> list[ContinuationScores]:
        out = []
        for p, c in zip(prompts, continuations, strict=True):
            _, perceived = self._read(p, query=c)
            values = tuple(perceived[0] - 4.0 for _ in c.split())
            out.append(ContinuationScores(values, self.stats(self.count_tokens(prompt_text(p)), 0, 0.0)))
        return out
