"""The fused separable conv's tiles, chosen by regime from the problem's shape: no benchmarking.

A tile is (BLOCK_M pixels, BLOCK_N output channels, BLOCK_K depthwise channels per step,
num_warps, UNROLL_TAPS); num_stages follows (2 when the taps are unrolled, so Triton's pipeliner
prefetches the next K step's tap tiles with cp.async; 1 when the tap loop stays a loop and there
is nothing to pipeline across it). ``tile_for(g, stride)`` picks one from the geometry alone, in
microseconds, so ``optimize()`` and the first launch of a new shape never time anything.
Autotuning over ``TABLE`` is opt-in (kernels/sep_conv/tuning.py) and persists on disk.

Where the time goes, per output tile, for a layer C -> N at k x k (fp16, B x Ho x Wo = M pixels):
    depthwise   k² · BLOCK_M · BLOCK_K FMAs on the CUDA cores per K step, redone ceil(N / BLOCK_N)
                times over the layer (once per N tile)
    pointwise   BLOCK_M · BLOCK_K · BLOCK_N MACs on the tensor cores per K step
    memory      x read once from HBM (its k² reuse hits L1/L2), y written once: 2(M·C + M·N) bytes
so the rules are:
  * BLOCK_N = next power of two of N, clamped to [32, 256]: for N <= 256 one N tile covers every
    output channel and the depthwise part is computed exactly once (the H100 campaign's winners
    already did this on every row with N <= 256: results/gpu/2026-11-25-h100/run1).
  * BLOCK_M >= 64 always, so every dot is a Hopper wgmma (m64nNk16; BLOCK_M = 32 fell back to
    mma.sync). 128 rows with 8 warps for narrow projections (N <= 32) over large maps, where the
    layer is memory bound and taller tiles halve the weight reloads per pixel.
  * BLOCK_K = 64 with BLOCK_N = 256 (8 warps: a 64x256 fp32 accumulator is 64 registers per
    thread), else 32.
  * Unrolled taps (pipelined, cp.async) for kernels of at most 9 taps (3x3, 1x5, 5x1, ...) without a channel multiplier in fp16 /
    bf16, except stride-1 large maps (>= 56x56 outputs) with N < 128, where the rolled loop's plain
    vector loads won; 5x5 / 7x7 tap buffers do not fit in shared memory next to a second block, a
    multiplier gathers channels (no vector loads), and in fp32 the unrolled form reaches ptxas's
    255 registers and spills (sm_90: 8-32 bytes at BLOCK_N 32 and 128).
The table is derived from the H100 campaign (every tile that won a row of the layer suite there,
with the 32-row and spilling tiles replaced) and checked statically for sm_90 in
tests/kernels/test_hopper_static.py: wgmma for every dot, no register spills, shared memory
within an SM's.
"""
from __future__ import annotations

from dataclasses import dataclass

from kernels.checks import Geometry

SMEM_BUDGET = 160 * 1024  # bytes of tap buffers per block, leaving room for a second block per SM
LARGE_MAP = 56 * 56       # output pixels per image from which stride-1 narrow layers keep the taps rolled


@dataclass(frozen=True)
class Tile:
    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    unroll_taps: bool

    @property
    def num_stages(self) -> int:
        return 2 if self.unroll_taps else 1

    def config(self) -> dict:
        """The launcher's ``config`` dict (kernels.sep_conv.fused_sep_conv.fused_sep_conv)."""
        return dict(BLOCK_M=self.block_m, BLOCK_N=self.block_n, BLOCK_K=self.block_k, UNROLL_TAPS=self.unroll_taps,
                    num_warps=self.num_warps, num_stages=self.num_stages)

    def tap_buffer_bytes(self, taps: int, itemsize: int) -> int:
        """Shared memory of the unrolled form's pipeline: the kh·kw tap tiles and the weight tile, twice."""
        return (taps * self.block_m * self.block_k + 2 * self.block_k * self.block_n) * itemsize

    def __str__(self) -> str:
        taps = "unrolled" if self.unroll_taps else "rolled"
        return f"{self.block_m}x{self.block_n}x{self.block_k}/{self.num_warps}w/{taps}"


INTERPRETER_TILE = Tile(32, 32, 16, 4, False)  # the interpreter's: small blocks run fastest there


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _blocks(block_n: int, large_map: bool) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_K, num_warps) for this BLOCK_N (see the module docstring)."""
    if block_n == 256:
        return 64, 64, 8
    if block_n == 32 and large_map:
        return 128, 32, 8
    return 64, 32, 4


def tile_for(g: Geometry, stride: int) -> Tile:
    """The tile for this problem (see the module docstring for the rules); always one of TABLE."""
    block_n = min(256, max(32, _next_pow2(g.out_channels)))
    pixels = g.out_h * g.out_w
    block_m, block_k, warps = _blocks(block_n, pixels >= LARGE_MAP)
    unroll = (g.kh * g.kw <= 9 and g.mult == 1 and block_n < 256 and g.dtype.itemsize == 2
              and (stride == 2 or pixels < LARGE_MAP or g.out_channels >= 128))
    tile = Tile(block_m, block_n, block_k, warps, unroll)
    if unroll and tile.tap_buffer_bytes(g.kh * g.kw, g.dtype.itemsize) > SMEM_BUDGET:
        tile = Tile(block_m, block_n, block_k, warps, False)
    return tile


def _table() -> tuple[Tile, ...]:
    tiles = set()
    for block_n in (32, 64, 128, 256):
        for large_map in (False, True):
            block_m, block_k, warps = _blocks(block_n, large_map)
            tiles.update(Tile(block_m, block_n, block_k, warps, unroll) for unroll in (False, block_n < 256))
    return tuple(sorted(tiles, key=lambda t: (t.block_n, t.block_m, t.unroll_taps)))


TABLE = _table()  # every tile tile_for can return: the static checks compile each, autotuning picks among them
