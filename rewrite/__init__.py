"""dwsep-rewrite: graph-rewriting passes for depthwise-separable CNNs.

    from rewrite import optimize
    fast = optimize(model.eval(), example_inputs)
    print(fast.rewrite_report)

`rewrite` holds the format-independent core (chain IR, algebra, rules, cost model, numerics,
report); the graph front ends live in `passes/` and are imported only when used.
"""
from .api import optimize
from .cost_model import CPU, H100, DeviceProfile, RooflineCostModel
from .options import RewriteOptions
from .report import Report, Site

__all__ = ["optimize", "optimize_onnx", "Report", "Site", "RewriteOptions", "RooflineCostModel",
           "DeviceProfile", "H100", "CPU"]


def __getattr__(name):
    if name == "optimize_onnx":
        from .onnx_api import optimize_onnx
        return optimize_onnx
    raise AttributeError(f"module 'rewrite' has no attribute {name!r}")
