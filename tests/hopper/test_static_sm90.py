"""Static Hopper checks: every tile of the fused kernel's table compiled for sm_90 (no GPU needed),
and what the design promises read from the TTGIR / PTX (kernels/hopper.py).

The promises (kernels/sep_conv/tiles.py, kernels/sep_conv/fused_sep_conv.py):
  * every dot is a wgmma (nvidia_mma version 3), in fp16, bf16 and tf32;
  * unrolled tiles are pipelined: two stages, the taps copied to shared memory with 16-byte
    cp.async, and the dot asynchronous with a wait that leaves one in flight (pendings >= 1);
  * rolled tiles read x with 128-bit loads when C is a multiple of 8 (also 72, 120, 184: not 16);
  * the output is written with 128-bit stores when N is a multiple of 8 (24, 40: not 16);
  * no register spills, shared memory within a block's 227 KB.
Each build takes about a second; the geometries are ones whose table tile is the tile under test,
so each build is what a launch would compile.
"""
import pytest
import torch

pytest.importorskip("triton")

from kernels.checks import Geometry, out_size  # noqa: E402
from kernels.hopper import SMEM_PER_BLOCK  # noqa: E402
from kernels.sep_conv.tiles import TABLE, tile_for  # noqa: E402

# (C, H, k, stride, N): the DESIGN.md layer suite and MobileNetV3's channel counts
LAYERS = [(32, 112, 3, 1, 64), (64, 112, 3, 2, 128), (128, 56, 3, 1, 128), (256, 28, 3, 1, 256),
          (1024, 7, 3, 1, 1024), (144, 56, 3, 1, 24), (192, 28, 3, 1, 32), (384, 14, 3, 1, 64),
          (576, 14, 3, 1, 96), (960, 7, 3, 1, 160), (240, 28, 5, 1, 40), (72, 56, 3, 1, 24),
          (72, 112, 3, 2, 24), (120, 28, 5, 1, 40), (184, 14, 3, 1, 80), (96, 112, 3, 2, 24),
          (672, 14, 5, 1, 112), (144, 28, 5, 1, 24)]  # the last two: EfficientNet's 5x5 projections


def geometry(C, H, k, s, N, dtype=torch.float16, batch=64):
    Ho = out_size(H, k, s, k // 2)
    return Geometry(batch, C, 1, k, k, k // 2, k // 2, H, H, N, Ho, Ho, dtype)


def representatives(dtype=torch.float16):
    """{tile: (layer, geometry)} for the first layer of LAYERS whose table tile it is."""
    found = {}
    for layer in LAYERS:
        g = geometry(*layer, dtype=dtype)
        found.setdefault(tile_for(g, layer[3]), (layer, g))
    return found


def compiled(name: str):
    """Kernel module `name` in compiled (not interpreted) mode."""
    import importlib

    module = importlib.import_module(name)
    if module._INTERPRETED:
        pytest.skip("TRITON_INTERPRET is set for the whole run: the static builds need the compiled kernel")
    return module


@pytest.fixture(scope="module")
def fsc():
    return compiled("kernels.sep_conv.fused_sep_conv")


@pytest.fixture(scope="module")
def se():
    return compiled("kernels.sep_conv.sep_conv_se")


def test_the_layers_reach_every_tile_of_the_table():
    assert set(representatives()) == set(TABLE)


FP16_CASES = sorted(representatives().items(), key=lambda item: str(item[0]))


@pytest.mark.parametrize("tile,case", FP16_CASES, ids=[str(t) for t, _ in FP16_CASES])
def test_table_tile_keeps_the_design_promises_on_sm90(fsc, tile, case):
    (C, H, k, s, N), g = case
    build = fsc.hopper_build(g, s, tile)
    report = build.summary()
    assert build.mma_versions == {3} and build.dots >= 1, report
    assert build.spill_bytes == 0 and build.registers <= 255, report
    assert build.shared_bytes <= SMEM_PER_BLOCK, report
    assert build.num_stages == tile.num_stages and build.num_warps == tile.num_warps
    if tile.unroll_taps:
        assert build.num_stages == 2 and build.cp_async > 0, report
        assert build.cp_async_bytes[16] >= k * k, report  # each tap tile in 16-byte copies
        assert max(build.wait_pendings) >= 1, report  # a dot left in flight across the next K step
    else:
        assert build.loads[128] >= k, report          # each tap's channel vector in one 128-bit load
    assert set(build.stores) == {128}, report         # N % 8 == 0 on every layer


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "tf32"])
def test_other_dtypes_keep_wgmma_and_do_not_spill(fsc, dtype):
    for layer in ((192, 28, 3, 1, 32), (256, 28, 3, 1, 256)):
        g = geometry(*layer, dtype=dtype)
        build = fsc.hopper_build(g, layer[3], tile_for(g, layer[3]), allow_tf32=True)
        assert build.mma_versions == {3} and build.spill_bytes == 0, build.summary()


def test_without_the_alignment_facts_stores_are_scalar(fsc, monkeypatch):
    """The check can fail: with N = 24 restated as merely even, the output stores fall apart."""
    real = fsc.pow2_divisor
    monkeypatch.setattr(fsc, "pow2_divisor", lambda *v, cap=16: min(2, real(*v, cap=cap)))
    g = geometry(144, 56, 3, 1, 24)
    build = fsc.hopper_build(g, 1, tile_for(g, 1))
    assert 128 not in build.stores, build.summary()


# (pixels at batch 64, K, N): EfficientNet-B0 / MobileNetV3 squeeze-excitation projections
SE_GEMMS = [(64 * 49, 1152, 320), (64 * 196, 480, 80), (64 * 784, 144, 24), (64 * 196, 72, 40)]


@pytest.mark.parametrize("pixels, K, N", SE_GEMMS, ids=[f"K{k}-N{n}" for _, k, n in SE_GEMMS])
def test_squeeze_excitation_gemm_is_a_pipelined_wgmma(se, pixels, K, N):
    """The gated GEMM of kernels/sep_conv/sep_conv_se.py: wgmma fed from a three-stage cp.async pipeline
    (16-byte copies), one dot left in flight, 128-bit stores, no spills."""
    build = se.gemm_hopper_build(pixels, K, N, torch.float16, residual=True, act_after_gate="relu6")
    report = build.summary()
    assert build.mma_versions == {3} and build.num_stages == 3, report
    assert build.cp_async_bytes[16] > 0 and set(build.cp_async_bytes) == {16}, report
    assert max(build.wait_pendings) >= 1, report
    assert set(build.stores) == {128} and build.spill_bytes == 0, report
    assert build.shared_bytes <= SMEM_PER_BLOCK, report


@pytest.mark.parametrize("kh, kw", [(1, 5), (5, 1), (3, 7)])
def test_non_square_depthwise_kernels_keep_wgmma_and_vector_loads(fsc, kh, kw):
    """GhostNet-V2's 1x5 / 5x1 and a 3x7: the tile the table picks for them compiles to wgmma with
    128-bit loads of x, 128-bit stores and no spills."""
    Ho = 28
    g = Geometry(64, 160, 1, kh, kw, kh // 2, kw // 2, Ho, Ho, 80, Ho, Ho, torch.float16)
    tile = tile_for(g, 1)
    build = fsc.hopper_build(g, 1, tile)
    report = build.summary()
    assert tile.unroll_taps == (kh * kw <= 9), tile
    assert build.mma_versions == {3} and build.spill_bytes == 0, report
    assert (build.cp_async_bytes[16] >= kh * kw) if tile.unroll_taps else (build.loads[128] >= kw), report
    assert set(build.stores) == {128}, report
