"""Small FX graph queries and the one graph edit every pass uses."""
from __future__ import annotations

import torch.fx as fx
import torch.nn as nn

INPUT_KEY = "dwsep_input"   # node.meta key: the activation captured at this node's input
SITE_KEY = "dwsep_site"     # node.meta key: the site name in the user's model (kept across rewrites)


def users(node: fx.Node) -> list[fx.Node]:
    return list(node.users)


def sole_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    if node.op != "call_module":
        return None
    return gm.get_submodule(node.target)


def call_counts(gm: fx.GraphModule) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            counts[node.target] = counts.get(node.target, 0) + 1
    return counts


def fresh_name(gm: fx.GraphModule, base: str) -> str:
    """`base`, or `base2`, `base3`... whichever is not a submodule path yet."""
    name, i = base, 1
    while _exists(gm, name):
        i += 1
        name = f"{base}{i}"
    return name


def _exists(gm: fx.GraphModule, path: str) -> bool:
    try:
        gm.get_submodule(path)
        return True
    except AttributeError:
        return False


def role(module: nn.Module) -> str:
    """Name suffix for a new module: dw, pw, conv, or its class name."""
    conv = module[-1] if isinstance(module, nn.Sequential) else module
    if isinstance(conv, nn.Conv2d):
        if conv.groups > 1 and conv.groups == conv.in_channels:
            return "dw"
        return "pw" if conv.kernel_size == (1, 1) else "conv"
    return type(module).__name__.lower()


def replace_chain(gm: fx.GraphModule, chain: list[fx.Node], modules: list[nn.Module],
                  extra_args: tuple = ()) -> list[fx.Node]:
    """Replace the linear run `chain` (each node feeding only the next) by calls to `modules`.

    The first new module takes the chain head's first argument (the last one also takes
    `extra_args`, e.g. a residual); users of the chain's last node are rewired to the last new
    node. New nodes go just before the chain's last node, where every input is defined. A single replacement takes over the head's module path; several are named
    `<head path>_<role>`. Node meta (captured input, site name) carries over from the head.
    """
    head, tail = chain[0], chain[-1]
    base = str(head.target) if head.op == "call_module" else head.name
    new_nodes = []
    with gm.graph.inserting_before(tail):
        arg = head.args[0]
        for i, module in enumerate(modules):
            target = base if len(modules) == 1 else fresh_name(gm, f"{base}_{role(module)}")
            gm.add_submodule(target, module)
            args = (arg,) + (extra_args if i == len(modules) - 1 else ())
            arg = gm.graph.call_module(target, args)
            new_nodes.append(arg)
    for key in (INPUT_KEY, SITE_KEY):
        if key in head.meta:
            new_nodes[0].meta[key] = head.meta[key]
    for node in new_nodes[1:]:
        node.meta[SITE_KEY] = head.meta.get(SITE_KEY)
    tail.replace_all_uses_with(new_nodes[-1])
    for node in reversed(chain):
        gm.graph.erase_node(node)
    return new_nodes


def live_nodes(gm: fx.GraphModule):
    """Snapshot of the graph's nodes that skips those a pass erased while walking it."""
    for node in list(gm.graph.nodes):
        if not node._erased:
            yield node


IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.Dropout3d, nn.AlphaDropout)


def remove_identities(gm: fx.GraphModule) -> int:
    """Bypass nn.Identity and (eval-mode) Dropout calls so they do not split chains."""
    removed = 0
    for node in live_nodes(gm):
        module = module_of(gm, node)
        if isinstance(module, IDENTITY_MODULES) and not module.training and len(node.args) == 1 and not node.kwargs:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            removed += 1
    return removed
