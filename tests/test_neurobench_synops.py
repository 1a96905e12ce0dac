"""The synaptic-operation counts of the torch SNN counters against NeuroBench 2.3's own rule, on a binary network.

NeuroBench's ``SynapticOperations`` metric counts, for every Linear/Conv layer, the layer applied to a binarized copy
of its input and of its weights (bias off): one operation per non-zero input × non-zero synapse. It is applied
here, through its per-layer function ``single_layer_MACs``, to the inputs every Linear layer of the simulated SNN
receives at every step; on the spike-fed layers its totals must equal this project's ``synops`` exactly.
"""
from __future__ import annotations

import pytest
import torch
from model_fixtures import digits_images, spiky_mst

from mst_lava.snn import OpCounter, simulate

layers = pytest.importorskip("neurobench.metrics.utils.layers", reason="neurobench 2.3 is not installed")


def test_synops_equal_neurobench_on_every_spike_fed_layer():
    m = spiky_mst(seed=3)
    x = digits_images(4).double()
    T = 6
    ours = OpCounter(m)
    theirs: dict[str, int] = {}
    hooks = []
    busy = []            # NeuroBench runs a copy of the layer, hooks included: count the outer call only
    for name, mod in m.named_modules():
        if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
            def pre(module, args, name=name):
                if busy:
                    return
                busy.append(name)
                try:
                    ops, _ = layers.single_layer_MACs(args[0].detach(), module)
                finally:
                    busy.pop()
                theirs[name] = theirs.get(name, 0) + int(ops)
            hooks.append(mod.register_forward_pre_hook(pre))
    try:
        simulate(m, x, T, counter=ours, attention="compensated")
    finally:
        for h in hooks:
            h.remove()
    s = ours.summary(T)
    spike_fed = [e for e in s["layers"] if e["input"] == "spikes"]
    assert len(spike_fed) >= 16
    for e in spike_fed:
        assert round(e["synops"] * len(x)) == theirs[e["name"]], e["name"]
    assert sum(e["synops"] for e in spike_fed) > 1e5
