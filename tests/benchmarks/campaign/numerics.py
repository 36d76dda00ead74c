"""The Triton kernels on the GPU against float64, over the option grid of the kernels' tests.

The interpreter tests (tests/kernels) check the same grid on CPU; here the compiled kernels run
it: every grid case (dtype x k x stride, mixed activations, bias, residual, layouts, padding, odd
sizes) at two tiles of the table (kernels.sep_conv.tiles.TABLE, taken in turn so that every tile
runs several cases; unrolled only where the tuner would offer it), every activation in both
positions at a rolled and an unrolled tile, the default launch (the table's tile by regime), the
squeeze-excitation gate and the three-launch squeeze-excitation block (kernels/sep_conv/sep_conv_se.py). Outputs are poisoned with NaN first: an unwritten element fails.
"""
import itertools
from concurrent.futures import ThreadPoolExecutor

import torch

from kernels.activations import ACTIVATIONS
from kernels.sep_conv.reference import sep_conv_reference, sep_conv_se_reference
from kernels.sep_conv.tiles import SMEM_BUDGET, TABLE, Tile
from tests.benchmarks.campaign.budget import Budget, error_text
from tests.kernels.helpers import TOL, operands, poisoned_out, reference64, rel_err

ACTIVATION_TILES = [t for t in TABLE if (t.block_m, t.block_n) == (64, 64)]  # rolled and unrolled
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def grid_cases():
    """(name, operands kwargs, output NHWC?) of the option grid (as tests/kernels builds it)."""
    for i, (dtype, k, stride) in enumerate(itertools.product(DTYPES, (3, 5, 7), (1, 2))):
        case = dict(dtype=dtype, k=k, stride=stride, r=1 + i % 2, act1=ACTIVATIONS[i % 6],
                    act2=ACTIVATIONS[(5 * i + 1) % 6], bias=i % 3 != 2, residual=(i // 2) % 2 == 0,
                    channels_last=i % 4 != 1, padding=(k // 2, k // 2, k // 2, k // 2 + 1, k // 2, 0)[i % 6],
                    B=2 + i % 2, C=(5, 6, 9, 40)[i % 4], H=(9, 11, 7)[i % 3], W=(7, 9, 13)[i % 3],
                    N=(40, 24, 10, 72)[i % 4])
        yield f"{str(dtype)[6:]}-k{k}-s{stride}-i{i}", case, i % 3 != 1


def _on(device, a: dict) -> dict:
    return {n: v.to(device) if isinstance(v, torch.Tensor) else v for n, v in a.items()}


def _check(fsc, a, out_nhwc, config, dtype, gate=None) -> dict:
    ref = reference64(a) if gate is None else sep_conv_reference(
        *(None if t is None else t.double() for t in (a["x"], a["dw_w"], a["dw_b"], a["pw_w"], a["pw_b"])),
        a["stride"], a["padding"], a["act1"], a["act2"],
        None if a["residual"] is None else a["residual"].double(), gate.double())
    g = _on("cuda", a)
    out = poisoned_out(a, channels_last=out_nhwc).to("cuda")
    y = fsc.fused_sep_conv(**g, out=out, config=config, gate=None if gate is None else gate.cuda())
    torch.cuda.synchronize()
    err = rel_err(y.cpu(), ref)
    return dict(error=err, tolerance=TOL[dtype], passed=err <= TOL[dtype])


def _fits(tile: Tile, k: int, r: int, dtype: torch.dtype) -> bool:
    """Whether the tuner would offer this tile (unrolled taps need shared memory, no multiplier)."""
    return not tile.unroll_taps or (r == 1 and tile.tap_buffer_bytes(k * k, dtype.itemsize) <= SMEM_BUDGET)


def _jobs():
    """(name, make) pairs; make() -> (operands, out NHWC?, tile config or None (the default), dtype, gate)."""
    for i, (name, case, out_nhwc) in enumerate(grid_cases()):
        for tile in (TABLE[i % len(TABLE)], TABLE[(i + 4) % len(TABLE)]):
            if _fits(tile, case["k"], case["r"], case["dtype"]):
                yield (f"grid/{name}/{tile}",
                       lambda c=case, o=out_nhwc, t=tile.config(): (operands(**c), o, t, c["dtype"], None))
    for act, tile in itertools.product(ACTIVATIONS, ACTIVATION_TILES):
        def wide(act=act, tile=tile):
            a = operands(B=1, C=4, H=5, W=6, N=20, act1=act, act2=act)
            a["x"] = a["x"] * 4  # every branch of the activations
            return a, True, tile.config(), torch.float32, None
        yield f"activation/{act}/{tile}", wide
    for d in DTYPES:
        yield f"default-tile/{str(d)[6:]}", lambda d=d: (
            operands(B=4, C=96, H=30, W=30, k=5, stride=2, N=48, dtype=d, act1="silu", residual=False),
            True, None, d, None)
        yield f"se-gate/{str(d)[6:]}", lambda d=d: (
            operands(B=3, C=6, r=2, N=24, dtype=d, act1="silu", act2="relu", residual=True), True, None, d,
            torch.rand(3, 12) + 0.1)


def _squeeze_excitation(se, dtype) -> dict:
    """kernels/sep_conv/sep_conv_se.py's three launches (dw stage with channel sums over several tiles per
    image, excitation MLP, gated GEMM with relu6 after the gate) against float64."""
    a = operands(B=3, C=40, r=2, H=33, W=31, k=5, stride=2, N=72, dtype=dtype, act1="hardswish", act2="relu",
                 residual=True)
    w = [torch.randn(10, 80) / 9, torch.randn(10) * 0.1, torch.randn(80, 10) / 3, torch.randn(80) * 0.1 + 1]
    w1, c1, w2, c2 = (t.to(dtype).cuda() for t in w)
    y = se.sep_conv_se(**_on("cuda", a), w1=w1, c1=c1, w2=w2, c2=c2, se_act="silu", se_gate="hardsigmoid",
                       act_after_gate="relu6").cpu()
    d = lambda t: None if t is None else t.double()  # noqa: E731
    ref = sep_conv_se_reference(*(d(a[n]) for n in ("x", "dw_w", "dw_b", "pw_w", "pw_b")),
                                *(t.to(dtype).double() for t in w), 2, a["padding"], "hardswish", "relu", "silu",
                                "hardsigmoid", "relu6", d(a["residual"]))
    err = rel_err(y, ref)
    return dict(error=err, tolerance=TOL[dtype], passed=err <= TOL[dtype])


def run(budget: Budget, threads: int = 8) -> dict:
    """{cases: [...], passed, failed, skipped}; a case that raises is a failure with its error.
    Cases run in threads: each is its own compile (~1-3 s), and compiles overlap."""
    import kernels.sep_conv.fused_sep_conv as fsc
    import kernels.sep_conv.sep_conv_se as se

    torch.manual_seed(0)
    jobs = [(n, lambda m=m: _check(fsc, *m())) for n, m in _jobs()]
    jobs += [(f"squeeze-excitation/{str(d)[6:]}", lambda d=d: _squeeze_excitation(se, d)) for d in DTYPES]

    def one(job):
        name, check = job
        if budget.spent():
            return dict(case=name, skipped="time budget")
        try:
            return dict(case=name, **check())
        except Exception as exc:  # noqa: BLE001 - a kernel that fails to build or run is a failed case
            return dict(case=name, passed=False, error=float("inf"), exception=error_text(exc))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        cases = list(pool.map(one, jobs))
    return dict(cases=cases, passed=sum(c.get("passed") is True for c in cases),
                failed=sum(c.get("passed") is False for c in cases), skipped=sum("skipped" in c for c in cases))
