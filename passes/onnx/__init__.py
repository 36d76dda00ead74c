"""The ONNX front end: lift conv chains out of an onnx-graphsurgeon graph, rewrite them through
the shared rules (fold, factorize, reverse, fuse; one file each), check every site in
onnxruntime, write standard ONNX back. Entry point: `rewrite.optimize_onnx` (pipeline.py runs
the passes; io.py reads and writes files; runtime.py and verify.py run models and sites).
"""
