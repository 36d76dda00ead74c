"""The zoo's registry: which models exist, their input resolutions, and seeded construction."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .convnext import ConvNeXt
from .efficientnet import efficientnet_b0, efficientnet_v2_s
from .initialization import calibrate_batchnorm, init_weights
from .mobilenet_v1 import MobileNetV1
from .mobilenet_v2 import MobileNetV2
from .mobilenet_v3 import mobilenet_v3_large, mobilenet_v3_small
from .mobilevit import MobileViT
from .resnet import resnet18, resnet50
from .xception import Xception

SMALL_INPUT_SIZE = 64


@dataclass(frozen=True)
class ModelSpec:
    """What the tests and benchmarks need to know about a zoo model.

    ``input_size`` is the side of the square input the model is published (and BN-calibrated) at;
    ``small_input_size`` a reduced side that every model accepts, for fast CPU tests.
    """

    name: str
    input_size: int
    small_input_size: int
    description: str


_MODELS: tuple[tuple[str, int, Callable[..., nn.Module], str], ...] = (
    ("mobilenet_v1", 224, MobileNetV1,
     "MobileNetV1 1.0 (Howard et al. 2017): 13 depthwise-separable conv blocks"),
    ("mobilenet_v2", 224, MobileNetV2,
     "MobileNetV2 1.0 (Sandler et al. 2018): inverted residuals, linear bottlenecks, ReLU6"),
    ("mobilenet_v3_large", 224, mobilenet_v3_large,
     "MobileNetV3-Large 1.0 (Howard et al. 2019): inverted residuals, hard-swish, squeeze-excite"),
    ("mobilenet_v3_small", 224, mobilenet_v3_small,
     "MobileNetV3-Small 1.0 (Howard et al. 2019): inverted residuals, hard-swish, squeeze-excite"),
    ("efficientnet_b0", 224, efficientnet_b0,
     "EfficientNet-B0 (Tan & Le 2019): MBConv with SiLU and squeeze-excite"),
    ("efficientnet_v2_s", 384, efficientnet_v2_s,
     "EfficientNetV2-S (Tan & Le 2021): Fused-MBConv stages, then MBConv with squeeze-excite"),
    ("xception", 299, Xception,
     "Xception (Chollet 2017): entry/middle/exit flows of separable convs with residual shortcuts"),
    ("convnext_tiny", 224, ConvNeXt,
     "ConvNeXt-T (Liu et al. 2022): dw7x7, LayerNorm, inverted MLP, layer scale"),
    ("resnet18", 224, resnet18, "ResNet-18 (He et al. 2016): BasicBlocks 2-2-2-2"),
    ("resnet50", 224, resnet50, "ResNet-50 v1.5 (He et al. 2016): Bottlenecks 3-4-6-3"),
    ("mobilevit_xs", 256, MobileViT,
     "MobileViT-XS (Mehta & Rastegari 2022): MV2 blocks and conv/transformer MobileViT blocks; "
     "not FX-traceable as a whole"),
)

_ENTRIES: dict[str, tuple[ModelSpec, Callable[..., nn.Module]]] = {
    name: (ModelSpec(name, input_size, SMALL_INPUT_SIZE, description), builder)
    for name, input_size, builder, description in _MODELS
}


def names() -> list[str]:
    """Names of all zoo models, in registry order."""
    return list(_ENTRIES)


def _entry(name: str) -> tuple[ModelSpec, Callable[..., nn.Module]]:
    try:
        return _ENTRIES[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; valid names: {', '.join(_ENTRIES)}") from None


def spec(name: str) -> ModelSpec:
    """The ``ModelSpec`` of ``name``; ``KeyError`` listing the valid names if unknown."""
    return _entry(name)[0]


def get(name: str, *, seed: int = 0, num_classes: int = 1000) -> nn.Module:
    """Build ``name`` with seeded, BN-calibrated weights (see ``initialization``), in eval mode.

    The same ``seed`` gives bit-identical weights; the global RNG state is left untouched.
    """
    model_spec, builder = _entry(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = builder(num_classes=num_classes)
        init_weights(model)
        calibrate_batchnorm(model, model_spec.input_size)
    return model.eval()


def example_input(name: str, *, batch: int = 1, small: bool = True, seed: int = 0) -> torch.Tensor:
    """A seeded float32 N(0, 1) NCHW input for ``name``, at its small or published resolution."""
    model_spec = spec(name)
    size = model_spec.small_input_size if small else model_spec.input_size
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator)
