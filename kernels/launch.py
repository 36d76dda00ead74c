"""The custom ops' way to their Triton launchers, loaded on first use so that registering an op
(kernels/sep_conv/ops.py, kernels/block/ops.py) never imports Triton."""
import importlib
import warnings


def triton_launcher(module: str, function: str):
    """The Triton launcher `function` of the kernel module `module` (its full name, such as
    ``kernels.sep_conv.fused_sep_conv``), or None (with a warning) without Triton."""
    try:
        loaded = importlib.import_module(module)
    except ImportError as e:
        warnings.warn(f"Triton is unavailable ({e}); dwsep::{function} falls back to the torch reference")
        return None
    return getattr(loaded, function)
