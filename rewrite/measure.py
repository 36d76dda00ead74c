"""Timing two forms of a site on the device where the model runs: paired medians.

    t_before, t_after = paired_medians(before, after, inputs)

Both callables take the same inputs. After WARMUP calls of each (one-time costs: Triton
autotuning and compiles, allocator growth, onnxruntime's first run), calls alternate
before / after / before / ... so that drift (frequency, another process) hits both alike, and
each call is timed alone: CUDA events around it when the inputs are CUDA tensors, the wall
clock otherwise. Repeats stop at MAX_REPEATS, or once MIN_REPEATS pairs are in and the site has
taken BUDGET_S. The medians are returned, in seconds.
"""
from __future__ import annotations

import statistics
import time

import torch

WARMUP = 2
MIN_REPEATS = 5
MAX_REPEATS = 41
BUDGET_S = 0.25


def _on_cuda(inputs) -> bool:
    return any(isinstance(x, torch.Tensor) and x.is_cuda for x in inputs)


def _timer(cuda: bool):
    if not cuda:
        def wall(fn, inputs):
            start = time.perf_counter()
            fn(*inputs)
            return time.perf_counter() - start
        return wall
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def events(fn, inputs):
        start.record()
        fn(*inputs)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    return events


def paired_medians(before, after, inputs, *, budget_s: float = BUDGET_S, min_repeats: int = MIN_REPEATS,
                   max_repeats: int = MAX_REPEATS) -> tuple[float, float]:
    """(median seconds of before(*inputs), of after(*inputs)), timed in alternation."""
    timed = _timer(_on_cuda(inputs))
    with torch.no_grad():
        for _ in range(WARMUP):
            before(*inputs)
            after(*inputs)
        if _on_cuda(inputs):
            torch.cuda.synchronize()
        a, b = [], []
        start = time.perf_counter()
        while len(a) < max_repeats and (len(a) < min_repeats or time.perf_counter() - start < budget_s):
            a.append(timed(before, inputs))
            b.append(timed(after, inputs))
    return statistics.median(a), statistics.median(b)
