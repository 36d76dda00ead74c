"""Seeded initialisation that makes the zoo's random weights numerically meaningful.

The optimizer folds BatchNorm and checks numerics against the original model, which says little
if every BN is the identity (running mean 0, var 1, gamma 1, beta 0) or every bias is zero. So:

1. convs: Kaiming-normal, fan-out (torchvision's init); linears: N(0, 1/fan_in), variance
   preserving; all biases N(0, 0.1);
2. BatchNorm and LayerNorm affine parameters: gamma ~ U(0.5, 1.5), beta ~ N(0, 0.1);
3. BN running statistics calibrated on random N(0, 1) inputs at the model's *published*
   resolution: only the BN layers in train mode (so dropout and stochastic depth stay off),
   momentum ``None`` (cumulative average over the batches), no grad.

The affine parameters are drawn *before* calibrating, so each BN's running statistics describe
the activations that the network, with its final weights, actually feeds it. Other parameters
(ConvNeXt's layer scale) keep the value their constructor gives them.

Why the published resolution, not a small one: on a small input the last stages' maps are 2x2,
where most taps of a 3x3 / 5x5 depthwise kernel read zero padding, so per-block statistics
underestimate full-resolution variances several-fold and the mismatch compounds through deep
residual stacks (EfficientNetV2-S calibrated at 64x64 gives logits with std ~1e4 at 384x384).
The opposite direction is benign: calibrated at full size, a model run on a smaller input only
has its residual branches shrink, and its logits stay O(1).
"""

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def init_weights(model: nn.Module) -> None:
    """Draw conv / linear / norm parameters from the global RNG (see the module docstring)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (_BatchNorm, nn.LayerNorm)):
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.normal_(m.bias, std=0.1)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                else:
                    nn.init.normal_(m.weight, std=m.in_features ** -0.5)
                if m.bias is not None:
                    nn.init.normal_(m.bias, std=0.1)


def calibrate_batchnorm(
    model: nn.Module, input_size: int, *, batches: int = 1, batch_size: int = 2,
) -> None:
    """Replace every BN's running statistics by their average over ``batches`` random N(0, 1)
    inputs of ``batch_size`` x 3 x ``input_size`` x ``input_size``. Leaves the model in eval mode."""
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not bns:
        return
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    try:
        with torch.no_grad():
            for _ in range(batches):
                model(torch.randn(batch_size, 3, input_size, input_size))
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        model.eval()
