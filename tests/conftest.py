"""Session-wide test setup: the measured cost model's timing cache goes to a temporary file, so
tests neither read a developer's cache nor leave one behind (tests that need a cache pass their
own path)."""
import os
import tempfile

_cache_dir = tempfile.TemporaryDirectory(prefix="dwsep-test-timings-")
os.environ["DWSEP_TIMING_CACHE"] = os.path.join(_cache_dir.name, "timings.json")
