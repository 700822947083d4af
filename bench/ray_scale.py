"""Local vs Ray executor on this machine, for a CPU-bound stage (the MiniLM bi-encoder).

The same YAML job runs with ``executor: local`` (one process; torch uses every core) and
``executor: ray`` on a local cluster with 1 and 2 actors (one CPU each). Input: the DL19 BM25
top-100 (43 queries x 100 passages) when ``../shared/data`` is present, else the demo
collection's BM25 top-20. Reported: end-to-end wall time of ``run_job`` (Ray: cluster start,
actor start and model load included; local: model load included), the time of the ranking
itself, queries per second, per-actor throughput, the Ray/local ratio, and whether the
rankings match the local ones. Overhead is expected at this size; the ratio is the point.

    python bench/ray_scale.py            # writes bench/results/ray_scale.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rerankflow.io.trec import read_run
from rerankflow.pipelines.job import load_job_text
from rerankflow.pipelines.runner import run_job

from common import SHARED_DATA, table, write_result

DL19 = SHARED_DATA / "trec-dl" / "bm25_dl19.json"


def job_text(executor: str, actors: int) -> str:
    if DL19.is_file():
        dataset = f"{{run: {DL19}, qrels: {SHARED_DATA / 'trec-dl' / 'qrels.dl19-passage.txt'}}}"
        stages = "    - biencoder: {model: all-minilm-l6-v2}\n"
    else:
        dataset = "{builtin: demo}"
        stages = "    - bm25: {k: 20}\n    - biencoder: {model: all-minilm-l6-v2}\n"
    return (
        f"name: ray-scale\ndataset: {dataset}\nexecutor: {executor}\nbatch_size: 4\n"
        f"ray: {{actors: {actors}, num_cpus: 1, task_cpus: 0.5, local_cpus: 2}}\n"
        f"cache: {{enabled: false}}\npipelines:\n  minilm:\n{stages}"
    )


def run(executor: str, actors: int, folder: Path) -> dict:
    import ray

    if ray.is_initialized():
        ray.shutdown()  # every Ray row starts its own cluster, so start-up is counted each time
    start = time.perf_counter()
    result = run_job(load_job_text(job_text(executor, actors)), folder, folder / f"{executor}{actors}")
    wall = time.perf_counter() - start
    system = result.result.systems[0]
    return {
        "executor": executor,
        "actors": actors if executor == "ray" else None,
        "queries": system.queries,
        "wall_s": round(wall, 2),
        "rank_s": round(system.seconds, 2),
        "queries_per_s": round(system.queries / system.seconds, 2),
        "per_actor_queries_per_s": round(system.queries / system.seconds / actors, 2) if executor == "ray" else None,
        "nDCG@10": round(system.means["nDCG@10"], 4) if "nDCG@10" in system.means else None,
        "run": read_run(result.files[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help="results folder (default: bench/results)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run("local", 1, Path(tmp)), run("ray", 1, Path(tmp)), run("ray", 2, Path(tmp))]
    local = rows[0]
    for r in rows:
        r["wall_vs_local"] = round(r["wall_s"] / local["wall_s"], 2)
        r["rank_vs_local"] = round(r["rank_s"] / local["rank_s"], 2)
        r["same_order_as_local"] = all(
            sorted(r["run"][q], key=lambda d: -r["run"][q][d])
            == sorted(local["run"][q], key=lambda d: -local["run"][q][d])
            for q in local["run"]
        )
    for r in rows:
        del r["run"]
    cols = ["executor", "actors", "queries", "wall_s", "rank_s", "queries_per_s", "per_actor_queries_per_s",
            "wall_vs_local", "rank_vs_local", "same_order_as_local", "nDCG@10"]  # fmt: skip
    print(table(rows, cols))
    data = {"input": "DL19 BM25 top-100" if DL19.is_file() else "demo BM25 top-20", "rows": rows}
    print(f"wrote {write_result('ray_scale', data, args.output)}")


if __name__ == "__main__":
    main()
