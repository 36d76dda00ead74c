"""Measured site timings kept on disk, as TensorRT keeps its timing cache.

A second `optimize()` of the same model on the same machine measures nothing again. An entry's
key names everything the timing depends on: the device (its name), the library versions that
run the forms (torch, and Triton or onnxruntime), the dtype, the rewrite kind, both forms (their
layer descriptions: kernel sizes, channels, strides, activations) and the input shapes. Weights
do not enter: two sites that differ only in their values take the same time.

The file is JSON {"format": FORMAT, "entries": {key: [before_s, after_s, speedup, low, high,
pairs]}} (rewrite.measure.Comparison.as_list: medians, the median per-pair speedup and its
confidence interval); a file of the previous format (FORMATS_READ), whose entries are [before_s,
after_s], is read too and written back in the new one. A file that cannot be read, or is not in
one of these formats, is ignored with a warning and never written over (the path may be someone
else's file). Writes go to a temporary file renamed into place.

    path: DWSEP_TIMING_CACHE if set, else ~/.cache/dwsep-rewrite/timings.json
    clear: `python -m rewrite.timing_cache --clear [PATH]` or `clear(path)`
"""
from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from pathlib import Path

from kernels.disk import write_json_atomic

FORMAT = "dwsep-rewrite timing cache v2"
FORMATS_READ = (FORMAT, "dwsep-rewrite timing cache v1")


def default_path() -> Path:
    env = os.environ.get("DWSEP_TIMING_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dwsep-rewrite" / "timings.json"


def entry_key(*parts) -> str:
    """One key from the parts (strings, numbers, shapes), in a stable printed form."""
    return " | ".join(str(p) for p in parts)


class TimingCache:
    """Timings of (before, after) forms by key; `save()` writes new entries back."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_path()
        self.entries: dict[str, list[float]] = {}
        self.writable = True
        self.dirty = False
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            entries = data["entries"] if isinstance(data, dict) and data.get("format") in FORMATS_READ else None
            if not isinstance(entries, dict):
                raise ValueError(f"not a {FORMAT!r} file")
            for key, value in entries.items():
                if not (isinstance(value, list) and len(value) in (2, 6)
                        and all(isinstance(t, (int, float)) and math.isfinite(t) and t > 0 for t in value[:5])
                        and (len(value) == 2 or value[5] >= 0)):
                    raise ValueError(f"bad entry {key!r}")
            self.entries = {k: [float(t) for t in v] for k, v in entries.items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(f"timing cache {self.path} ignored ({exc}); sites are measured afresh and the file "
                          "is left as it is", stacklevel=3)
            self.entries, self.writable = {}, False

    def get(self, key: str) -> list | None:
        """The entry stored under `key`: [before_s, after_s] or [before_s, after_s, speedup, low, high, pairs]."""
        return self.entries.get(key)

    def put(self, key: str, values: list) -> None:
        self.entries[key] = [float(v) for v in values]
        self.dirty = True

    def save(self) -> None:
        if not (self.dirty and self.writable):
            return
        try:
            write_json_atomic(self.path, {"format": FORMAT, "entries": self.entries})
            self.dirty = False
        except OSError as exc:
            warnings.warn(f"timing cache {self.path} not written ({exc})", stacklevel=2)


def clear(path: str | Path | None = None) -> bool:
    """Delete the cache file; True when there was one."""
    path = Path(path) if path is not None else default_path()
    if path.exists():
        path.unlink()
        return True
    return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rewrite.timing_cache", description=__doc__.splitlines()[0])
    parser.add_argument("--clear", action="store_true", help="delete the cache file")
    parser.add_argument("path", nargs="?", help=f"cache file (default: {default_path()})")
    args = parser.parse_args(argv)
    path = Path(args.path) if args.path else default_path()
    if args.clear:
        print(f"{'removed' if clear(path) else 'no cache at'} {path}")
    else:
        cache = TimingCache(path)
        print(f"{path}: {len(cache.entries)} entries")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
