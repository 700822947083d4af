"""Helpers shared by the benchmark scripts: environment record, result files, tables."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rerankflow.environment import environment as package_environment

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SHARED_DATA = Path(os.environ.get("RERANKFLOW_SHARED_DATA", ROOT.parent / "shared" / "data"))


def environment() -> dict[str, Any]:
    """Versions, hardware and git commit, recorded with every result (rerankflow.environment);
    a copy of the tree without .git (the GPU machine) is told its commit by the caller through
    ``RERANKFLOW_GIT_COMMIT``."""
    env = package_environment(ROOT)
    env.pop("date")
    env["git_commit"] = os.environ.get("RERANKFLOW_GIT_COMMIT", env["git_commit"] or "unknown")
    return env


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
