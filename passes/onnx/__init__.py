"""The ONNX front end: an onnx-graphsurgeon graph seen through the neutral view (view.py, lifting
in lift.py), rewritten by the shared rules (rewrite/rules/) and pass manager (passes/manager.py)
through the ONNX adapter (adapter.py: capture, lower with lower.py, check every site in
onnxruntime with verify.py, splice with graph.py), written back as standard ONNX. Entry point:
`rewrite.optimize_onnx` (pipeline.py runs the passes; io.py reads and writes files; runtime.py
runs models and captures activations).
"""
