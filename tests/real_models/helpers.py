"""What more than one file needs to reach real models: `real_file`, a model file shipped inside an
installed wheel (the Paddle2ONNX files of rapidocr-onnxruntime), found without importing the package.
Used by tests/real_models/test_onnx_files_other_exporters.py, tests/report_sites.py and any test that
reads such a file."""
import importlib.util
import os
from pathlib import Path

import pytest

# PaddleOCR's text-direction classifier (Paddle2ONNX, 0.6 MB) in the rapidocr-onnxruntime==1.4.4 wheel
CLS = ("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx")


def real_file(package: str, relpath: str) -> Path:
    """The file from an installed wheel (found without importing the package), or from
    $DWSEP_REAL_ONNX_DIR/<package>/<relpath>; skips with what to do when neither has it."""
    places = []
    if os.environ.get("DWSEP_REAL_ONNX_DIR"):
        places.append(Path(os.environ["DWSEP_REAL_ONNX_DIR"]) / package / relpath)
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        places += [Path(p) / relpath for p in spec.submodule_search_locations]
    for path in places:
        if path.is_file():
            return path
    pytest.skip(f"{Path(relpath).name} not found: `pip install --no-deps rapidocr-onnxruntime==1.4.4` (as .ci/setup "
                f"does) or set DWSEP_REAL_ONNX_DIR to a folder holding {package}/{relpath}")
