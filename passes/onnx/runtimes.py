"""The runtimes an ONNX file's forms are timed in: where the file will run decides which form wins.

    run = compiled(model, "openvino")      # run(feeds) -> the outputs, as the runtime computes them
    describe("openvino")                   # "OpenVINO 2026.4.1 CPU, f32": for the report and the timing cache

RUNTIMES:
  onnxruntime        the CPU execution provider with all graph optimizations on (the default; the
                     site checks always run in onnxruntime, with its optimizations off)
  openvino           OpenVINO's CPU plugin, inference precision f32 (INFERENCE_PRECISION_HINT)
  openvino-default   OpenVINO's CPU plugin at the CPU's default precision: bf16 where the CPU has
                     bf16 instructions (AVX-512 BF16, AMX), f32 elsewhere

Why "openvino" means f32: every rewrite is checked against a float64 reference at the file's own
precision (float32), and a form that wins only once OpenVINO lowers it to bf16 is a claim about
numbers the checks never saw. A user who deploys at the CPU's default precision says so with
"openvino-default", and the forms are then timed as they will run. Both use the LATENCY
performance hint (one request at a time, as the timing runs them) and OpenVINO's own thread count.

OpenVINO is an optional extra (pip install 'dwsep-rewrite[openvino]'), imported only here and only
when one of its runtimes is asked for.
"""
from __future__ import annotations

from typing import Callable

import onnx

from . import runtime as ort_runtime

RUNTIMES = ("onnxruntime", "openvino", "openvino-default")
OPENVINO_MISSING = ("runtime={name!r} needs OpenVINO, which is not installed: pip install openvino "
                    "(or pip install 'dwsep-rewrite[openvino]')")


def check(name: str) -> None:
    """A ValueError naming the choices for an unknown runtime, an ImportError saying how to install
    OpenVINO when one of its runtimes is asked for without it."""
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}")
    if name.startswith("openvino"):
        _openvino(name)


def _openvino(name: str):
    try:
        import openvino
    except ImportError:
        raise ImportError(OPENVINO_MISSING.format(name=name)) from None
    return openvino


def _precision(name: str) -> dict:
    return {"INFERENCE_PRECISION_HINT": "f32"} if name == "openvino" else {}


def describe(name: str) -> str:
    """The runtime, its version and precision, as the report and the timing cache name it."""
    if name == "onnxruntime":
        import onnxruntime as ort
        return f"onnxruntime {ort.__version__} CPUExecutionProvider"
    ov = _openvino(name)
    core = ov.Core()
    hint = core.get_property("CPU", "INFERENCE_PRECISION_HINT")
    precision = "f32" if name == "openvino" else f"{getattr(hint, 'get_type_name', lambda: hint)()} (the CPU's default)"
    return f"OpenVINO {ov.get_version().split('-')[0]} CPU, {precision}"


def compiled(model: onnx.ModelProto, name: str) -> Callable[[dict], list]:
    """`model` ready to run in runtime `name`: a callable taking the feeds {input name: array} and
    returning the outputs in graph order."""
    if name == "onnxruntime":
        sess = ort_runtime.session(model, optimized=True)
        return lambda feeds: sess.run(None, feeds)
    ov = _openvino(name)
    core = ov.Core()
    network = core.read_model(ort_runtime.loosened(model).SerializeToString())
    program = core.compile_model(network, "CPU", {"PERFORMANCE_HINT": "LATENCY", **_precision(name)})
    request = program.create_infer_request()
    outputs = program.outputs

    def run(feeds: dict) -> list:
        result = request.infer(feeds)
        return [result[o] for o in outputs]
    return run
