"""FusedSepConv2d: depthwise conv -> act1 -> 1x1 conv -> act2 (+ residual) as one module, and
FusedSepConvSE2d, the same with a squeeze-excitation (and optionally an activation after its
gate) between the two convs. The depthwise kernel is any kh x kw, 1 <= kh, kw <= 7, with zero
padding (ph, pw) per axis and one stride (1 or 2) for both.

The graph passes build it from the two convs of a chain (BatchNorm already folded into them) and
the activation names; on CUDA its forward is one launch of the fused Triton kernel (through the
``dwsep::fused_sep_conv`` custom op, so torch.compile / torch.export see a single op), on CPU it
computes the unfused chain's maths with the same numbers (differentiable torch ops; under
TRITON_INTERPRET=1 the custom op, i.e. the Triton kernel in the interpreter, instead).
"""
from typing import Optional

import torch
from torch import nn

import kernels.sep_conv.ops  # noqa: F401  (registers torch.ops.dwsep.fused_sep_conv and sep_conv_se)
from kernels.checks import DTYPES, MAX_KERNEL, STRIDES, padding_pair
from kernels.parameters import SqueezeExciteParameters, _is_tap_major, _param, _tap_major, check_flag
from kernels.sep_conv.checks import check_sep_conv_args
from kernels.sep_conv.reference import excitation_reference, sep_conv_reference, sep_conv_se_reference


class FusedSepConv2d(nn.Module):
    """y = act2(pw(act1(dw(x) + dw_bias)) + pw_bias) [+ residual].

    dw_weight [C*r, 1, kh, kw] (1 <= kh, kw <= 7; C is read from the input, as groups=C in
    F.conv2d), pw_weight [N, C*r] or [N, C*r, 1, 1], biases optional; padding p or (ph, pw). They
    are stored as parameters (requires_grad=False: the fused op is inference-only); dw_weight keeps
    its shape but is laid out tap-major (strides (1, kh*kw*K, kw*K, K)) so that the kernel reads each tap's
    weights as one vector; .to() (memory_format included), state_dict and load_state_dict
    preserve that layout.
    pw_weight is kept as a [N, C*r] view of the tensor given (no copy).
    ``allow_tf32`` lets fp32 inputs use tf32 for the 1x1 part on the GPU.
    """

    def __init__(self, dw_weight: torch.Tensor, dw_bias: Optional[torch.Tensor], pw_weight: torch.Tensor,
                 pw_bias: Optional[torch.Tensor], *, stride: int, padding,
                 act1: str = "none", act2: str = "none", allow_tf32: bool = False):
        super().__init__()
        if not isinstance(dw_weight, torch.Tensor) or dw_weight.dim() != 4:
            raise ValueError("dw_weight must be a [C*r, 1, kh, kw] tensor")
        check_flag(allow_tf32)
        K, kh, kw = dw_weight.shape[0], dw_weight.shape[-2], dw_weight.shape[-1]
        probe = dw_weight.new_empty((1, K, kh, kw))  # any input with C | K channels will do
        check_sep_conv_args(probe, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, act1, act2,
                            dtypes=DTYPES + (torch.float64,))
        padding = padding_pair(padding)
        self.dw_weight = _param(_tap_major(dw_weight))
        self.dw_bias = _param(dw_bias)
        self.pw_weight = _param(pw_weight.reshape(pw_weight.shape[0], K))
        self.pw_bias = _param(pw_bias)
        self.stride, self.padding, self.act1, self.act2, self.allow_tf32 = stride, padding, act1, act2, allow_tf32

    @classmethod
    def from_convs(cls, dw: nn.Conv2d, pw: nn.Conv2d, *, act1: str = "none", act2: str = "none",
                   allow_tf32: bool = False) -> "FusedSepConv2d":
        """Fuse ``pw(act?(dw(x)))`` convs; ValueError with the reason when they do not fit the kernel."""
        for name, conv in (("dw", dw), ("pw", pw)):
            if not isinstance(conv, nn.Conv2d):
                raise ValueError(f"{name} must be an nn.Conv2d, got {type(conv).__name__}")
        kh, kw = dw.kernel_size
        if dw.groups != dw.in_channels or dw.out_channels % dw.in_channels:
            raise ValueError(f"dw is not depthwise: groups={dw.groups}, in={dw.in_channels}, out={dw.out_channels}")
        if not (1 <= kh <= MAX_KERNEL and 1 <= kw <= MAX_KERNEL):
            raise ValueError(f"dw kernel {tuple(dw.kernel_size)} is not within 1..{MAX_KERNEL} on both axes")
        if dw.stride[0] != dw.stride[1] or dw.stride[0] not in STRIDES:
            raise ValueError(f"dw stride {tuple(dw.stride)} is not one of {STRIDES} on both axes")
        if tuple(dw.dilation) != (1, 1):
            raise ValueError(f"dw dilation {tuple(dw.dilation)} is not 1")
        if dw.padding_mode != "zeros":
            raise ValueError(f"dw padding_mode {dw.padding_mode!r} is not 'zeros'")
        if dw.padding == "same" and not (kh % 2 and kw % 2):
            raise ValueError(f"dw padding 'same' with the even kernel {(kh, kw)} pads one side more")
        pad = {"valid": (0, 0), "same": (kh // 2, kw // 2)}.get(dw.padding, dw.padding)  # 'same': stride 1
        if tuple(pw.kernel_size) != (1, 1) or tuple(pw.stride) != (1, 1) or pw.groups != 1:
            raise ValueError(f"pw is not a 1x1 stride-1 dense conv: kernel={tuple(pw.kernel_size)}, "
                             f"stride={tuple(pw.stride)}, groups={pw.groups}")
        if pw.padding not in ("valid", (0, 0)):
            raise ValueError(f"pw padding {pw.padding} is not 0")
        if pw.in_channels != dw.out_channels:
            raise ValueError(f"pw takes {pw.in_channels} channels but dw makes {dw.out_channels}")
        return cls(dw.weight, dw.bias, pw.weight, pw.bias, stride=dw.stride[0], padding=tuple(pad),
                   act1=act1, act2=act2, allow_tf32=allow_tf32)

    def _apply(self, fn, recurse=True):
        # model.to(memory_format=torch.channels_last) would re-stride dw_weight; restore tap-major
        super()._apply(fn, recurse)
        if not _is_tap_major(self.dw_weight):
            self.dw_weight.data = _tap_major(self.dw_weight.data)
        return self

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        weights = (x, self.dw_weight, self.dw_bias, self.pw_weight, self.pw_bias, self.stride)
        acts = (self.act1, self.act2, residual)
        # Always through the op for the kernel's dtypes, so torch.export / torch.compile keep one
        # fused node whatever device the model is traced on; the op itself picks Triton (CUDA,
        # interpreter) or the torch reference (CPU).
        if x.dtype in DTYPES:
            return torch.ops.dwsep.fused_sep_conv(*weights, list(self.padding), *acts, self.allow_tf32)
        return sep_conv_reference(*weights, self.padding, *acts)

    def extra_repr(self) -> str:
        K, N, k = self.dw_weight.shape[0], self.pw_weight.shape[0], tuple(self.dw_weight.shape[2:])
        return (f"{K}, {N}, kernel_size={k}, stride={self.stride}, padding={self.padding}, act1={self.act1}, "
                f"act2={self.act2}, dw_bias={self.dw_bias is not None}, pw_bias={self.pw_bias is not None}, "
                f"allow_tf32={self.allow_tf32}")


class FusedSepConvSE2d(SqueezeExciteParameters, FusedSepConv2d):
    """y = act2(pw(act_after_gate(a * s)) + pw_bias) [+ residual], a = act1(dw(x) + dw_bias), with
    the squeeze-excitation gate s[b, j] = gate(W2 act(W1 mean_hw(a[b]) + c1) + c2)[j].

    One custom op, ``dwsep::sep_conv_se`` (kernels/sep_conv/sep_conv_se.py): three launches on CUDA, the
    depthwise conv computed once (its output and channel sums, the excitation MLP, the gated 1x1
    GEMM). se_reduce_weight [S, C*r] (or [S, C*r, 1, 1]),
    se_expand_weight [C*r, S] (or 4-d), their biases [S] / [C*r]; se_act an activation name of
    kernels.activations, se_gate "sigmoid" or "hardsigmoid"; act_after_gate an activation name
    applied to the gated a (ReXNet's ReLU6 after its squeeze-excitation), "none" by default.
    """

    def __init__(self, dw_weight, dw_bias, pw_weight, pw_bias, se_reduce_weight, se_reduce_bias,
                 se_expand_weight, se_expand_bias, *, se_act: str = "relu", se_gate: str = "sigmoid",
                 stride: int, padding, act1: str = "none", act2: str = "none", allow_tf32: bool = False,
                 act_after_gate: str = "none"):
        super().__init__(dw_weight, dw_bias, pw_weight, pw_bias, stride=stride, padding=padding, act1=act1,
                         act2=act2, allow_tf32=allow_tf32)
        self._init_se(se_reduce_weight, se_reduce_bias, se_expand_weight, se_expand_bias, dw_weight.shape[0],
                      se_act, se_gate, act_after_gate)

    def gate(self, means: torch.Tensor) -> torch.Tensor:
        """The excitation MLP on channel means [B, C*r], in the means' dtype (fp32, or fp64)."""
        return excitation_reference(means, *self.se_weights(), self.se_act, self.se_gate)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        args = (x, self.dw_weight, self.dw_bias, self.pw_weight, self.pw_bias, *self.se_weights(), self.stride)
        acts = (self.act1, self.act2, self.se_act, self.se_gate, self.act_after_gate)
        if x.dtype not in DTYPES:  # float64 (references): plain torch throughout
            return sep_conv_se_reference(*args, self.padding, *acts, residual)
        return torch.ops.dwsep.sep_conv_se(*args, list(self.padding), *acts, residual, self.allow_tf32)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, se={self.se_reduce_weight.shape[0]}, se_act={self.se_act}, "
                f"se_gate={self.se_gate}, act_after_gate={self.act_after_gate}")
