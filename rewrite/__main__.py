"""`python -m rewrite IN.onnx -o OUT.onnx ...`: the same command as `rewrite-onnx`."""
import sys

from .entry.cli import main

sys.exit(main())
