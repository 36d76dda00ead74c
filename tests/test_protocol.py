"""Both front ends implement the pass manager's Adapter protocol (passes/protocol.py), and the
driver's Front protocol (rewrite/entry/driver.py) is what both entry points hand it."""
import inspect

import pytest

from passes.protocol import Adapter
from rewrite.entry.driver import Front


def _members(protocol) -> set[str]:
    return {name for name in dir(protocol) if not name.startswith("_")} | set(protocol.__annotations__)


def _front_ends():
    from passes.fx.adapter import FxAdapter
    yield FxAdapter
    pytest.importorskip("onnx_graphsurgeon")
    from passes.onnx.adapter import OnnxAdapter
    yield OnnxAdapter


@pytest.mark.parametrize("name", ["fx", "onnx"])
def test_each_adapter_declares_every_member_of_the_protocol(name):
    adapters = list(_front_ends())
    adapter = adapters[0] if name == "fx" else adapters[-1]
    missing = sorted(m for m in _members(Adapter) if not hasattr(adapter, m))
    assert missing == [], f"{adapter.__name__} lacks {missing}"
    for member in _members(Adapter) - set(Adapter.__annotations__):
        theirs, ours = getattr(adapter, member), getattr(Adapter, member)
        if callable(ours) and not isinstance(ours, property):
            assert list(inspect.signature(theirs).parameters)[:len(inspect.signature(ours).parameters)] == \
                list(inspect.signature(ours).parameters), f"{adapter.__name__}.{member}"


def test_both_entry_points_give_the_driver_a_whole_front():
    from rewrite.entry.api import _TorchFront
    fronts = [_TorchFront]
    if pytest.importorskip("onnx_graphsurgeon"):
        from rewrite.entry.onnx_api import _OnnxFront
        fronts.append(_OnnxFront)
    for front in fronts:
        assert sorted(m for m in _members(Front) if not hasattr(front, m)) == [], front.__name__
