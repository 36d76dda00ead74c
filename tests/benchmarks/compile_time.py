"""How long the fused kernel's first launch at a new specialisation takes on a GPU, with the
autotuner's candidates compiled one after another (DWSEP_PARALLEL_COMPILE=0) and in threads.

    python -m tests.benchmarks.compile_time

Each measurement uses activations no earlier launch used, so nothing comes from Triton's
in-memory cache; set TRITON_CACHE_DIR to an empty folder to keep the disk cache out too.
"""
import os
import sys
import time

import torch


def first_launch_seconds(act1: str, act2: str, parallel: bool) -> float:
    import kernels.fused_sep_conv as fsc

    os.environ["DWSEP_PARALLEL_COMPILE"] = "1" if parallel else "0"
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
    import kernels.fused_sep_conv as fsc

    serial = first_launch_seconds("gelu", "relu", parallel=False)
    parallel = first_launch_seconds("relu", "gelu", parallel=True)
    print(f"first launch, {len(fsc._TILES)} candidate tiles: serial {serial:.1f}s, threads {parallel:.1f}s "
          f"({os.cpu_count()} cpus); precompile error: {fsc.precompile_error!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
