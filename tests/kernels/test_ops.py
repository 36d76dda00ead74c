"""The dwsep::fused_sep_conv custom op: dispatch, fake implementation, compile and export."""
import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

import kernels.sep_conv.ops  # noqa: F401  (registers the op)
from kernels import FusedSepConv2d, sep_conv_reference
from tests.kernels.helpers import TOL, operands, reference64, rel_err

OP = torch.ops.dwsep.fused_sep_conv


def _op_args(a, allow_tf32=False):
    return (a["x"], a["dw_w"], a["dw_b"], a["pw_w"], a["pw_b"], a["stride"], list(a["padding"]), a["act1"],
            a["act2"], a["residual"], allow_tf32)


def test_op_runs_the_triton_kernel_under_the_interpreter(fsc):
    a = operands(act1="hardswish", act2="silu", residual=True)
    y = OP(*_op_args(a))
    assert torch.equal(y, fsc.fused_sep_conv(**a))
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(y, reference64(a)) <= TOL[torch.float32]


def test_op_falls_back_to_the_torch_reference_without_the_interpreter(monkeypatch):
    a = operands(channels_last=False, act1="relu6", act2="gelu", residual=True)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    y = OP(*_op_args(a))
    ref = sep_conv_reference(a["x"], a["dw_w"], a["dw_b"], a["pw_w"], a["pw_b"], a["stride"], a["padding"],
                             a["act1"], a["act2"], a["residual"])
    assert torch.equal(y, ref) and y.is_contiguous()  # NCHW in, NCHW out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("k,stride,padding", [((3, 3), 1, (1, 1)), ((5, 5), 2, (2, 2)), ((7, 7), 2, (0, 0)),
                                              ((1, 5), 1, (0, 2)), ((5, 1), 2, (2, 0)), ((3, 7), 2, (1, 0))])
def test_fake_impl_gives_shape_dtype_and_the_inputs_memory_format(k, stride, padding, dtype):
    with FakeTensorMode():
        x = torch.empty(3, 8, 13, 11, dtype=dtype, memory_format=torch.channels_last)
        args = (torch.empty(16, 1, *k, dtype=dtype), None, torch.empty(24, 16, 1, 1, dtype=dtype),
                torch.empty(24, dtype=dtype), stride, list(padding), "relu", "none", None, False)
        y, y_nchw = OP(x, *args), OP(x.contiguous(), *args)
    Ho, Wo = (13 + 2 * padding[0] - k[0]) // stride + 1, (11 + 2 * padding[1] - k[1]) // stride + 1
    assert y.shape == (3, 24, Ho, Wo) and y.dtype == dtype
    assert y.stride() == torch.empty(3, 24, Ho, Wo, memory_format=torch.channels_last).stride()
    assert y_nchw.stride() == torch.empty(3, 24, Ho, Wo).stride()


def test_fake_impl_checks_arguments():
    with FakeTensorMode(), pytest.raises(ValueError, match="act1='tanh'"):
        OP(torch.empty(1, 4, 8, 8), torch.empty(4, 1, 3, 3), None, torch.empty(8, 4), None, 1, [1, 1], "tanh", "none",
           None, False)
    with FakeTensorMode(), pytest.raises(ValueError, match="act_after_gate='tanh'"):
        OP(torch.empty(1, 4, 8, 8), torch.empty(4, 1, 3, 3), None, torch.empty(8, 4), None, 1, [1, 1], "relu", "none",
           None, False, None, "tanh")
    with FakeTensorMode(), pytest.raises(ValueError, match="padding must be"):
        OP(torch.empty(1, 4, 8, 8), torch.empty(4, 1, 3, 3), None, torch.empty(8, 4), None, 1, [1, 1, 1], "relu",
           "none", None, False)


@pytest.mark.parametrize("k", [3, (1, 5)])
def test_opcheck(k):
    a = operands(B=1, C=4, H=6, W=5, N=20, k=k, act1="silu", residual=True)
    torch.library.opcheck(OP.default, _op_args(a))
    gate = torch.rand(1, 4)
    torch.library.opcheck(OP.default, _op_args(a) + (gate, "relu6"))


class _Net(nn.Module):
    """A residual block whose body is the fused module: y = x + fused(x) * 2."""

    def __init__(self):
        super().__init__()
        dw, pw = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 1)
        self.fused = FusedSepConv2d.from_convs(dw, pw, act1="relu6", act2="hardswish")

    def forward(self, x):
        return self.fused(x, residual=x) * 2


def test_module_under_torch_compile_fullgraph():
    net, x = _Net(), torch.randn(2, 8, 7, 9)
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(x), net(x))


def test_module_under_torch_export():
    net, x = _Net(), torch.randn(2, 8, 7, 9)
    ep = torch.export.export(net, (x,))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert OP.default in targets
    assert not any("convolution" in str(t) for t in targets)
    assert torch.equal(ep.module()(x), net(x))
