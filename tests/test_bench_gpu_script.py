"""bench/gpu_speed.py in its CPU smoke mode: the GPU benchmark's code paths run, and rerankflow's
batched scoring gives the naive loop's scores, and the static decoder generate's tokens (float32
on the CPU, so they must match closely)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


def test_gpu_speed_smoke_runs_every_part_and_agrees_with_the_naive_loop(trec_dl, smollm2, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "gpu_speed.py",
            "--smoke",
            "--out",
            str(tmp_path),
            "--parts",
            "peak,pointwise,decode,decode_fp32,prefix,listwise",
        ],
        cwd=ROOT / "bench",
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_speed-smoke.json").read_text())
    rows = {r["method"]: r for r in result["pointwise"]["rows"]}
    assert {"naive", "rerankflow", "rerankflow, compiled"} <= rows.keys()
    assert all(r["prompts"] == 40 and r["seconds"] > 0 for r in rows.values() if "uniform" not in r["method"])
    for agreement in result["pointwise"]["agreement"].values():
        assert agreement["max_abs_margin_diff"] < 1e-3 and agreement["mean_spearman_per_query"] == 1.0
    decode = result["decode"]
    assert decode["agreement"]["tokens"] == "64/64" and decode["graphs_captured"] == 0  # float32, no GPU
    assert {(r["method"], r["batch"]) for r in decode["rows"]} == {
        (m, b) for m in ("generate", "static (eager, no GPU)") for b in (1, 2)
    }
    assert result["decode_fp32"]["tokens"] == "128/128" and result["decode_fp32"]["identical_rows"] == "2/2"
    prefix = {r["prompts"]: r for r in result["prefix"]["rows"]}
    assert len(prefix) == 3 and all(r["max |dlogp|"] < 1e-3 and 0 <= r["f"] < 1 for r in prefix.values())
    assert prefix["pointwise, qwen3_reranker template"]["f"] > prefix["pointwise yes/no, default template"]["f"]
    listwise = result["listwise"]
    assert listwise["identical_rankings_vs_static_sequential"] == {
        "static concurrent": "2/2",
        "generate concurrent": "2/2",
    }
    assert [(r["decode"], r["scheduler"], r["calls"]) for r in listwise["rows"]] == [
        ("static", "sequential", 2),
        ("static", "concurrent", 2),
        ("generate", "concurrent", 2),
    ]
    assert result["environment"]["git_commit"]
