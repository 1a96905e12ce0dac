"""Fashion-MNIST end to end on the real data (`make data` installs it; skipped where it is absent).

* the idx files load as the 60,000 / 10,000 splits with ten classes;
* the shipped ANN checkpoint keeps its accuracy on the first 2,000 test images;
* the shipped fixed-point network runs on Lava with every count identical to the torch executor.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mst_lava.data import get_dataset
from mst_lava.data.static import FMNIST_DEFAULT, BatchLoader

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "export" / "fmnist.pt"
NET = ROOT / "export" / "fmnist.net"

pytestmark = pytest.mark.skipif(not (Path(FMNIST_DEFAULT) / "t10k-labels-idx1-ubyte.gz").exists(),
                                reason="Fashion-MNIST is not installed: run `make data`")


def test_fashion_mnist_splits():
    tr = get_dataset("fmnist", split="train")
    te = get_dataset("fmnist", split="test")
    assert (len(tr), len(te)) == (60_000, 10_000) and tr.num_classes == 10
    assert torch.equal(torch.bincount(te.labels), torch.full((10,), 1000))
    x, _ = te.batch(torch.arange(1000))
    assert x.shape == (1000, 1, 28, 28)
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1      # normalized


def test_shipped_checkpoint_accuracy_on_the_first_2000_test_images():
    from mst_lava.checkpoint import load_checkpoint
    model, ck = load_checkpoint(CKPT)
    assert ck["dataset"] == "fmnist" and len(model.cfg.depths) >= 2
    correct = 0
    with torch.no_grad():
        for x, y in BatchLoader(get_dataset("fmnist", split="test"), 500, limit=2000):
            correct += int((model(x).argmax(1) == y).sum())
    assert correct / 2000 >= 0.88          # a broken file or loader would be far below; full test set: fmnist.md


def test_shipped_fixed_network_lava_equals_torch_exactly():
    from mst_lava.export import NetSim, read_network
    from mst_lava.lava import runner
    graph = read_network(NET)
    ds = get_dataset("fmnist", split="test")
    x, _ = ds.batch(torch.arange(2))
    ref = NetSim(graph, precision="fixed").run(x, 12)
    res = runner.run(graph, x.numpy(), 12, precision="fixed")
    for name, c in ref.counts.items():
        for k in ("spikes", "delivered", "synops", "neuron_updates"):
            assert int(c.get(k, 0)) == int(res.counts.get(name, {}).get(k, 0)), (name, k)
    assert sum(ref.site_counts().values()) > 10_000
    np.testing.assert_array_equal(res.pred, ref.pred.numpy())
    np.testing.assert_array_equal(res.scores, ref.readout.sum(0).numpy())
