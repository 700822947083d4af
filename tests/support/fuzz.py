"""Hypothesis profiles: CI runs a fixed, derandomized set of examples; ``make fuzz`` explores.

* ``ci`` (the default): ``derandomize=True`` draws the same examples on every run and machine,
  so a clean-clone run fails only where the code changed; no example database is read or
  written. Failures hypothesis found while exploring are kept in the tests as ``@example``.
* ``fuzz`` (``HYPOTHESIS_PROFILE=fuzz``, what ``make fuzz`` sets): random draws, the example
  database in ``.hypothesis/`` (found failures are replayed first), and every property's
  example count multiplied by ``RERANKFLOW_FUZZ_FACTOR`` (default 20).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
FACTOR = int(os.environ.get("RERANKFLOW_FUZZ_FACTOR", "20")) if PROFILE == "fuzz" else 1

settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile(
    "fuzz",
    derandomize=False,
    database=DirectoryBasedExampleDatabase(".hypothesis/examples"),
    deadline=None,
    max_examples=100 * FACTOR,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """A property's example count in the current profile (``n`` in CI)."""
    return n * FACTOR
