"""QCFS ResNet-18 and VGG-16: shapes, sites, configs, checkpoints, and exact SNN conversion."""
from __future__ import annotations

import pytest
import torch

from mst_lava.checkpoint import load_checkpoint, save_checkpoint
from mst_lava.errors import MSTError
from mst_lava.model import ARCHS, build_model_from_config
from mst_lava.model.baselines import BaselineConfig, build_baseline
from mst_lava.model.qcfs import iter_sites
from mst_lava.snn import OpCounter, simulate, simulate_reference


@pytest.mark.parametrize("arch,n_sites", [("resnet18", 17), ("vgg16", 13)])
@pytest.mark.parametrize("size,chans", [(28, 1), (32, 3), (8, 1)])
def test_shapes_and_sites(arch, n_sites, size, chans):
    m = build_baseline(arch, img_size=size, in_chans=chans, width=8, hidden=0).eval()
    with torch.no_grad():
        assert m(torch.randn(2, chans, size, size)).shape == (2, 10)
    sites = [(s.site, s.block) for _, s in iter_sites(m)]
    assert len(sites) == n_sites and len(set(sites)) == n_sites       # unique RSM keys
    assert all(s == "act" for s, _ in sites) and [b for _, b in sites] == list(range(n_sites))


def test_vgg_hidden_layers_and_full_width():
    m = build_baseline("vgg16", preset="cifar", width=16, hidden=32)
    assert [s.block for _, s in iter_sites(m)] == list(range(15))
    assert sum(isinstance(x, torch.nn.Conv2d) for x in m.modules()) == 13
    assert sum(isinstance(x, torch.nn.Linear) for x in m.modules()) == 3
    r = build_baseline("resnet18", preset="cifar")
    assert 11.0e6 < sum(p.numel() for p in r.parameters()) < 11.3e6         # the usual CIFAR ResNet-18


def test_config_roundtrip_and_checkpoint(tmp_path):
    assert {"resnet18", "vgg16"} <= set(ARCHS)
    m = build_baseline("resnet18", preset="fmnist", width=4)
    d = m.cfg.to_dict()
    assert BaselineConfig.from_dict(d) == m.cfg
    save_checkpoint(tmp_path / "r.pt", m, arch="resnet18", dataset="fmnist", mask={"act": 0.5})
    m2, ck = load_checkpoint(tmp_path / "r.pt")
    assert ck["arch"] == "resnet18" and type(m2) is type(m)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(m.eval()(x), m2(x))
    v = build_model_from_config("vgg16", build_baseline("vgg16", preset="digits", width=8).cfg.to_dict())
    assert v.cfg.arch == "vgg16"
    with pytest.raises(MSTError, match="unknown keys"):
        BaselineConfig.from_dict({"arch": "resnet18", "depth": 3})
    with pytest.raises(MSTError, match="arch"):
        build_baseline("resnet50")
    with pytest.raises(MSTError, match="names arch"):
        ARCHS["vgg16"]({"arch": "resnet18"})


@pytest.mark.parametrize("arch", ["resnet18", "vgg16"])
def test_snn_multistep_equals_reference_with_rsm(arch):
    torch.manual_seed(0)
    m = build_baseline(arch, preset="digits", width=4, hidden=8).double().eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
        for _, s in iter_sites(m):
            s.lam.fill_(0.5)
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    mask = {"act": 0.5, "act@3": 0.25}
    ca, cb = OpCounter(m), OpCounter(m)
    a = simulate(m, x, 6, mask=mask, seed=2000, t_chunk=4, counter=ca, return_steps=True)
    b = simulate_reference(m, x, 6, mask=mask, seed=2000, counter=cb, return_steps=True)
    assert torch.equal(a.steps, b.steps)
    assert ca.raw() == cb.raw()
    s = ca.summary()
    assert s["totals"]["spikes_delivered"] < s["totals"]["spikes_emitted"]
    assert s["totals"]["synops"] > 0
    if arch == "resnet18":
        assert s["totals"]["residual_accumulations"] > 0                  # identity shortcuts
    first = s["layers"][0]
    assert first["input"] == "analog, constant input" and first["macs"] > 0
    assert all(ly["input"] != "analog" for ly in s["layers"][1:])         # every later layer reads spikes
