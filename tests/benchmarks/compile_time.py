"""How long the fused kernel's first launch at a new specialisation takes on a GPU: one compile
of the table's tile (kernels/sep_conv/tiles.py; no candidates are timed), then a second launch.

    python -m tests.benchmarks.compile_time

Each measurement uses activations no earlier launch used, so nothing comes from Triton's
in-memory cache; set TRITON_CACHE_DIR to an empty folder to keep the disk cache out too.
"""
import sys
import time

import torch


def launch_seconds(act1: str, act2: str) -> float:
    import kernels.sep_conv.fused_sep_conv as fsc

    x = torch.randn(8, 96, 28, 28, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    dw, pw = torch.randn(96, 1, 3, 3, device="cuda", dtype=torch.float16), torch.randn(160, 96, device="cuda",
                                                                                        dtype=torch.float16)
    start = time.perf_counter()
    fsc.fused_sep_conv(x, dw, None, pw, None, stride=1, padding=1, act1=act1, act2=act2)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> int:
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    first = launch_seconds("gelu", "relu")
    again = launch_seconds("gelu", "relu")
    print(f"first launch (one compile of the table's tile) {first:.2f}s, second launch {again * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
