"""The two files here that read ONNX at import need the onnx extra (onnx, onnxruntime,
onnx-graphsurgeon); where it is not installed (e.g. the GPU machine) they are not collected, and the
session header says so, as in tests/onnx/conftest.py. The parity file skips itself
(pytest.importorskip)."""
import importlib.util

MISSING = [m for m in ("onnx", "onnxruntime", "onnx_graphsurgeon") if importlib.util.find_spec(m) is None]

if MISSING:
    collect_ignore = ["test_zoo_onnx.py", "test_onnx_files_other_exporters.py"]


def pytest_report_header(config):
    if MISSING:
        return (f"tests/real_models: test_zoo_onnx.py and test_onnx_files_other_exporters.py not collected: "
                f"{', '.join(MISSING)} not installed (pip install -e '.[onnx]')")
    return None
