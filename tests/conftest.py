"""Session-wide test setup: the measured cost model's timing cache goes to a temporary file, so
tests neither read a developer's cache nor leave one behind (tests that need a cache pass their
own path). The bisection's wall-clock budget (rewrite/entry/retry.py) is lifted, so that what a test
sees does not depend on how busy the machine is; tests of the budget set it themselves."""
import math
import os
import tempfile

import pytest

_cache_dir = tempfile.TemporaryDirectory(prefix="dwsep-test-timings-")
os.environ["DWSEP_TIMING_CACHE"] = os.path.join(_cache_dir.name, "timings.json")


@pytest.fixture(autouse=True)
def _no_bisection_time_budget(monkeypatch):
    import rewrite.entry.retry as retry
    monkeypatch.setattr(retry, "BISECTION_TIME_FACTOR", math.inf)
    monkeypatch.setattr(retry, "BISECTION_MAX_S", math.inf)
