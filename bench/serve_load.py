"""Bounded loopback load test of `rerankflow serve`.

N concurrent clients send chat requests back to back for T seconds (both bounded) to a
server in its own process; the table gives requests/s, p50/p95 latency, 429s and other
errors. Two servers: a scripted backend behind BM25 (what the server, the request merging and
BM25 cost on their own) and SmolLM2-135M on the HF backend (a real model; CPU bound).
Runs below the concurrency limit must have no errors; runs above it must fail only with 429.
The "droppers" rows add clients that open a long streamed answer (max_tokens 200) and leave
after its first piece, over and over: the well-behaved clients' requests/s and p95 are
compared with the row without droppers (the server stops abandoned generations).
Clients and server share this machine's cores, so compare rows of one run, not across machines.

    python bench/serve_load.py                      # all scenarios (~3 min on 2 cores)
    python bench/serve_load.py --seconds 5 --only fake
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import socket
import statistics
import time

import httpx

from common import table, write_result

LIMIT = 8  # serve.max_concurrent of both servers
REPLY = "BM25 weighs term frequency against document length [1]."
QUESTIONS = [
    "how does bm25 normalise document length?",
    "what is reciprocal rank fusion?",
    "why rerank with a language model?",
    "what does a cross-encoder score?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(kind: str, port: int) -> None:
    """Server process: build the pipeline and run uvicorn until terminated."""
    import logging

    import uvicorn

    from rerankflow.backends.factory import BackendConfig, create_backend
    from rerankflow.generators.answer import AnswerGenerator
    from rerankflow.io.dataset import demo_dataset
    from rerankflow.pipelines.job import ServeSpec
    from rerankflow.progress import set_quiet
    from rerankflow.retrievers.bm25 import BM25Retriever
    from rerankflow.serve.app import create_app
    from rerankflow.serve.served import serve_pipelines
    from rerankflow.testing.fake import FakeBackend

    set_quiet(True)
    logging.disable(logging.INFO)
    corpus = demo_dataset()[0]
    if kind == "fake":
        backend = FakeBackend([REPLY])
        max_tokens = 16
    else:
        backend = create_backend(BackendConfig(kind="hf", model="smollm2-135m-instruct"))
        max_tokens = 16
    pipeline = BM25Retriever(corpus, k=3) >> AnswerGenerator(backend, max_tokens=max_tokens)
    app = create_app(serve_pipelines({kind: pipeline}), ServeSpec(max_concurrent=LIMIT, timeout_s=60))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


async def _client(url: str, model: str, stream: bool, until: float, out: list[tuple[int, float, float | None]]) -> None:
    """Send requests back to back until ``until``; record (status, latency, time to first piece)."""
    async with httpx.AsyncClient(timeout=60) as http:
        i = 0
        while time.monotonic() < until:
            body = {"model": model, "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]}
            i += 1
            start = time.monotonic()
            first: float | None = None
            try:
                if stream:
                    body["stream"] = True
                    async with http.stream("POST", url, json=body) as r:
                        async for line in r.aiter_lines():
                            if first is None and '"content": "' in line and '"content": ""' not in line:
                                first = time.monotonic() - start
                        status = r.status_code
                else:
                    status = (await http.post(url, json=body)).status_code
            except httpx.HTTPError:
                status = -1
            out.append((status, time.monotonic() - start, first))
            if status == 429:
                await asyncio.sleep(0.05)  # a polite client backs off; keeps the loop from spinning


async def _dropper(url: str, model: str, until: float, dropped: list[int]) -> None:
    """Open long streamed answers and leave after the first piece of each, until ``until``."""
    async with httpx.AsyncClient(timeout=60) as http:
        i = 0
        while time.monotonic() < until:
            question = f"tell a long story about retrieval {i}"
            i += 1
            body = {
                "model": model,
                "messages": [{"role": "user", "content": question}],
                "max_tokens": 200,
                "stream": True,
            }
            try:
                async with http.stream("POST", url, json=body) as r:
                    async for line in r.aiter_lines():
                        if '"content": "' in line and '"content": ""' not in line:
                            break  # leave: closing the response drops the connection
                    if r.status_code == 429:
                        await asyncio.sleep(0.05)
            except httpx.HTTPError:
                pass
            dropped.append(1)


def run_scenario(
    base: str, model: str, clients: int, seconds: float, stream: bool, droppers: int = 0
) -> dict[str, object]:
    """``clients`` concurrent clients (and ``droppers`` abandoning ones) for ``seconds``; the
    summary row of the well-behaved clients."""
    records: list[tuple[int, float, float | None]] = []
    dropped: list[int] = []

    async def main() -> None:
        until = time.monotonic() + seconds
        url = base + "/v1/chat/completions"
        await asyncio.gather(
            *[_client(url, model, stream, until, records) for _ in range(clients)],
            *[_dropper(url, model, until, dropped) for _ in range(droppers)],
        )

    start = time.monotonic()
    asyncio.run(main())
    wall = time.monotonic() - start
    ok = sorted(lat for status, lat, _ in records if status == 200)
    firsts = sorted(f for status, _, f in records if status == 200 and f is not None)
    q = statistics.quantiles(ok, n=20) if len(ok) >= 2 else [float("nan")] * 19
    return {
        "server": model,
        "mode": "stream" if stream else "plain",
        "clients": clients,
        "droppers": droppers,
        "dropped": len(dropped),
        "limit": LIMIT,
        "seconds": round(wall, 1),
        "requests": len(records),
        "ok": len(ok),
        "req_per_s": round(len(ok) / wall, 2),
        "p50_ms": round(statistics.median(ok) * 1000, 1) if ok else None,
        "p95_ms": round(q[18] * 1000, 1) if ok else None,
        "ttft_p50_ms": round(statistics.median(firsts) * 1000, 1) if firsts else None,
        "429s": sum(status == 429 for status, _, _ in records),
        "other_errors": sum(status not in (200, 429) for status, _, _ in records),
    }


def start_server(kind: str) -> tuple[mp.Process, str]:
    port = free_port()
    proc = mp.get_context("spawn").Process(target=_serve, args=(kind, port), daemon=True)
    proc.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if not proc.is_alive() or time.monotonic() > deadline:
            raise SystemExit(f"{kind} server did not become ready")
        time.sleep(0.2)


SCENARIOS = {
    "fake": [(1, False), (4, False), (8, False), (32, False), (4, True)],
    "smollm2": [(1, False), (4, False), (32, False), (1, True), (4, True), (2, False), (2, False, 4)],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="per scenario (at most 60)")
    ap.add_argument("--only", choices=sorted(SCENARIOS), help="one server only")
    args = ap.parse_args()
    seconds = min(max(args.seconds, 1.0), 60.0)
    rows = []
    for kind, scenarios in SCENARIOS.items():
        if args.only and kind != args.only:
            continue
        proc, base = start_server(kind)
        try:
            run_scenario(base, kind, 1, min(seconds, 3.0), False)  # warm-up, not reported
            for clients, stream, *droppers in scenarios:
                rows.append(run_scenario(base, kind, clients, seconds, stream, *droppers))
                print(table(rows[-1:], list(rows[-1])), flush=True)
        finally:
            proc.terminate()
            proc.join(10)
    columns = list(rows[0])
    print("\n" + table(rows, columns))
    below = [r for r in rows if int(r["clients"]) <= LIMIT]  # type: ignore[call-overload]
    above = [r for r in rows if int(r["clients"]) > LIMIT]  # type: ignore[call-overload]
    calm = next((r for r in rows if r["server"] == "smollm2" and r["clients"] == 2 and not r["droppers"]), None)
    busy = next((r for r in rows if r["server"] == "smollm2" and r["droppers"]), None)
    checks = {
        "no_errors_below_limit": all(r["other_errors"] == 0 and r["429s"] == 0 for r in below),
        "only_429s_above_limit": all(r["other_errors"] == 0 and int(r["429s"]) > 0 for r in above),  # type: ignore[call-overload]
    }
    if calm and busy:  # same run, same server: what abandoning clients cost the others
        checks["droppers_req_per_s_ratio"] = round(float(busy["req_per_s"]) / float(calm["req_per_s"]), 2)  # type: ignore[arg-type]
        checks["droppers_p95_ratio"] = round(float(busy["p95_ms"]) / float(calm["p95_ms"]), 2)  # type: ignore[arg-type]
    print(f"\nchecks: {checks}")
    path = write_result("serve_load", {"seconds": seconds, "limit": LIMIT, "rows": rows, "checks": checks})
    (path.with_suffix(".txt")).write_text(table(rows, columns) + f"\n\nchecks: {checks}\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
