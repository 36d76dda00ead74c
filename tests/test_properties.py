"""Property tests: on random small chains, the optimized model equals the original on FRESH
inputs (not the ones it was verified on) within tolerance — or the site was declined. Never a
wrong answer."""
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewrite import optimize
from rewrite.algebra import collapse_dw_pw
from tests.helpers import batchnorm, dw_spec, max_rel, pw_spec

ACTS = [None, nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.GELU]


class RandomChain(nn.Module):
    def __init__(self, convs, bns, act, extra_user):
        super().__init__()
        self.a, self.b = convs
        self.bn_a, self.bn_b = bns
        self.act = act
        self.extra_user = extra_user

    def forward(self, x):
        y = self.a(x)
        z = self.bn_a(y) if self.bn_a is not None else y
        z = self.act(z) if self.act is not None else z
        z = self.b(z)
        z = self.bn_b(z) if self.bn_b is not None else z
        if self.extra_user:
            return z, y
        return z


@st.composite
def chains(draw):
    c = draw(st.integers(2, 12))
    n = draw(st.integers(1, 12))
    k = draw(st.sampled_from([1, 3, 5]))
    stride = draw(st.sampled_from([1, 2]))
    dilation = draw(st.sampled_from([1, 2])) if k > 1 else 1
    padding = draw(st.integers(0, k // 2 * dilation))
    bias = draw(st.booleans())
    r = draw(st.sampled_from([1, 2]))
    order = draw(st.sampled_from(["dw_pw", "pw_dw", "dense_pw", "factorable_dw_pw"]))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)

    def conv(cin, cout, groups, kk, s, p, d):
        m = nn.Conv2d(cin, cout, kk, s, p, d, groups=groups, bias=bias)
        with torch.no_grad():
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) / (m.weight[0].numel() ** 0.5))
            if bias:
                m.bias.copy_(torch.randn(cout, generator=g) * 0.1)
        return m

    if order == "dw_pw":
        convs = (conv(c, c * r, c, k, stride, padding, dilation), conv(c * r, n, 1, 1, 1, 0, 1))
    elif order == "pw_dw":
        convs = (conv(c, n, 1, 1, 1, 0, 1), conv(n, n * r, n, k, stride, padding, dilation))
    elif order == "dense_pw":
        convs = (conv(c, n, 1, k, stride, padding, dilation), conv(n, c, 1, 1, 1, 0, 1))
    else:  # a dense conv that is exactly factorable, then a pw
        spec = collapse_dw_pw(dw_spec(c, k, r, stride, (padding,) * 4, dilation, gen=g), pw_spec(c * r, n, gen=g))
        dense = nn.Conv2d(c, n, k, stride, padding, dilation, bias=True)
        with torch.no_grad():
            dense.weight.copy_(spec.weight.float() / (c * k))
            dense.bias.copy_(spec.bias.float())
        convs = (dense, conv(n, c, 1, 1, 1, 0, 1))
    mid = convs[0].out_channels
    bns = (batchnorm(mid, seed) if draw(st.booleans()) else None,
           batchnorm(convs[1].out_channels, seed + 1) if draw(st.booleans()) else None)
    act_cls = draw(st.sampled_from(ACTS))
    model = RandomChain(convs, bns, act_cls() if act_cls else None, draw(st.booleans())).eval()
    size = draw(st.integers(k * dilation + 1, 14))
    batch = draw(st.integers(1, 3))
    return model, (batch, c, size, size + draw(st.integers(0, 3)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains(), st.sampled_from(["h100", "cpu"]), st.sampled_from([None, 0.05]))
def test_optimized_chain_matches_original_on_fresh_inputs(case, target, budget):
    model, shape = case
    example = torch.randn(shape)
    opt = optimize(model, example, target=target, min_speedup=0.0 if budget else 1.05,
                   factorize_error_budget=budget)
    report = opt.rewrite_report
    assert report.model_rel_error is not None and report.model_rel_error <= 1e-4 or not report.applied
    fresh = torch.randn(shape) * 3 + 0.5
    with torch.no_grad():
        ref = model.double()(fresh.double())
        out = opt(fresh)
    model.float()
    refs = ref if isinstance(ref, tuple) else (ref,)
    outs = out if isinstance(out, tuple) else (out,)
    approximate = any("approximate" in s.reason for s in report.applied)
    tol = 0.2 if approximate else 1e-4
    for o, r in zip(outs, refs):
        assert torch.isfinite(o).all()
        assert max_rel(o.double(), r) <= tol, str(report)
