"""The kernels' tests run the real Triton kernel on CPU tensors, in Triton's interpreter.

triton.jit decides at decoration time whether a kernel is interpreted, so the kernel modules
(KERNEL_MODULES) are (re)imported while TRITON_INTERPRET=1. The variable is set only while this directory's tests
run: tests elsewhere keep FusedSepConv2d's fast torch fallback on CPU, and the compiled kernel on
a GPU (the module is re-imported in its previous mode afterwards). Triton itself is imported
first, in normal mode, so other Triton users in the session are unaffected; the kernel file calls
only builtins of triton.language, which the interpreter patches in either mode. Test modules
here reach the launchers through the ``fsc`` / ``se`` fixtures, never by a module-level import.
"""
import importlib
import os

import pytest
import torch


KERNEL_MODULES = ("kernels.tiles", "kernels.sep_conv.fused_sep_conv", "kernels.sep_conv.sep_conv_se",  # in import order
                  "kernels.block.inverted_residual", "kernels.block.fused_mbconv")


def _reload_kernels():
    for name in KERNEL_MODULES:
        importlib.reload(importlib.import_module(name))


@pytest.fixture(scope="package", autouse=True)
def _triton_interpreter():
    pytest.importorskip("triton")
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    was_interpreted = importlib.import_module("kernels.sep_conv.fused_sep_conv")._INTERPRETED
    if not was_interpreted:
        _reload_kernels()
    yield
    if saved is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = saved
    if not was_interpreted:
        _reload_kernels()


@pytest.fixture
def fsc():
    """The kernel module, imported under the interpreter."""
    return importlib.import_module("kernels.sep_conv.fused_sep_conv")


@pytest.fixture
def se():
    """The squeeze-excitation kernels' module, imported under the interpreter."""
    return importlib.import_module("kernels.sep_conv.sep_conv_se")


@pytest.fixture
def ir():
    """The whole-block kernels' module (kernels/block/inverted_residual.py), imported under the interpreter."""
    return importlib.import_module("kernels.block.inverted_residual")


@pytest.fixture
def mb():
    """The Fused-MBConv kernel's module (kernels/block/fused_mbconv.py), imported under the interpreter."""
    return importlib.import_module("kernels.block.fused_mbconv")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
