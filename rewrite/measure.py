"""Timing two forms on the device where the model runs: paired medians, and how sure they are.

    c = compare(before, after, inputs, margin=1.05)     # c.faster(1.05), c.slower(1.05), c.describe()

Both callables take the same inputs. After WARMUP calls of each (one-time costs: Triton
autotuning and compiles, allocator growth, onnxruntime's first run), calls alternate
before / after / before / ... so that drift (frequency, another process) hits both alike, and
each call is timed alone: CUDA events around it when the inputs are CUDA tensors, the wall
clock otherwise. A pair is CALLS_PER_PAIR calls of each, alternating, and keeps each form's least
time: what another process adds to a call (a lost time slice, a polluted cache) only ever adds,
so the least of a few calls is the least disturbed. Repeats stop at MAX_REPEATS pairs, or once
MIN_REPEATS pairs are in and the site has taken BUDGET_S.

A decision taken from a timing must hold up on a busy machine, where another process can slow
either form by more than the difference between them. `compare` therefore judges the per-pair
ratios r_i = before_i / after_i (a pair runs back to back, so it shares the machine's state): the
speedup is their median, and its CONFIDENCE interval comes from order statistics (no assumption
on the noise's distribution: the median lies between the k-th smallest and the k-th largest of n
ratios with probability 1 − 2·P(Binomial(n, ½) < k)). While the interval contains both 1 and a
ratio beyond the margin, the difference is not known yet, and more pairs are timed, up to EXTEND
times the budget. A form is called faster only when the median reaches the margin and the whole
interval lies above 1; slower likewise below. What the caller does with a comparison that is
neither (the sites: keep the form that removes work, by the cost model) is its own decision.
"""
from __future__ import annotations

import math
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

WARMUP = 2
MIN_REPEATS = 5
MAX_REPEATS = 41
BUDGET_S = 0.25
CALLS_PER_PAIR = 3   # a pair's time of each form is the least of this many alternating calls


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


def _pairs(before, after, inputs, budget_s: float, min_repeats: int, max_repeats: int, warmup: bool = True,
           a: list | None = None, b: list | None = None, calls: int = CALLS_PER_PAIR) -> tuple[list, list]:
    """The seconds of each call, before / after alternating, appended to a and b."""
    timed = _timer(_on_cuda(inputs))
    a, b = ([] if a is None else a), ([] if b is None else b)
    with torch.no_grad():
        for _ in range(WARMUP if warmup else 0):
            before(*inputs)
            after(*inputs)
        if _on_cuda(inputs):
            torch.cuda.synchronize()
        start, first = time.perf_counter(), len(a)
        while len(a) - first < max_repeats and (len(a) - first < min_repeats or time.perf_counter() - start < budget_s):
            ta, tb = [], []
            for _ in range(calls):
                ta.append(timed(before, inputs))
                tb.append(timed(after, inputs))
            a.append(min(ta))
            b.append(min(tb))
    return a, b


@contextmanager
def one_thread():
    """torch on one CPU thread for the block. On a busy machine each parallel region waits for its
    slowest thread, and the stall depends on how many regions a form has, not on its work (a
    float64 depthwise conv on a check's crop measured 1 ms on one thread, over 1 s on two, with
    both cores busy): the site checks run on one thread, and so do the CPU timings of two forms,
    whose ratio is what a decision needs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


CONFIDENCE = 0.95
EXTEND = 4       # an inconclusive comparison is given up to EXTEND more budgets (and pair counts)
DECISIVE_PAIRS = 10  # fewer pairs decide nothing: a few pairs can share one burst of another process
WIDE = 1.5       # an interval spanning more than this factor (high / low) is too wide to tell a speedup


@dataclass(frozen=True)
class Comparison:
    """Paired timings of two forms: their medians, and the median per-pair speedup
    (before / after) with its CONFIDENCE interval [low, high] over `pairs` pairs."""

    before_s: float
    after_s: float
    speedup: float
    low: float
    high: float
    pairs: int
    samples: tuple = field(default=(), repr=False, compare=False)   # the (before_s, after_s) pairs, when timed here

    @property
    def point(self) -> bool:
        """A bare estimate without pairs (a timing cache entry of the first format)."""
        return self.pairs == 0

    def faster(self, margin: float) -> bool:
        """The second form is `margin` times faster, and faster beyond the noise."""
        if self.point:
            return self.speedup >= margin
        return self.pairs >= DECISIVE_PAIRS and self.speedup >= margin and self.low > 1.0

    def short_of(self, margin: float) -> bool:
        """The second form is not `margin` times faster, beyond the noise (the interval lies below it)."""
        if self.point:
            return self.speedup < margin
        return self.pairs >= DECISIVE_PAIRS and self.high < margin

    def slower(self, margin: float) -> bool:
        """The second form is `margin` times slower, and slower beyond the noise."""
        return self.pairs >= DECISIVE_PAIRS and self.speedup * margin <= 1.0 and self.high < 1.0

    def settled(self, margin: float) -> bool:
        """Enough pairs, and the interval says which way it goes: it excludes 1, or it lies within
        the margin both ways."""
        return self.pairs >= DECISIVE_PAIRS and (
            self.low > 1.0 or self.high < 1.0 or (self.low * margin >= 1.0 and self.high <= margin))

    def describe(self) -> str:
        if not self.pairs:
            return f"{self.speedup:.2f}x"
        return f"{self.speedup:.2f}x ({CONFIDENCE:.0%} CI {self.low:.2f}-{self.high:.2f}, {self.pairs} pairs)"

    def too_wide(self, factor: float = WIDE) -> bool:
        """The interval spans more than `factor` (high / low): the machine was too busy for the
        speedup to mean much, whatever its median says."""
        return self.pairs > 0 and self.high > factor * self.low

    def times_at_median(self) -> tuple[float, float]:
        """(before_s, after_s) of the pair whose ratio is the median (the mean of the two middle
        pairs, per form, for an even count): times that cannot contradict the speedup, since their
        ratio lies between the two middle ratios, which the median lies between too. Each form's
        median over all pairs gives no such bound: under load, another job's bursts can land on
        one form's calls more often, and the demo then printed 31.2 ms against 6.5 ms beside a
        median ratio of 1.31x. Without samples (a cached comparison): the stored medians."""
        if not self.samples:
            return self.before_s, self.after_s
        ranked = sorted(self.samples, key=lambda pair: pair[0] / pair[1])
        n = len(ranked)
        middle = ranked[(n - 1) // 2: n // 2 + 1]
        return (sum(a for a, _ in middle) / len(middle), sum(b for _, b in middle) / len(middle))

    @classmethod
    def from_pairs(cls, before: list, after: list) -> "Comparison":
        """From the seconds of paired calls, before[i] timed beside after[i]."""
        ratios = [x / y for x, y in zip(before, after)]
        low, high = median_interval(ratios)
        return cls(statistics.median(before), statistics.median(after), statistics.median(ratios), low, high,
                   len(ratios), tuple(zip(before, after)))

    def as_list(self) -> list:
        return [self.before_s, self.after_s, self.speedup, self.low, self.high, self.pairs]

    @classmethod
    def from_list(cls, values) -> "Comparison":
        """From as_list(), or from a bare [before_s, after_s] (an interval unknown: 0 pairs)."""
        if len(values) == 2:
            speedup = values[0] / values[1]
            return cls(values[0], values[1], speedup, speedup, speedup, 0)
        return cls(*values[:5], int(values[5]))


def median_interval(values: list, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The distribution-free confidence interval of the median: [v_(k), v_(n+1−k)] of the sorted
    values, k the largest with P(Binomial(n, ½) ≤ k − 1) ≤ (1 − confidence) / 2."""
    v, n = sorted(values), len(values)
    tail, k, below = (1 - confidence) / 2, 0, 0.0
    while k < n and below + math.comb(n, k) / 2 ** n <= tail:
        below += math.comb(n, k) / 2 ** n
        k += 1
    return (v[k - 1], v[n - k]) if k else (v[0], v[-1])


def compare(before, after, inputs, margin: float, *, budget_s: float = BUDGET_S, min_repeats: int = MIN_REPEATS,
            max_repeats: int = MAX_REPEATS, extend: int = EXTEND, calls: int = CALLS_PER_PAIR) -> Comparison:
    """Time before(*inputs) and after(*inputs) in alternation until the comparison is settled
    (see Comparison.settled) or `extend` more budgets are spent; a pair keeps the least of
    `calls` calls of each form."""
    a, b = _pairs(before, after, inputs, budget_s, min_repeats, max_repeats, calls=calls)
    result = _comparison(a, b)
    for _ in range(extend):
        if result.settled(margin):
            break
        _pairs(before, after, inputs, budget_s, min_repeats, max_repeats, warmup=False, a=a, b=b, calls=calls)
        result = _comparison(a, b)
    return result


def _comparison(a: list, b: list) -> Comparison:
    return Comparison.from_pairs(a, b)
