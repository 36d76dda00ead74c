"""Reference implementations from torchvision and timm, built with the zoo's seeded random init.

These are the libraries' own modules (not the zoo's re-implementations), so the optimizer meets
the module types, paddings and layer orders users actually run: timm's ``BatchNormAct2d``,
``Conv2dSame`` and ``MixedConv2d``, MobileNetV4's attention blocks, GhostNet's ghost modules.
No pretrained weights are ever loaded; ``build_real`` draws weights with ``init_weights`` and
calibrates BatchNorm with ``calibrate_batchnorm`` (see ``initialization``).

torchvision and timm are optional: they are imported only when a model of theirs is built.

Smallest input side each model runs at: 32 for the ConvNeXts (4x4 patchify stem, then three
2x2 downsamplings), 7 for legacy Xception (two unpadded 3x3 stem convs), 1 for all others (every
conv is padded, the head pools adaptively). ``real_example_input``'s default, 64, suits all.
"""

import functools
import importlib
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from .initialization import calibrate_batchnorm, init_weights
from .registry import SMALL_INPUT_SIZE


class RealModel(NamedTuple):
    """Where a real model comes from: its library, constructor, published input side and what
    it is."""

    source: str
    constructor: str
    input_size: int
    description: str


REAL_MODELS: dict[str, RealModel] = {
    "tv/mobilenet_v2": RealModel(
        "torchvision", "mobilenet_v2", 224, "MobileNetV2 1.0: inverted residuals, ReLU6"),
    "tv/mobilenet_v3_large": RealModel(
        "torchvision", "mobilenet_v3_large", 224,
        "MobileNetV3-Large 1.0: inverted residuals, hard-swish, squeeze-excite"),
    "tv/efficientnet_b0": RealModel(
        "torchvision", "efficientnet_b0", 224, "EfficientNet-B0: MBConv, SiLU, squeeze-excite"),
    "tv/efficientnet_v2_s": RealModel(
        "torchvision", "efficientnet_v2_s", 384,
        "EfficientNetV2-S: Fused-MBConv stages, then MBConv with squeeze-excite"),
    "tv/mnasnet1_0": RealModel(
        "torchvision", "mnasnet1_0", 224,
        "MnasNet-B1 1.0: NAS-found inverted residuals, 3x3 / 5x5 depthwise, no squeeze-excite"),
    "tv/convnext_tiny": RealModel(
        "torchvision", "convnext_tiny", 224,
        "ConvNeXt-T: dw7x7, LayerNorm, inverted MLP, layer scale; no BatchNorm"),
    "tv/shufflenet_v2_x1_0": RealModel(
        "torchvision", "shufflenet_v2_x1_0", 224,
        "ShuffleNetV2 1.0x: channel split and shuffle around 3x3 depthwise convs"),
    "tv/resnet18": RealModel(
        "torchvision", "resnet18", 224, "ResNet-18: dense 3x3 convs only, no depthwise (control)"),
    "timm/efficientnet_lite0": RealModel(
        "timm", "efficientnet_lite0", 224,
        "EfficientNet-Lite0: MBConv with ReLU6, no squeeze-excite"),
    "timm/mobilenetv3_large_100": RealModel(
        "timm", "mobilenetv3_large_100", 224,
        "MobileNetV3-Large 1.0, timm's build: BatchNormAct2d, hard-swish, squeeze-excite"),
    "timm/mobilenetv4_conv_small": RealModel(
        "timm", "mobilenetv4_conv_small", 224,
        "MobileNetV4-Conv-S: universal inverted bottlenecks (optional extra depthwise convs)"),
    "timm/mobilenetv4_hybrid_medium": RealModel(
        "timm", "mobilenetv4_hybrid_medium", 256,
        "MobileNetV4-Hybrid-M: universal inverted bottlenecks and Mobile-MQA attention blocks"),
    "timm/mixnet_s": RealModel(
        "timm", "mixnet_s", 224, "MixNet-S: mixed-kernel depthwise convs (3x3 to 9x9 groups)"),
    "timm/fbnetc_100": RealModel(
        "timm", "fbnetc_100", 224, "FBNet-C 1.0: DNAS-found inverted residuals, ReLU"),
    "timm/lcnet_100": RealModel(
        "timm", "lcnet_100", 224,
        "PP-LCNet 1.0: depthwise-separable blocks, hard-swish, squeeze-excite in the last ones"),
    "timm/tf_efficientnetv2_b0": RealModel(
        "timm", "tf_efficientnetv2_b0", 192,
        "EfficientNetV2-B0, TensorFlow port: TF 'same' padding (Conv2dSame) on strided convs"),
    "timm/legacy_xception": RealModel(
        "timm", "legacy_xception", 299,
        "Xception, timm's legacy port: separable convs with residual shortcuts"),
    "timm/ghostnet_100": RealModel(
        "timm", "ghostnet_100", 224,
        "GhostNet 1.0: ghost modules (pointwise conv plus cheap depthwise features)"),
    "timm/convnext_atto": RealModel(
        "timm", "convnext_atto", 224, "ConvNeXt-Atto: smallest timm ConvNeXt; no BatchNorm"),
}


# Trained with parallel linear branches that sum to one conv at inference (structural
# reparameterization); timm ships reparameterize_model() for them, the ideal to compare against.
REPARAM_MODELS: dict[str, RealModel] = {
    "timm/mobileone_s0": RealModel(
        "timm", "mobileone_s0", 224, "MobileOne-S0: k dw/pw conv+BN branches, a 1x1 scale branch and a BN identity"),
    "timm/repvgg_a0": RealModel(
        "timm", "repvgg_a0", 224, "RepVGG-A0: 3x3+BN, 1x1+BN and BN identity branches, dense"),
    "timm/repvit_m1": RealModel(
        "timm", "repvit_m1", 224, "RepViT-M1: depthwise RepVGG token mixers inside MobileNetV3-style blocks"),
    "timm/fastvit_t8": RealModel(
        "timm", "fastvit_t8", 224, "FastViT-T8: RepMixer x + γ(BN(dw(x)) − BN(x)), MobileOne stem, RepCPE"),
    "timm/repghostnet_100": RealModel(
        "timm", "repghostnet_100", 224, "RepGhostNet 1.0: dw conv+BN plus a BN 'fusion' branch inside ghost modules"),
}


def real_names() -> list[str]:
    """Keys of ``REAL_MODELS``, torchvision's (``tv/...``) then timm's (``timm/...``)."""
    return list(REAL_MODELS)


def reparam_names() -> list[str]:
    """Keys of ``REPARAM_MODELS`` (built by ``build_real`` too)."""
    return list(REPARAM_MODELS)


def _entry(name: str) -> RealModel:
    try:
        return REAL_MODELS[name] if name in REAL_MODELS else REPARAM_MODELS[name]
    except KeyError:
        raise KeyError(f"unknown real model {name!r}; valid names: "
                       f"{', '.join(list(REAL_MODELS) + list(REPARAM_MODELS))}") from None


def _constructor(entry: RealModel) -> Callable[..., nn.Module]:
    """``entry``'s builder, taking ``num_classes``; imports its library, never loads weights."""
    try:
        library = importlib.import_module(entry.source)
    except ImportError as error:
        raise ImportError(
            f"{entry.constructor} comes from {entry.source}, which is not installed: "
            f"pip install {entry.source} (or the project's [test] extra)") from error
    if entry.source == "timm":
        return functools.partial(library.create_model, entry.constructor, pretrained=False)
    return functools.partial(getattr(library.models, entry.constructor), weights=None)


def build_real(
    name: str, *, seed: int = 0, num_classes: int = 1000, calibrate_size: int | None = None,
) -> nn.Module:
    """Build real model ``name`` with seeded random weights and calibrated BN, in eval mode.

    The same ``seed`` gives bit-identical weights; the global RNG state is left untouched.
    BatchNorm is calibrated on one random batch of 2 at ``calibrate_size``, by default the
    model's published input size. That is cheap: measured on a 2-core CPU, a whole build takes
    0.2-1 s single-threaded, at most ~2.5 s (legacy Xception at 299, EfficientNetV2-S at 384),
    and under ~5 s with two threads on a busy machine. A smaller size is not worth the saving,
    because it skews the statistics (see ``initialization``): calibrated at 160,
    EfficientNetV2-S gives logits with std ~20 at 384 instead of ~0.3, and MixNet-S ~2.7 at 224
    instead of ~0.6.
    """
    entry = _entry(name)
    constructor = _constructor(entry)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = constructor(num_classes=num_classes)
        init_weights(model)
        calibrate_batchnorm(model, entry.input_size if calibrate_size is None else calibrate_size)
    return model.eval()


def real_example_input(
    name: str, *, batch: int = 1, size: int | None = None, seed: int = 0,
) -> torch.Tensor:
    """A seeded float32 N(0, 1) NCHW input for ``name``, of side ``size`` (default 64, which every
    real model accepts; the module docstring gives each one's minimum)."""
    _entry(name)
    generator = torch.Generator().manual_seed(seed)
    side = SMALL_INPUT_SIZE if size is None else size
    return torch.randn(batch, 3, side, side, generator=generator)
