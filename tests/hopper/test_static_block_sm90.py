"""Static Hopper checks of the whole-block kernels (kernels/block/inverted_residual.py,
kernels/block/fused_mbconv.py): each compiled for sm_90 with the tile its rule picks (no GPU needed),
and what the design promises read from the TTGIR / PTX (kernels/hopper.py):

  * every dot is a wgmma (nvidia_mma version 3): the expansion (or dense conv) and the
    projection, in fp16, bf16 and tf32;
  * the tap loop's x tiles are prefetched with 16-byte cp.async (two stages; Fused-MBConv's flat
    (tap, C chunk) loop three, its dot left in flight across the next step);
  * 128-bit accesses: x and the weights when C is a multiple of 8 (also 72 and 40: not 16), the
    channels_last output when N is a multiple of 8;
  * no register spills, shared memory within a block's 227 KB.
"""
import pytest
import torch

pytest.importorskip("triton")

from kernels.block.checks import BlockGeometry  # noqa: E402
from kernels.checks import out_size  # noqa: E402
from kernels.hopper import SMEM_PER_BLOCK  # noqa: E402
from tests.hopper.test_static_sm90 import compiled  # noqa: E402


@pytest.fixture(scope="module")
def ir():
    return compiled("kernels.block.inverted_residual")


@pytest.fixture(scope="module")
def mb():
    return compiled("kernels.block.fused_mbconv")


def geometry(C, Hd, N, H, k, stride, dtype=torch.float16, batch=64):
    Ho = out_size(H, k, stride, k // 2)
    return BlockGeometry(batch, C, Hd, k, k, k // 2, k // 2, H, H, N, Ho, Ho, dtype)


# (C, Hd, N, H, k, stride): MobileNetV2 / V3 / EfficientNet-B0 blocks; 72 and 40: multiples of 8, not 16
BLOCKS = [(24, 144, 24, 56, 3, 1), (40, 240, 40, 28, 5, 1), (72, 432, 72, 28, 3, 1), (16, 96, 24, 112, 3, 2),
          (112, 672, 112, 14, 5, 1), (160, 960, 320, 7, 3, 1)]
IDS = [f"{c}-{h}-{n}-k{k}s{s}" for c, h, n, _, k, s in BLOCKS]


def _promises(build, report, *, dots=2, stages=2):
    assert build.mma_versions == {3} and build.dots == dots, report
    assert build.spill_bytes == 0 and build.registers <= 255, report
    assert build.shared_bytes <= SMEM_PER_BLOCK, report
    assert build.num_stages == stages and build.cp_async_bytes[16] > 0 and set(build.cp_async_bytes) == {16}, report
    assert build.loads[128] > 0, report


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("block", BLOCKS, ids=IDS)
def test_inverted_residual_keeps_the_design_promises_on_sm90(ir, block, dtype):
    g = geometry(*block, dtype=dtype)
    build = ir.hopper_build(g, block[5], residual=True, act0="hardswish", act1="silu")
    report = f"{ir.tile_for(g)}: {build.summary()}"
    _promises(build, report)
    assert set(build.stores) == {128}, report  # N % 8 == 0 on every block


@pytest.mark.parametrize("sums", [True, False], ids=["phase1-sums", "phase3-gated"])
def test_squeeze_excitation_phases_keep_wgmma(ir, sums):
    """Phase 1 (one dot: no projection; a 32-bit store of each hidden channel's partial sum) and
    phase 3 (the block with the gate) of inverted_residual_se on EfficientNet-B0's 40 -> 240 -> 40 5x5."""
    g = geometry(40, 240, 40, 28, 5, 1)
    build = ir.hopper_build(g, 1, sums=sums, gate=not sums, act0="silu", act1="silu")
    report = build.summary()
    _promises(build, report, dots=1 if sums else 2)
    assert set(build.stores) == ({32} if sums else {128}), report


def test_tf32_keeps_wgmma(ir, mb):
    g = geometry(24, 144, 24, 56, 3, 1, dtype=torch.float32)
    for build in (ir.hopper_build(g, 1, allow_tf32=True), mb.hopper_build(g._replace(hidden=96), 1, allow_tf32=True)):
        assert build.mma_versions == {3} and build.spill_bytes == 0, build.summary()


def test_without_the_alignment_facts_accesses_are_narrow(ir, monkeypatch):
    """The checks can fail: with C = N = 24 restated as merely even, the x tiles are no longer
    copied in 16-byte pieces and the output stores fall apart (only the bias vectors, at offsets
    0..Hd from an aligned pointer, keep 128-bit loads)."""
    real = ir.pow2_divisor
    monkeypatch.setattr(ir, "pow2_divisor", lambda *v, cap=16: min(2, real(*v, cap=cap)))
    build = ir.hopper_build(geometry(24, 144, 24, 56, 3, 1), 1)
    assert 128 not in build.stores and 16 not in build.cp_async_bytes, build.summary()


# (C, Hd, N, H, k, stride): EfficientNetV2-S's Fused-MBConv stages, a 5x5, C = 72 (not a multiple of 16)
MBCONVS = [(24, 24, 24, 112, 3, 1), (24, 96, 48, 112, 3, 2), (48, 192, 64, 56, 3, 2), (40, 240, 40, 28, 5, 1),
           (72, 288, 72, 28, 3, 1), (64, 256, 128, 28, 3, 2)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("block", MBCONVS, ids=[f"{c}-{h}-{n}-k{k}s{s}" for c, h, n, _, k, s in MBCONVS])
def test_fused_mbconv_is_a_pipelined_wgmma(mb, block, dtype):
    g = geometry(*block, dtype=dtype)
    build = mb.hopper_build(g, block[5], residual=True)
    report = f"{mb.tile_for(g)}: {build.summary()}"
    _promises(build, report, stages=3)
    assert max(build.wait_pendings) >= 1, report  # the conv's dot left in flight across the next step
    assert set(build.stores) == {128}, report
