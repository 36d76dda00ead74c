"""The ONNX front end: an onnx-graphsurgeon graph seen through the neutral view (view.py, lifting
in lift.py), rewritten by the shared rules (rewrite/rules/) and pass manager (passes/manager.py)
through the ONNX adapter (adapter.py: capture, lower with lower.py, check every site in
onnxruntime with verify.py, splice with graph.py), written back as standard ONNX. Entry point:
`rewrite.optimize_onnx` (pipeline.py runs the passes; io.py reads and writes files; runtime.py
runs models and captures activations).
"""

import importlib

# The ONNX packages are an optional extra: name what is missing and how to get it, before a
# submodule fails on its first import with a bare ModuleNotFoundError.
_NEEDED = {"onnx": "onnx", "onnxruntime": "onnxruntime", "onnx_graphsurgeon": "onnx-graphsurgeon"}


def _missing() -> list[str]:
    missing = []
    for module, package in _NEEDED.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    return missing


if _MISSING := _missing():
    raise ImportError(f"the ONNX path needs {', '.join(_MISSING)}, which is not installed (pip install {' '.join(_MISSING)})")
