"""The ONNX front end's tests need the onnx extra (onnx, onnxruntime, onnx-graphsurgeon,
onnxscript); where it is not installed (e.g. the GPU machine) they are not collected, and the
session header says so."""
import importlib.util

MISSING = [m for m in ("onnx", "onnxruntime", "onnx_graphsurgeon") if importlib.util.find_spec(m) is None]

if MISSING:
    collect_ignore_glob = ["test_onnx_*.py", "onnx_graphs.py"]


def pytest_report_header(config):
    if MISSING:
        return f"tests/onnx not collected: {', '.join(MISSING)} not installed (pip install -e '.[onnx]')"
    return None
