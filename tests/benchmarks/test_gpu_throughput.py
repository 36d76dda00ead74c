"""On a GPU: the fused kernel is correct and not slower than eager channels_last (cuDNN) on a few
suite layers at batch 64, fp16. Skipped without CUDA; no timing is ever asserted on CPU."""
import copy

import pytest
import torch

from tests.benchmarks.bench_fused_sep_conv import SUITE, TOLERANCE, build, cuda_graph_time, layer_bytes, rotation

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

BATCH = 64
NOISE = 1.03  # timing noise allowed on top of "not slower"
# memory-bound 112x112, the 1024-channel layer (where a naive fusion loses 4x), a small-N
# projection, the 5x5 layer
LAYERS = [SUITE[i] for i in (0, 5, 6, 11)]


@pytest.mark.parametrize("layer", LAYERS, ids=[layer.name for layer in LAYERS])
def test_fused_is_correct_and_not_slower_than_eager_channels_last(layer):
    torch.manual_seed(0)
    seq, fused = build(layer, torch.float16, "cuda", allow_tf32=False)
    eager_cl = copy.deepcopy(seq).to(memory_format=torch.channels_last)
    x = torch.randn(BATCH, layer.C, layer.H, layer.H, device="cuda", dtype=torch.float16)
    copies = rotation(layer_bytes(layer, BATCH, 2), torch.cuda.get_device_properties(0).L2_cache_size)
    inputs = [x] + [torch.randn_like(x) for _ in range(copies - 1)]
    inputs = [t.contiguous(memory_format=torch.channels_last) for t in inputs]
    with torch.no_grad():
        ref = copy.deepcopy(seq).double()(x.double())
        y = fused(inputs[0])
        assert torch.isfinite(y).all()
        err = ((y.double() - ref).abs().max() / ref.abs().max()).item()
        assert err <= TOLERANCE["fp16"]
        t_fused = cuda_graph_time(fused, inputs, replays=30, warmup=3)
        t_eager = cuda_graph_time(eager_cl, inputs, replays=30, warmup=3)
    assert t_fused <= NOISE * t_eager, f"fused {t_fused * 1e6:.1f} us vs eager channels_last {t_eager * 1e6:.1f} us"
