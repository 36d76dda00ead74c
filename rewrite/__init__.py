"""dwsep-rewrite: graph-rewriting passes for depthwise-separable CNNs.

    from rewrite import optimize
    fast = optimize(model.eval(), example_inputs)
    print(fast.rewrite_report)

`rewrite` holds the format-independent core (chain IR, algebra, rules, cost model, numerics,
report); the graph front ends live in `passes/`, and the entry points (`optimize`, `optimize_onnx`,
the command line, demo, plot, curve) in `rewrite.entry`, the layer above both. The names below are
loaded on first use, so that `from rewrite.ir import ...` inside `passes/` never loads the entry
layer (no import runs back up).
"""
import importlib

_EXPORTS = {
    "optimize": "rewrite.entry.api",
    "optimize_onnx": "rewrite.entry.onnx_api",
    "Report": "rewrite.report",
    "Site": "rewrite.report",
    "RewriteOptions": "rewrite.options",
    "RooflineCostModel": "rewrite.cost_model",
    "DeviceProfile": "rewrite.cost_model",
    "H100": "rewrite.cost_model",
    "CPU": "rewrite.cost_model",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rewrite' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
