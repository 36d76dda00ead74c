"""The Fused-MBConv block in one Triton kernel (kernels/block/fused_mbconv.py), in Triton's interpreter
against float64: dense 3x3 / 5x5 / 1x5 convs, strides 1 and 2, expansion 1..6, with and without
residual, fp32 / fp16 / bf16, channel counts that are not multiples of 16."""
import itertools

import pytest
import torch

from kernels.activations import ACTIVATIONS
from kernels.block.reference import fused_mbconv_reference
from kernels.checks import out_size
from tests.kernels.helpers import TOL, rel_err

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def mbconv_operands(B=2, C=12, e=4, N=20, H=7, W=6, k=3, stride=1, *, dtype=torch.float32, residual=False,
                    bias=True, channels_last=True, weights_channels_last=True, act1="silu", act2="none"):
    kh, kw = (k, k) if isinstance(k, int) else k
    Hd, pad = C * e, (kh // 2, kw // 2)
    x = torch.randn(B, C, H, W)
    conv_w = torch.randn(Hd, C, kh, kw) / (C * kh * kw) ** 0.5
    a = dict(x=x.contiguous(memory_format=torch.channels_last) if channels_last else x,
             conv_w=conv_w.contiguous(memory_format=torch.channels_last) if weights_channels_last else conv_w,
             conv_b=torch.randn(Hd) * 0.5 if bias else None, pw_w=torch.randn(N, Hd) / Hd ** 0.5,
             pw_b=torch.randn(N) * 0.5 if bias else None,
             residual=torch.randn(B, N, out_size(H, kh, stride, pad[0]), out_size(W, kw, stride, pad[1]))
             if residual else None,
             stride=stride, padding=pad, act1=act1, act2=act2)
    return {n: v.to(dtype) if isinstance(v, torch.Tensor) else v for n, v in a.items()}


def reference64(a):
    d = {n: v.double() if isinstance(v, torch.Tensor) else v for n, v in a.items()}
    return fused_mbconv_reference(d["x"], d["conv_w"], d["conv_b"], d["pw_w"], d["pw_b"], a["stride"], a["padding"],
                                  a["act1"], a["act2"], d["residual"])


def _cases():
    cases = []
    geoms = [(1, 3, 1), (4, 5, 2), (6, 3, 2), (4, (1, 5), 1)]
    for i, (dtype, (e, k, stride)) in enumerate(itertools.product(DTYPES, geoms)):
        cases.append(pytest.param(dict(dtype=dtype, e=e, k=k, stride=stride, residual=i % 3 != 1, bias=i % 5 != 4,
                                       channels_last=i % 4 != 3, weights_channels_last=i % 3 != 2,
                                       act1=ACTIVATIONS[(i + 3) % 6], act2=ACTIVATIONS[(5 * i) % 6]),
                                  id=f"{str(dtype)[6:]}-e{e}-k{k if isinstance(k, int) else '1x5'}-s{stride}"))
    return cases


@pytest.mark.parametrize("case", _cases())
def test_matches_float64_reference(mb, case):
    a = mbconv_operands(**case)
    y = mb.fused_mbconv(**a)
    ref = reference64(a)
    assert y.shape == ref.shape
    assert y.is_contiguous(memory_format=torch.channels_last) == case["channels_last"]
    assert rel_err(y, ref) <= TOL[case["dtype"]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channel_chunks_hidden_chunks_and_n_tiles(mb, dtype):
    """C = 40 in three 16-channel steps per tap, Hd = 120 in 16-channel chunks (a partial last one),
    N = 40 over two N tiles."""
    a = mbconv_operands(C=40, e=3, N=40, H=9, W=5, dtype=dtype, residual=True, act1="relu6", act2="hardswish")
    y = mb.fused_mbconv(**a, config=dict(BLOCK_M=64, BLOCK_N=32, BLOCK_H=16, BLOCK_C=16))
    assert rel_err(y, reference64(a)) <= TOL[dtype]


def test_the_conv_reads_its_taps_the_right_way_round(mb):
    """A 1x5 kernel on a non-square map, from NCHW-strided weights: the mirrored kernel is far off."""
    a = mbconv_operands(C=4, e=2, N=8, H=5, W=9, k=(1, 5), act1="none")
    y = mb.fused_mbconv(**a)
    assert rel_err(y, reference64(a)) <= TOL[torch.float32]
    assert rel_err(mb.fused_mbconv(**{**a, "conv_w": a["conv_w"].contiguous()}), reference64(a)) <= TOL[torch.float32]
    mirrored = {**a, "conv_w": a["conv_w"].flip(3)}
    assert rel_err(y, reference64(mirrored)) > 0.1


def test_launcher_checks(mb):
    a = mbconv_operands(C=8, e=2, N=8)
    with pytest.raises(ValueError, match="config must have the keys"):
        mb.fused_mbconv(**a, config=dict(BLOCK_M=32))
    with pytest.raises(ValueError, match=r"conv_w must be \[Hd, 8, kh, kw\]"):
        mb.fused_mbconv(**{**a, "conv_w": torch.randn(16, 4, 3, 3)})
    with pytest.raises(TypeError, match="conv_w has dtype torch.float16"):
        mb.fused_mbconv(**{**a, "conv_w": a["conv_w"].half()})
    with pytest.raises(TypeError, match="allow_tf32 must be a bool"):
        mb.fused_mbconv(**a, allow_tf32="yes")


def test_tile_rule(mb):
    from kernels.block.checks import BlockGeometry

    def tile(C, Hd, N):
        return mb.tile_for(BlockGeometry(64, C, Hd, 3, 3, 1, 1, 56, 56, N, 56, 56, torch.float16))

    assert tile(24, 96, 24) == mb.BlockTile(64, 32, 64, 32, 4, 3)
    assert tile(72, 288, 72) == mb.BlockTile(64, 128, 64, 64, 8, 3)
    assert tile(64, 256, 300).block_n == 256 and tile(64, 256, 300).block_h == 32
