"""On a GPU: the fused kernel is correct against float64 and runs inside a CUDA graph on a few
suite layers at batch 64, fp16. Skipped without CUDA.

No timing is asserted here: throughput is a measurement, not a pass/fail property, and the claim
about it is the campaign (`python -m tests.benchmarks.campaign`) and its committed results under
results/gpu/ (see results/README.md)."""
import copy

import pytest
import torch

from tests.benchmarks.bench_fused_sep_conv import SUITE, TOLERANCE, build

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

BATCH = 64
# memory-bound 112x112, the 1024-channel layer, a small-N projection, the 5x5 layer
LAYERS = [SUITE[i] for i in (0, 5, 6, 11)]


@pytest.mark.parametrize("layer", LAYERS, ids=[layer.name for layer in LAYERS])
def test_fused_is_correct_and_runs_in_a_cuda_graph(layer):
    torch.manual_seed(0)
    seq, fused = build(layer, torch.float16, "cuda", allow_tf32=False)
    x = torch.randn(BATCH, layer.C, layer.H, layer.H, device="cuda", dtype=torch.float16)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = copy.deepcopy(seq).double()(x.double())
        y = fused(x)
        assert torch.isfinite(y).all()
        err = ((y.double() - ref).abs().max() / ref.abs().max()).item()
        assert err <= TOLERANCE["fp16"]
        # captured once and replayed on a fresh input: the same numbers as the eager call
        static_x = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fused(static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_y = fused(static_x)
        fresh = torch.randn_like(x)
        static_x.copy_(fresh)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_y, fused(fresh))
