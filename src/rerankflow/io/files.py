"""Shared helpers: open text files with clear errors, write atomically."""

from __future__ import annotations

import gzip
import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ..errors import DataError


def numbered_lines(path: str | Path, *, what: str) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` (1-based, newline stripped) of a UTF-8 (or .gz) file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file not found" + ("" if path.exists() else "; check the path"), file=path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            # lines are decoded one by one, so a bad byte is reported on its own line
            for lineno, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        f"{what} file is not valid UTF-8 ({exc.reason}); save it as UTF-8", file=path, line=lineno
                    ) from exc
                yield lineno, line.rstrip("\r\n")
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {what} file: {exc}", file=path) from exc


@contextmanager
def atomic_write(path: str | Path) -> Iterator[IO[str]]:
    """Write a UTF-8 text file through a temporary file renamed into place on success only."""
    with atomic_write_binary(path) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="\n") as fh:
        yield fh


@contextmanager
def atomic_write_binary(path: str | Path) -> Iterator[IO[bytes]]:
    """Write a file through a temporary file renamed into place on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs follow the umask
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
