"""FusedSepConv2d: built from convs it computes what the unfused chain computes."""
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from kernels import ACTIVATIONS, FusedSepConv2d
from kernels.activations import activation_name
from tests.kernels.helpers import TOL, rel_err

_ACT_MODULES = {"none": nn.Identity, "relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU,
                "hardswish": nn.Hardswish, "gelu": nn.GELU}


def _chain(C=6, r=1, N=20, k=3, stride=1, padding=1, bias=True, act1="relu", act2="none"):
    dw = nn.Conv2d(C, C * r, k, stride, padding, groups=C, bias=bias)
    pw = nn.Conv2d(C * r, N, 1, bias=bias)
    return dw, pw, nn.Sequential(dw, _ACT_MODULES[act1](), pw, _ACT_MODULES[act2]())


@pytest.mark.parametrize("cfg", [
    dict(),
    dict(C=5, r=2, N=24, k=5, stride=2, padding=2, act1="silu", act2="hardswish"),
    dict(C=3, N=10, k=7, stride=1, padding=3, bias=False, act1="gelu", act2="relu6"),
    dict(C=8, N=40, k=3, stride=2, padding="valid", act1="none", act2="relu"),
    dict(C=4, r=3, N=16, k=5, stride=1, padding="same", act1="relu6", act2="gelu"),
    dict(C=6, N=12, k=(1, 5), stride=1, padding=(0, 2), act1="none", act2="relu"),      # GhostNet-V2's DFC
    dict(C=6, N=12, k=(5, 1), stride=2, padding=(2, 0), act1="relu", act2="none"),
    dict(C=3, r=2, N=8, k=(3, 7), stride=1, padding="same", act1="silu", act2="none"),
    dict(C=4, N=8, k=(2, 4), stride=2, padding=(1, 0), act1="none", act2="none"),       # even, padding per axis
], ids=["default", "r2-k5-s2", "k7-nobias", "valid", "same-r3", "1x5", "5x1-s2", "3x7-same", "2x4-s2"])
def test_from_convs_matches_the_unfused_chain(cfg):
    dw, pw, seq = _chain(**cfg)
    fused = FusedSepConv2d.from_convs(dw, pw, act1=cfg.get("act1", "relu"), act2=cfg.get("act2", "none"))
    x = torch.randn(2, dw.in_channels, 9, 11)
    ref = copy.deepcopy(seq).double()(x.double())
    y = fused(x)  # the Triton kernel, in the interpreter
    assert y.shape == ref.shape and rel_err(y, ref) <= TOL[torch.float32]
    r = torch.randn_like(ref)
    assert rel_err(fused(x, residual=r.float()), ref + r) <= TOL[torch.float32]


def test_cpu_fallback_gives_the_unfused_chain_numbers(monkeypatch):
    dw, pw, seq = _chain(C=5, r=2, N=24, k=5, stride=2, padding=2, act1="silu", act2="gelu")
    fused = FusedSepConv2d.from_convs(dw, pw, act1="silu", act2="gelu")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x = torch.randn(2, 5, 9, 11)
    assert torch.equal(fused(x), seq(x))


def test_half_precision_module():
    dw, pw, seq = _chain(C=6, N=20, act1="relu", act2="silu")
    fused = FusedSepConv2d.from_convs(dw, pw, act1="relu", act2="silu").half()
    x = torch.randn(2, 6, 9, 7)
    assert fused.dw_weight.dtype == torch.float16
    assert rel_err(fused(x.half()), copy.deepcopy(seq).double()(x.half().double())) <= TOL[torch.float16]


def test_parameters_state_dict_and_layout():
    dw, pw, _ = _chain(C=6, r=2, N=20, k=5, padding=2)
    fused = FusedSepConv2d.from_convs(dw, pw)
    assert set(fused.state_dict()) == {"dw_weight", "dw_bias", "pw_weight", "pw_bias"}
    assert fused.dw_weight.shape == (12, 1, 5, 5) and fused.dw_weight.stride()[0] == 1  # tap-major
    assert fused.pw_weight.shape == (20, 12)
    assert not any(p.requires_grad for p in fused.parameters())
    assert torch.equal(fused.dw_weight, dw.weight) and torch.equal(fused.pw_weight, pw.weight.reshape(20, 12))
    other = FusedSepConv2d.from_convs(*_chain(C=6, r=2, N=20, k=5, padding=2)[:2])
    other.load_state_dict(fused.state_dict())
    assert other.dw_weight.stride()[0] == 1 and copy.deepcopy(other).half().dw_weight.stride()[0] == 1
    x = torch.randn(1, 6, 8, 8)
    assert torch.equal(other(x), fused(x))
    other.to(memory_format=torch.channels_last)  # as users convert whole models
    assert other.dw_weight.stride()[0] == 1 and torch.equal(other(x), fused(x))


def test_no_bias_and_extra_repr():
    fused = FusedSepConv2d(torch.randn(8, 1, 3, 3), None, torch.randn(16, 8, 1, 1), None, stride=2, padding=1,
                           act1="relu6", act2="none", allow_tf32=True)
    assert fused.dw_bias is None and fused.pw_bias is None
    assert repr(fused) == ("FusedSepConv2d(8, 16, kernel_size=(3, 3), stride=2, padding=(1, 1), act1=relu6, "
                           "act2=none, dw_bias=False, pw_bias=False, allow_tf32=True)")
    assert fused(torch.randn(2, 4, 9, 9)).shape == (2, 16, 5, 5)  # C = 4 read from the input: r = 2


def _conv(*args, **kwargs):
    return nn.Conv2d(*args, **kwargs)


DECLINES = [
    (_conv(8, 8, 3, padding=1), _conv(8, 16, 1), "not depthwise"),
    (_conv(8, 8, 9, padding=4, groups=8), _conv(8, 16, 1), r"kernel \(9, 9\) is not within 1..7"),
    (_conv(8, 8, (1, 8), padding=(0, 4), groups=8), _conv(8, 16, 1), r"kernel \(1, 8\) is not within 1..7"),
    (_conv(8, 8, 3, stride=3, padding=1, groups=8), _conv(8, 16, 1), "stride"),
    (_conv(8, 8, 3, stride=(1, 2), padding=1, groups=8), _conv(8, 16, 1), "stride"),
    (_conv(8, 8, 3, padding=2, dilation=2, groups=8), _conv(8, 16, 1), "dilation"),
    (_conv(8, 8, 3, padding=1, groups=8, padding_mode="reflect"), _conv(8, 16, 1), "padding_mode"),
    (_conv(8, 8, (3, 4), padding="same", groups=8), _conv(8, 16, 1), "pads one side more"),
    (_conv(8, 8, 3, padding=1, groups=8), _conv(8, 16, 3, padding=1), "not a 1x1"),
    (_conv(8, 8, 3, padding=1, groups=8), _conv(8, 16, 1, stride=2), "not a 1x1"),
    (_conv(8, 8, 3, padding=1, groups=8), _conv(8, 16, 1, groups=2), "not a 1x1"),
    (_conv(8, 8, 3, padding=1, groups=8), _conv(8, 16, 1, padding=1), "padding"),
    (_conv(8, 16, 3, padding=1, groups=8), _conv(8, 16, 1), "takes 8 channels but dw makes 16"),
    (nn.Linear(8, 8), _conv(8, 16, 1), "must be an nn.Conv2d"),
]


@pytest.mark.parametrize("dw,pw,reason", DECLINES, ids=[r for _, _, r in DECLINES])
def test_from_convs_declines_with_the_reason(dw, pw, reason):
    with pytest.raises(ValueError, match=reason):
        FusedSepConv2d.from_convs(dw, pw)


def test_constructor_checks():
    w, pw = torch.randn(8, 1, 3, 3), torch.randn(16, 8)
    with pytest.raises(ValueError, match="act2='tanh'"):
        FusedSepConv2d(w, None, pw, None, stride=1, padding=1, act2="tanh")
    with pytest.raises(ValueError, match="stride must be one of"):
        FusedSepConv2d(w, None, pw, None, stride=4, padding=1)
    with pytest.raises(TypeError, match="pw_w has dtype"):
        FusedSepConv2d(w, None, pw.half(), None, stride=1, padding=1)
    with pytest.raises(ValueError, match="follow dw_w's 8 channels"):
        FusedSepConv2d(w, None, torch.randn(16, 4), None, stride=1, padding=1)


def test_activation_names():
    assert [activation_name(m()) for m in _ACT_MODULES.values()] == list(_ACT_MODULES)
    assert set(_ACT_MODULES) == set(ACTIVATIONS)
    assert activation_name(nn.ReLU(inplace=True)) == "relu"
    assert activation_name(nn.GELU(approximate="tanh")) is None
    assert activation_name(nn.Tanh()) is None


def test_package_works_without_triton():
    """import kernels and FusedSepConv2d on CPU never need Triton; the custom op falls back."""
    code = (
        "import sys, warnings; sys.modules['triton'] = None\n"
        "import torch, kernels\n"
        "m = kernels.FusedSepConv2d(torch.randn(8, 1, 3, 3), None, torch.randn(4, 8), None, stride=1, padding=1)\n"
        "x = torch.randn(1, 8, 5, 5)\n"
        "assert m(x).shape == (1, 4, 5, 5)\n"
        "import os; os.environ['TRITON_INTERPRET'] = '1'\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    y = m(x)\n"
        "assert 'falls back to the torch reference' in str(w[0].message)\n"
        "assert torch.allclose(y, kernels.sep_conv_reference(x, m.dw_weight, None, m.pw_weight, None, 1, 1))\n"
        "try:\n"
        "    kernels.fused_sep_conv_triton\n"
        "except ImportError:\n"
        "    print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
