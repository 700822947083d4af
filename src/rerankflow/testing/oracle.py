"""A judge that answers reranking prompts from relevance judgments, with controlled noise.

It reads the prompts rerankflow's built-in templates produce: the query from the line
``Query: ...`` (or, for query likelihood, from the continuation), the passages from lines
``[label] text``, ``Passage A: text`` or ``Passage: text``. Each passage's *perceived*
relevance is its judged grade (0 when unjudged) plus Gaussian noise of standard deviation
``noise`` drawn per prompt (seeded by the prompt's text, so answers are reproducible and
independent of call order), plus a tiny per-document offset that makes equal grades a
consistent total order. With ``noise=0`` it is a perfect judge.

That judge errs independently in every prompt, so a method that asks about a passage many
times averages its errors away. Real LLM judges do not: :meth:`OracleJudge.realistic` adds the
ways they err (each off by default; see docs/benchmarks.md for the chosen values):

* ``passage_error``: a persistent error per (query, passage), the same in every prompt
  (the model misreads that passage consistently);
* ``position_bias``: perceived relevance gains ``+b`` at the first position of a prompt,
  falling linearly to ``-b`` at the last (``b < 0``: recency);
* ``copy_rate``: probability that a prompt with several passages is answered in its input
  order (permutation ``[1] > [2] > ...``, labels scored in order);
* ``malformed_rate``: probability that an answer is malformed: a generated permutation with a
  duplicate, missing ids, an out-of-range id or prose without ids (one kind per answer, drawn
  from the prompt's RNG), a label call whose label fell out of the returned top log-probabilities.

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


REALISTIC = {
    "noise": 0.5,
    "passage_error": 0.5,
    "position_bias": 0.3,
    "copy_rate": 0.05,
    "malformed_rate": 0.05,
}
"""The realistic judge's error sizes and rates (chosen, not fitted; see docs/rerankers.md)."""


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
        passage_error: float = 0.0,
        position_bias: float = 0.0,
        copy_rate: float = 0.0,
        malformed_rate: float = 0.0,
    ) -> None:
        extra = {"passage_error": passage_error, "position_bias": position_bias}
        rates = {"copy_rate": copy_rate, "malformed_rate": malformed_rate}
        name = ", ".join(f"{k}={v:g}" for k, v in {"noise": noise, **extra, **rates}.items() if v or k == "noise")
        super().__init__(f"oracle({name})")
        if noise < 0 or passage_error < 0:
            raise BackendError(f"noise and passage_error must be >= 0, got {noise}, {passage_error}")
        bad = {k: v for k, v in rates.items() if not 0 <= v <= 1}
        if bad:
            raise BackendError(f"rates must lie in [0, 1], got {bad}")
        self.qrels = qrels
        self.noise = noise
        self.seed = seed
        self.passage_error = passage_error
        self.position_bias = position_bias
        self.copy_rate = copy_rate
        self.malformed_rate = malformed_rate
        self._qid = {one_line(q.text): q.qid for q in queries}
        self._docid: dict[str, str] = {}
        for doc in documents:
            self._docid.setdefault(one_line(document_text(doc)), doc.docid)

    @classmethod
    def realistic(
        cls,
        qrels: Mapping[str, Mapping[str, int]],
        queries: Iterable[Query],
        documents: Iterable[Document],
        *,
        seed: int = 0,
        **sizes: float,
    ) -> OracleJudge:
        """A judge that errs the way LLM rankers do: :data:`REALISTIC`, with any of its
        entries replaced by ``sizes`` (docs/rerankers.md says where the values come from)."""
        unknown = sorted(set(sizes) - set(REALISTIC))
        if unknown:
            raise BackendError(f"unknown judge settings {unknown}; known: {sorted(REALISTIC)}")
        return cls(qrels, queries, documents, seed=seed, **{**REALISTIC, **sizes})

    def load(self) -> None:
        """Nothing to load."""

    def count_tokens(self, text: str) -> int:
        """Whitespace-separated words."""
        return len(text.split())

    def truncate_many(self, texts: Sequence[str], max_tokens: int) -> list[str]:
        """Never cuts (the judge must recognise whole passages)."""
        return list(texts)

    # -- reading prompts ----------------------------------------------------------------------
    def _read(self, prompt: Prompt, query: str | None = None) -> tuple[list[str | None], list[float], random.Random]:
        """Labels and perceived relevance of the prompt's passages, and the prompt's own RNG."""
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
            perceived.append(grade + self._misreading(qid, docid) + noise + 1e-3 * _stable_unit(docid))
        if not perceived:
            raise BackendError(f"oracle: no passages in the prompt: {text[:120]!r}")
        m = len(perceived)
        if m > 1 and self.copy_rate and rng.random() < self.copy_rate:
            perceived = [float(m - i) for i in range(m)]  # answers in the order it was shown
        elif m > 1 and self.position_bias:
            perceived = [p + self.position_bias * (1 - 2 * i / (m - 1)) for i, p in enumerate(perceived)]
        return labels, perceived, rng

    def _misreading(self, qid: str, docid: str) -> float:
        """The persistent error for this (query, passage): the same in every prompt."""
        if not self.passage_error:
            return 0.0
        return random.Random(f"{self.seed}:passage:{qid}:{docid}").gauss(0.0, self.passage_error)

    def _malformed(self, rng: random.Random) -> bool:
        return bool(self.malformed_rate) and rng.random() < self.malformed_rate

    def _garble(self, ids: list[str], rng: random.Random) -> str:
        """A malformed permutation answer of a kind the prompt's RNG picks."""
        kind = rng.randrange(4)
        if kind == 0 and len(ids) > 1:  # a duplicate in place of another id
            ids = [*ids[:-1], ids[0]]
        elif kind == 1:  # the answer stops early
            ids = ids[: max(1, len(ids) // 2)]
        elif kind == 2:  # an identifier that names no passage
            ids = [*ids[:1], str(len(ids) + rng.randint(1, 5)), *ids[1:]]
        elif kind == 3:
            return "I am sorry, but I cannot rank these passages without more context."
        return " > ".join(f"[{i}]" for i in ids)

    # -- answers -------------------------------------------------------------------------------
    def _label_scores(self, prompt: Prompt, wanted: Sequence[str]) -> tuple[dict[str, float], frozenset[str]]:
        """Label log-probabilities, and the labels a malformed answer left unscored."""
        scores, rng = self._label_values(prompt, wanted)
        if len(scores) > 1 and self._malformed(rng):  # one label fell out of the returned top-k
            lost = rng.choice(sorted(scores))
            scores[lost] = min(v for k, v in scores.items() if k != lost)
            return scores, frozenset({lost})
        return scores, frozenset()

    def _label_values(self, prompt: Prompt, wanted: Sequence[str]) -> tuple[dict[str, float], random.Random]:
        labels, perceived, rng = self._read(prompt)
        if len(perceived) == 1 and labels[0] is None:
            x = perceived[0]
            if list(wanted) == ["yes", "no"]:
                return {"yes": -math.log1p(math.exp(-(x - 1.5))), "no": -math.log1p(math.exp(x - 1.5))}, rng
            if all(w.isdigit() for w in wanted):
                return {w: -((int(w) - x) ** 2) for w in wanted}, rng
            raise BackendError(f"oracle: cannot score labels {list(wanted)} for a single passage")
        by_label = dict(zip(labels, perceived, strict=True))
        missing = [w for w in wanted if w not in by_label]
        if missing:
            raise BackendError(f"oracle: labels {missing} name no passage of the prompt")
        return {w: 4.0 * by_label[w] for w in wanted}, rng

    async def _alabel_logprobs(
        self, prompts: list[Prompt], labels: list[str], after: int = 0, context: str | None = None
    ) -> list[LabelScores]:
        out = []
        for p in prompts:
            stats = self.stats(self.count_tokens(prompt_text(p)), 1, 0.0)
            values, lost = self._label_scores(p, labels)
            norm = LabelScores(values, stats).normalized()
            out.append(LabelScores({k: v - 0.01 for k, v in norm.items()}, stats, lost))
        return out

    async def _agenerate(self, prompts: list[Prompt], params: GenerationParams) -> list[Completion]:
        out = []
        for p in prompts:
            labels, perceived, rng = self._read(p)
            order = sorted(range(len(labels)), key=lambda i: -perceived[i])
            ids = [str(labels[i]) for i in order]
            text = self._garble(ids, rng) if self._malformed(rng) else " > ".join(f"[{i}]" for i in ids)
            out.append(Completion(text, self.stats(self.count_tokens(prompt_text(p)), len(order), 0.0), "stop"))
        return out

    async def _acontinuation_logprobs(
        self, prompts: list[Prompt], continuations: list[str]
    ) -> list[ContinuationScores]:
        out = []
        for p, c in zip(prompts, continuations, strict=True):
            _, perceived, _ = self._read(p, query=c)
            values = tuple(perceived[0] - 4.0 for _ in c.split())
            out.append(ContinuationScores(values, self.stats(self.count_tokens(prompt_text(p)), 0, 0.0)))
        return out
