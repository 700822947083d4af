"""``rerankflow tune JOB.yaml -o DIR``: search a pipeline's settings for quality against cost.

The job's ``tune:`` section (:class:`~rerankflow.pipelines.tune_spec.TuneSpec`) names the
settings, the objective and the costs. The queries are split once, seeded, into a tuning part
and a held-out part. Each trial writes the sampled values into the pipeline, builds it with
the job's shared resources (models load once) and the stage cache in ``DIR/cache`` (a trial
that repeats an earlier sub-pipeline reads it from disk), runs the tuning queries through
the normal experiment runner and reports the objective and the costs to Optuna: TPE for one
objective, NSGA-II for a Pareto front against costs.

The study lives in ``DIR/study.db`` (SQLite), so a killed run resumes where it stopped: the
trial that was running is marked failed and asked again, finished trials are kept and never
rerun. Each finished trial is also appended to ``DIR/trials.jsonl``.

At the end every front point is run on the held-out queries, and ``DIR`` gets ``tune.json``
(every trial, the front with tuning and held-out scores, the chosen point; ``rerankflow
report DIR`` plots it), ``front.txt`` (the table) and ``best.yaml`` (the job with the chosen
values and without the ``tune`` section, runnable with ``rerankflow run``).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingDependencyError
from ..eval.experiment import Experiment, SystemResult
from ..io.dataset import Dataset, load_dataset
from ..io.files import atomic_write
from ..resources import ResourcePool
from ..types import Ranking
from .build import build_pipeline
from .cache import StageCache
from .context import BuildContext, job_index
from .job import Job, dump_job, parse_job
from .tune_spec import Cost, Param, TuneSpec, set_at

log = logging.getLogger(__name__)


@dataclass
class Scores:
    """A configuration's objective and costs on one set of queries."""

    objective: float
    costs: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {"objective": self.objective, **self.costs}


@dataclass
class TuneResult:
    """What a tuning run found: every finished trial, the front, the chosen trial's number."""

    trials: list[dict[str, Any]]
    front: list[dict[str, Any]]
    chosen: int
    folder: Path


def split_queries(topics: Sequence[Ranking], fraction: float, seed: int) -> tuple[list[Ranking], list[Ranking]]:
    """A seeded split of the topics into (tuning, held out); both keep the topics' order."""
    ids = sorted(r.query.qid for r in topics)
    random.Random(seed).shuffle(ids)
    cut = min(max(round(fraction * len(ids)), 1), len(ids) - 1)
    chosen = set(ids[:cut])
    return [r for r in topics if r.query.qid in chosen], [r for r in topics if r.query.qid not in chosen]


def configured(job: Job, values: Mapping[str, Any]) -> Job:
    """``job`` with ``values`` written at their paths in the tuned pipeline (validated again)."""
    spec = _spec(job)
    data = json.loads(json.dumps(job.model_dump(mode="json")))
    for path, value in values.items():
        set_at(data["pipelines"][spec.pipeline], path, value)
    return parse_job(data)


def cost_of(result: SystemResult, name: Cost) -> float:
    """A cost measure of one system's result (0 for a pipeline without LLM calls)."""
    value = {
        "llm_calls": result.calls_per_query(),
        "tokens": result.tokens_per_query(),
        "llm_seconds": result.llm_seconds_per_query(),
    }[name]
    return float(value or 0.0)


class Tuner:
    """Runs trials of one job (see the module docstring)."""

    def __init__(self, job: Job, base_dir: Path, folder: Path, progress: Callable[[str], None] | None = None) -> None:
        self.job = job
        self.spec = _spec(job)
        self.base_dir = base_dir
        self.folder = folder
        self.progress = progress or log.info
        self.resources = ResourcePool()
        self.cache = StageCache(folder / "cache")
        self.dataset: Dataset = load_dataset(job.dataset, base_dir)
        if not self.dataset.topics:
            raise ConfigError("tune needs queries to score trials on; add dataset.topics", path=("dataset",))
        if len(self.dataset.topics) < 2:
            raise ConfigError("tune needs at least two queries (one to tune on, one held out)", path=("dataset",))
        self.tuning, self.held_out = split_queries(self.dataset.topics, self.spec.tune_fraction, self.spec.seed)
        index = job_index(job.dataset.index, base_dir)
        corpus = index.chunks if index is not None else self.dataset.corpus
        self.context = BuildContext(corpus, base_dir, self.resources, self.cache, index)

    def score(self, values: Mapping[str, Any], topics: Sequence[Ranking]) -> Scores:
        """Run the pipeline with ``values`` on ``topics``: its objective and costs."""
        job = configured(self.job, values)
        pipeline = build_pipeline(job.pipelines[self.spec.pipeline], self.context, ("pipelines", self.spec.pipeline))
        asked = {r.query.qid for r in topics}  # judged queries outside this split would count as 0
        qrels = {qid: judged for qid, judged in (self.dataset.qrels or {}).items() if qid in asked}
        experiment = Experiment(
            {self.spec.pipeline: pipeline},
            topics,
            qrels,
            [] if self.spec.objective in ("EM", "F1") else [self.spec.objective],
            batch_size=self.job.batch_size,
            answers=self.dataset.answers,
        )
        (result,) = experiment.run().systems
        if self.spec.objective not in result.means:
            raise ConfigError(
                f"tune.objective {self.spec.objective!r} was not measured (measured: {', '.join(result.means)})",
                path=("tune", "objective"),
            )
        return Scores(result.means[self.spec.objective], {c: cost_of(result, c) for c in self.spec.costs})

    def run(self) -> TuneResult:
        """Run (or resume) the study, then score the front on the held-out queries and write the outputs."""
        optuna = _optuna()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.folder.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(
            study_name=self.job.name,
            storage=f"sqlite:///{(self.folder / 'study.db').resolve()}",
            directions=["maximize"] + ["minimize"] * len(self.spec.costs),
            sampler=self._sampler(optuna),
            load_if_exists=True,
        )
        state = optuna.trial.TrialState
        for stale in study.get_trials(deepcopy=False, states=(state.RUNNING,)):
            study.tell(stale.number, state=state.FAIL)  # killed mid-trial: ask its values again
            study.enqueue_trial(stale.params, skip_if_exists=False)
            self.progress(f"trial {stale.number} was interrupted; it runs again")
        done = len(study.get_trials(deepcopy=False, states=(state.COMPLETE,)))
        if done:
            self.progress(f"resuming: {done} of {self.spec.trials} trials already finished")
        if done < self.spec.trials:
            study.optimize(self._objective, n_trials=self.spec.trials - done, callbacks=[self._finished])
        return self._finish(study)

    def _sampler(self, optuna: Any) -> Any:
        kind = self.spec.sampler
        if kind == "auto":
            kind = "nsga2" if self.spec.costs else "tpe"
        seed = self.spec.seed
        if kind == "grid":
            return optuna.samplers.GridSampler(
                {p: list(v.choices or []) for p, v in self.spec.space.items()}, seed=seed
            )
        if kind == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    def _objective(self, trial: Any) -> float | tuple[float, ...]:
        values = {path: suggest(trial, path, param) for path, param in self.spec.space.items()}
        scores = self.score(values, self.tuning)
        costs = ", ".join(f"{k} {v:.4g}" for k, v in scores.costs.items())
        self.progress(
            f"trial {trial.number + 1}/{self.spec.trials}: {self.spec.objective} {scores.objective:.4f}"
            + (f", {costs}" if costs else "")
        )
        if not self.spec.costs:
            return scores.objective
        return (scores.objective, *(scores.costs[c] for c in self.spec.costs))

    def _finished(self, study: Any, trial: Any) -> None:
        """Append a trial to ``trials.jsonl`` once the study has stored it as complete."""
        if trial.values is None:
            return
        record = {"number": trial.number, "params": trial.params, "tuning": self._scores(trial.values).as_dict()}
        with (self.folder / "trials.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def _finish(self, study: Any) -> TuneResult:
        optuna = _optuna()
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not complete:
            raise ConfigError("no trial finished; see the log for each trial's error")
        trials = [
            {"number": t.number, "params": t.params, "tuning": self._scores(t.values).as_dict()} for t in complete
        ]
        front = []
        for t in sorted(study.best_trials, key=lambda t: t.number):
            held = self.score(t.params, self.held_out)
            front.append(
                {
                    "number": t.number,
                    "params": t.params,
                    "tuning": self._scores(t.values).as_dict(),
                    "held_out": held.as_dict(),
                }
            )
        chosen = pick(front, self.spec)
        result = TuneResult(trials, front, chosen, self.folder)
        self._write(result)
        return result

    def _scores(self, values: Sequence[float]) -> Scores:
        return Scores(float(values[0]), {c: float(v) for c, v in zip(self.spec.costs, values[1:], strict=True)})

    def _write(self, result: TuneResult) -> None:
        spec = self.spec
        best = next(p for p in result.front if p["number"] == result.chosen)
        data = {
            "tune": spec.model_dump(mode="json"),
            "job": self.job.name,
            "queries": {"tuning": [r.query.qid for r in self.tuning], "held_out": [r.query.qid for r in self.held_out]},
            "trials": result.trials,
            "front": result.front,
            "chosen": result.chosen,
        }
        with atomic_write(self.folder / "tune.json") as fh:
            fh.write(json.dumps(data, indent=2) + "\n")
        with atomic_write(self.folder / "front.txt") as fh:
            fh.write(front_table(result.front, spec, result.chosen) + "\n")
        tuned = configured(self.job, best["params"]).model_copy(update={"tune": None})
        header = (
            f"# rerankflow tune: trial {best['number']} of job {self.job.name!r}, pipeline {spec.pipeline!r}\n"
            f"# {spec.objective}: {best['tuning']['objective']:.4f} on the {len(self.tuning)} tuning queries, "
            f"{best['held_out']['objective']:.4f} on the {len(self.held_out)} held-out queries\n"
        )
        with atomic_write(self.folder / "best.yaml") as fh:
            fh.write(header + dump_job(tuned))


def suggest(trial: Any, path: str, param: Param) -> Any:
    """Ask the trial for one setting's value."""
    if param.choices is not None:
        return trial.suggest_categorical(path, param.choices)
    low, high = param.low or 0.0, param.high or 0.0
    if param.integer:
        return trial.suggest_int(path, int(low), int(high), step=int(param.step or 1), log=param.log)
    return trial.suggest_float(path, low, high, step=param.step, log=param.log)


def pick(front: Sequence[Mapping[str, Any]], spec: TuneSpec) -> int:
    """The chosen front point: the best tuning objective, or with ``pick_within`` the cheapest
    point (by the costs in order) within that much of it."""
    best = max(p["tuning"]["objective"] for p in front)
    near = [p for p in front if p["tuning"]["objective"] >= best - spec.pick_within]

    def key(p: Mapping[str, Any]) -> tuple[float, ...]:
        return (*(p["tuning"][c] for c in spec.costs), -p["tuning"]["objective"], p["number"])

    return int(min(near, key=key)["number"])


def front_table(front: Sequence[Mapping[str, Any]], spec: TuneSpec, chosen: int) -> str:
    """The front as text: trial, settings, tuning and held-out objective and costs."""
    columns = ["trial", *spec.space, f"{spec.objective} tune", f"{spec.objective} held-out"]
    columns += [f"{c} {part}" for c in spec.costs for part in ("tune", "held-out")]
    rows = [columns]
    for p in front:
        row = [f"{p['number']}{' *' if p['number'] == chosen else ''}", *(str(p["params"][k]) for k in spec.space)]
        row += [f"{p['tuning']['objective']:.4f}", f"{p['held_out']['objective']:.4f}"]
        row += [f"{p[part][c]:.4g}" for c in spec.costs for part in ("tuning", "held_out")]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("* the chosen configuration (best.yaml)")
    return "\n".join(lines)


def _spec(job: Job) -> TuneSpec:
    if job.tune is None:
        raise ConfigError("the job has no 'tune' section; add one (see docs/guide.md, Tuning)", path=("tune",))
    return job.tune


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:
        raise MissingDependencyError("optuna", "tune") from exc
    return optuna


def tune_job(job: Job, base_dir: Path, folder: Path, progress: Callable[[str], None] | None = None) -> TuneResult:
    """Tune ``job`` into ``folder`` (see the module docstring)."""
    return Tuner(job, base_dir, folder, progress).run()
