"""The lowering table (passes/records/): every IR record a rule's plan can produce has an FX and
an ONNX lowering, and the two compute the same function as the record itself."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import SimpleNamespace

import pytest
import torch

import rewrite.ir as ir
import rewrite.rules as rules_pkg
from passes.records import lower_fx, table

# Records that only ever stand in a plan's `before` (what the view lifted), never in its `after`.
from rewrite.algebra.decouple import parallel_pairs

BEFORE_ONLY = {ir.ZeroPad, ir.MixedConv, ir.TransposedConv}


def record_types() -> set:
    """Every class defined in rewrite.ir or a rule module that computes a layer (apply + describe)."""
    modules = [ir] + [importlib.import_module(f"rewrite.rules.{m.name}") for m in pkgutil.iter_modules(rules_pkg.__path__)]
    found = set()
    for module in modules:
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and callable(getattr(cls, "apply", None)) and \
                    callable(getattr(cls, "describe", None)):
                found.add(cls)
    return found


def test_every_record_has_both_lowerings():
    lowerings = table()
    missing = [f"{cls.__module__}.{cls.__name__}: " + ", ".join(
        which for which in ("fx", "onnx") if getattr(lowerings.get(cls), which, None) is None)
        for cls in sorted(record_types() - BEFORE_ONLY, key=lambda c: c.__name__)
        if cls not in lowerings or lowerings[cls].fx is None or lowerings[cls].onnx is None]
    assert not missing, "IR records without a lowering (declare them in passes/records/): " + "; ".join(missing)


def test_before_only_records_are_records():
    assert BEFORE_ONLY <= record_types()


def test_fx_lowering_never_loads_onnx():
    import subprocess
    import sys
    code = ("import sys, torch; import passes.fx.adapter; from passes.records import table, lower_fx; table(); "
            "from rewrite.ir import ConvSpec, Activation; "
            "lower_fx([ConvSpec(torch.randn(4, 3, 3, 3), None, (1, 1), (1, 1, 1, 1), (1, 1), 1), Activation('relu')]); "
            "bad = [m for m in sys.modules if m == 'onnx' or m.startswith(('onnx.', 'onnx_graphsurgeon', 'passes.onnx'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- FX and ONNX lowerings compute the same function ------------------------------------------

def _conv(out, inp, k, groups=1, stride=1, pad=None, bias=True):
    p = k // 2 if pad is None else pad
    g = torch.Generator().manual_seed(out * 31 + inp * 7 + k)
    return ir.ConvSpec(torch.randn(out, inp // groups, k, k, generator=g) * 0.3,
                       torch.randn(out, generator=g) * 0.1 if bias else None, (stride, stride),
                       p if isinstance(p, tuple) else (p, p, p, p), (1, 1), groups)


def _affine(c):
    g = torch.Generator().manual_seed(c)
    return ir.Affine(torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g) * 0.1, axis=-1)


CASES = {
    "conv": ([_conv(8, 4, 3)], (2, 4, 9, 9), "nchw", 17),
    "conv-asymmetric-pad": ([_conv(8, 8, 3, groups=8, stride=2, pad=(0, 1, 0, 1))], (2, 8, 10, 10), "nchw", 17),
    "dw-pw-chain": ([_conv(6, 6, 3, groups=6), _conv(10, 6, 1)], (1, 6, 8, 8), "nchw", 17),
    "conv-as-linear-nc": ([_conv(5, 7, 1)], (3, 7), "nc", 17),
    "linear-rank3": ([ir.Linear(_conv(5, 7, 1))], (2, 4, 7), "nhwc", 17),
    "linear-rank2": ([ir.Linear(_conv(5, 7, 1, bias=False))], (3, 7), "nc", 17),
    "norm-permute-linear": ([ir.Permute((0, 2, 3, 1)), ir.LayerNorm(1e-6, _affine(6)), ir.Linear(_conv(4, 6, 1)),
                             ir.Permute((0, 3, 1, 2))], (2, 6, 5, 5), "nchw", 17),
    "unit-norm-opset13": ([ir.LayerNorm(1e-5), ir.Linear(_conv(4, 6, 1))], (2, 3, 6), "nhwc", 13),
    "affine-norm-opset13": ([ir.LayerNorm(1e-5, _affine(6))], (2, 3, 6), "nhwc", 13),
    "flatten-linear": ([ir.Flatten(1, 3), ir.Linear(_conv(3, 12, 1))], (2, 3, 2, 2), "nchw", 17),
    "shift-then-padded-dw": ([ir.Affine(torch.ones(6), torch.linspace(-1, 1, 6)), _conv(6, 6, 3, groups=6)],
                             (2, 6, 7, 7), "nchw", 17),
    "scale-and-shift": ([ir.Affine(torch.linspace(0.5, 2, 6), torch.linspace(-1, 1, 6)), _conv(4, 6, 1)],
                        (2, 6, 5, 5), "nchw", 17),
    "pw-then-depth-to-space": ([_conv(12, 5, 1), ir.DepthToSpace(2)], (2, 5, 4, 3), "nchw", 17),
    "depth-to-space-3": ([_conv(18, 4, 1), ir.DepthToSpace(3)], (1, 4, 3, 2), "nchw", 11),
    "activation-hardswish-13": ([ir.Activation("hardswish")], (2, 3, 4, 4), "nchw", 13),
    "activation-gelu": ([ir.Activation("gelu")], (2, 3, 4, 4), "nchw", 17),
    "fused-sep-conv": ([ir.FusedSepConv(_conv(6, 6, 3, groups=6), "relu6", _conv(8, 6, 1), None, False)],
                       (1, 6, 8, 8), "nchw", 17),
    "fused-mbconv": ([ir.FusedMBConv(_conv(12, 6, 3), "silu", _conv(6, 12, 1), None, False)], (1, 6, 8, 8),
                     "nchw", 17),
    "parallel-dw-pw-pairs": ([parallel_pairs(_conv(12, 6, 3, groups=6, stride=2), _conv(5, 12, 1))], (1, 6, 9, 9),
                             "nchw", 17),
    "parallel-with-shift": ([ir.ParallelBranches(((_conv(4, 4, 3, groups=4),), (_conv(4, 4, 1), _conv(4, 4, 3))),
                                                 torch.linspace(-1, 1, 4))], (2, 4, 6, 6), "nchw", 17),
}


def _onnx_run(layers, x: torch.Tensor, layout: str, opset: int) -> torch.Tensor:
    pytest.importorskip("onnx_graphsurgeon")
    pytest.importorskip("onnxruntime")
    import onnx_graphsurgeon as gs
    from onnx import helper

    from passes.onnx.graph import Names
    from passes.onnx.lower import OnnxSite, lower_onnx
    from passes.onnx.verify import FUNCTION_IR_VERSION, run_site

    graph = gs.Graph()
    inp = gs.Variable("x", dtype=x.numpy().dtype, shape=list(x.shape))
    match = SimpleNamespace(layout=layout, name="site", runtime_inputs=["x"], ops=[SimpleNamespace(name="site")],
                            residual=None)
    plan = SimpleNamespace(after=layers, note="")
    functions = {}
    site = OnnxSite(match, plan, inp, tuple(x.shape), Names(graph), opset, torch.float32, functions,
                    {"x": inp}.__getitem__)
    nodes = lower_onnx(layers, site)
    imports = [helper.make_opsetid("", opset), helper.make_opsetid("dwsep", 1)]
    return torch.from_numpy(run_site(list(nodes), [inp], [x.numpy()], nodes[-1].outputs[0], imports,
                                     FUNCTION_IR_VERSION, functions))


@pytest.mark.parametrize("case", sorted(CASES))
def test_fx_and_onnx_lowerings_agree(case):
    layers, shape, layout, opset = CASES[case]
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    expected = ir.run_chain([layer.to(torch.float64) if hasattr(layer, "to") else layer for layer in layers],
                            x.double()).float()
    with torch.no_grad():
        y = x
        for module in lower_fx(layers, layout, "site"):
            y = module(y)
    onnx_y = _onnx_run(layers, x, layout, opset)
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(onnx_y, expected, rtol=1e-4, atol=1e-4)


def test_concat_lowerings_agree():
    convs = [_conv(3, 4, 1), _conv(5, 2, 1)]
    concat = ir.Concat(tuple(convs))
    xs = [torch.randn(2, 4, 6, 6), torch.randn(2, 2, 6, 6)]
    (module,) = lower_fx([concat], "nchw", "site")
    with torch.no_grad():
        fx_y = module(*xs)
    torch.testing.assert_close(fx_y, concat.apply(*xs), rtol=1e-5, atol=1e-5)
    assert [type(b).__name__ for b in module.branches] == ["Conv2d", "Conv2d"]


def test_fx_roles_name_the_modules_of_a_site_lowered_to_several():
    from passes.records import fx_roles
    assert fx_roles([_conv(6, 6, 3, groups=6), _conv(10, 6, 1), _conv(4, 10, 3)]) == ["dw", "pw", "conv"]
    assert fx_roles([_conv(5, 7, 1), _conv(3, 5, 1)], "nc") == ["linear", "linear"]
    assert fx_roles([ir.Permute((0, 2, 3, 1)), ir.LayerNorm(1e-6), ir.Linear(_conv(4, 6, 1)), ir.Flatten(1, 2),
                     ir.Activation("relu")]) == ["permute", "norm", "linear", "flatten", "fused"]
