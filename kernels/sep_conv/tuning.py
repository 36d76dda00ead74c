"""Opt-in autotuning of the fused separable conv's tile, kept on disk next to the timing cache.

By default the launcher takes its tile from kernels/sep_conv/tiles.py's table by regime and
times nothing. With ``DWSEP_AUTOTUNE=1`` in the environment, the first launch of a new problem
instead times every candidate tile of that table (``candidates``: the ones that fit the problem),
keeps the fastest, and writes it to a JSON file; later launches, in this process or another, read
it back. An entry's key names what the best tile depends on: the device (its name), torch and
Triton versions, the dtype, the depthwise geometry (C, multiplier, kernel, stride), N, and the
pixel counts bucketed to powers of two (the batch of a check crop and of a deployment differ, and
one tuning serves every batch in the same bucket).

    path: DWSEP_TUNING_CACHE if set, else ~/.cache/dwsep-rewrite/tiles.json
    file: {"format": FORMAT, "entries": {key: "BMxBNxBK/Ww/unrolled|rolled"}}

A file that cannot be read is ignored with a warning and never written over.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Callable, Iterable

import torch

from kernels.checks import Geometry
from kernels.disk import write_json_atomic
from kernels.sep_conv.tiles import SMEM_BUDGET, TABLE, Tile

FORMAT = "dwsep-rewrite tile tuning v1"
_TILE_TEXT = re.compile(r"(\d+)x(\d+)x(\d+)/(\d+)w/(unrolled|rolled)")


def enabled() -> bool:
    return os.environ.get("DWSEP_AUTOTUNE", "0").strip().lower() in ("1", "true", "yes", "on")


def default_path() -> Path:
    env = os.environ.get("DWSEP_TUNING_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dwsep-rewrite" / "tiles.json"


def _bucket(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def key(g: Geometry, stride: int, device: torch.device) -> str:
    import triton

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "triton-interpreter"
    return " | ".join(str(p) for p in (
        name, f"torch {torch.__version__}", f"triton {triton.__version__}", str(g.dtype).removeprefix("torch."),
        f"C{g.channels} r{g.mult} k{g.kh}x{g.kw} s{stride} N{g.out_channels}",
        f"M~{_bucket(g.batch * g.out_h * g.out_w)} P~{_bucket(g.out_h * g.out_w)}"))


def candidates(g: Geometry) -> list[Tile]:
    """The table's tiles that fit this problem: no BLOCK_N past the next power of two of N (pure
    padding) nor under a quarter of it (the depthwise part recomputed more than 4 times), and
    unrolled taps only without a channel multiplier and with tap buffers in the shared-memory budget."""
    n = _bucket(g.out_channels)
    return [t for t in TABLE
            if t.block_n <= max(32, n) and 4 * t.block_n >= min(n, 256)
            and (not t.unroll_taps or (g.mult == 1 and t.tap_buffer_bytes(g.kh * g.kw, g.dtype.itemsize) <= SMEM_BUDGET))]


def _load(path: Path) -> tuple[dict, bool]:
    if not path.exists():
        return {}, True
    try:
        data = json.loads(path.read_text())
        if not (isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("entries"), dict)):
            raise ValueError(f"not a {FORMAT!r} file")
        entries = data["entries"]
        if not all(isinstance(v, str) and _TILE_TEXT.fullmatch(v) for v in entries.values()):
            raise ValueError("an entry is not a tile")
        return entries, True
    except (OSError, ValueError) as exc:
        warnings.warn(f"tile tuning file {path} ignored ({exc}); tiles are tuned afresh and the file is left as it is",
                      stacklevel=4)
        return {}, False


def parse(text: str) -> Tile:
    bm, bn, bk, warps, taps = _TILE_TEXT.fullmatch(text).groups()
    return Tile(int(bm), int(bn), int(bk), int(warps), taps == "unrolled")


_memo: dict[tuple[str, str], Tile] = {}


def tuned_tile(problem_key: str, tiles: Iterable[Tile], bench: Callable[[Tile], float],
               path: Path | None = None) -> Tile:
    """The fastest of ``tiles`` by ``bench(tile) -> seconds``, remembered under ``problem_key`` in
    memory and in the file at ``path`` (default_path()); a remembered tile is not timed again."""
    path = default_path() if path is None else Path(path)
    memo_key = (str(path), problem_key)
    if memo_key in _memo:
        return _memo[memo_key]
    entries, writable = _load(path)
    if problem_key in entries:
        tile = _memo[memo_key] = parse(entries[problem_key])
        return tile
    timed = {tile: bench(tile) for tile in tiles}
    tile = _memo[memo_key] = min(timed, key=timed.get)
    if writable:
        entries[problem_key] = str(tile)
        try:
            write_json_atomic(path, {"format": FORMAT, "entries": entries})
        except OSError as exc:
            warnings.warn(f"tile tuning file {path} not written ({exc})", stacklevel=2)
    return tile
