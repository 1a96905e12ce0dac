"""Lava really runs on Python 3.11: the import-time shim, then lava-dl's shipped tiny.net.

tiny.net (a three-layer CUBA conv net) and its ground truth ship inside lava-dl's wheel
under ``tests/lava/lib/dl/netx/``. We load it with lava-dl's own ``netx.hdf5.Network``,
run it on Loihi2SimCfg in bit-accurate fixed point and require the output spikes to
equal the shipped ground truth exactly.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

import mst_lava.lava  # noqa: F401  (installs the shim before lava is imported)
from mst_lava.lava import compat


def _netx_dir() -> Path | None:
    try:
        import tests.lava.lib.dl.netx as shipped  # the lava-dl wheel installs this package
    except ImportError:
        shipped = None
    if shipped is not None and shipped.__file__:
        return Path(shipped.__file__).parent
    for p in map(Path, sys.path):
        cand = p / "tests" / "lava" / "lib" / "dl" / "netx"
        if (cand / "tiny.net").exists():
            return cand
    return None


NETX = _netx_dir()


def test_patch_source_rewrites_only_bytencoder_defaults():
    src = ("@dataclass\nclass C:\n    x: ByteEncoder = ByteEncoder()\n    y: int = 0\n"
           "    z : ByteEncoder =  ByteEncoder()  \n")
    out, n = compat.patch_source(src)
    assert n == 2
    assert "ByteEncoder()" not in out
    assert "y: int = 0" in out
    assert compat.patch_source(out) == (out, 0)  # idempotent on fixed sources


def test_shim_is_installed_and_var_model_imports():
    assert compat.is_installed()
    from lava.magma.compiler import var_model
    # three encoders, 3 + 3 + 2 fields, each a fresh ByteEncoder per instance
    if compat.PATCHED_FIELDS == 0:
        pytest.skip("var_model was imported before the shim or is already fixed upstream")
    assert compat.PATCHED_FIELDS == 8
    a, b = var_model.CoreEncoder(), var_model.CoreEncoder()
    assert isinstance(a.x, var_model.ByteEncoder) and a.x is not b.x
    f = {f.name: f for f in dataclasses.fields(var_model.AxonEncoder)}
    assert f["hi"].default_factory is var_model.ByteEncoder


@pytest.mark.skipif(NETX is None, reason="lava-dl's shipped netx test files not found")
def test_tiny_net_matches_ground_truth_fixed_point():
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io
    from lava.proc.conv import utils as conv_utils

    conv_utils.TORCH_IS_AVAILABLE = False  # lava's conv falls back to numpy (torch + fork misbehave)
    gts = NETX / "gts" / "tinynet"
    T = 17                                   # steps of the ground-truth sample
    net = netx.hdf5.Network(net_config=str(NETX / "tiny.net"))
    steps = T + len(net)                     # one extra step of latency per layer
    sink = io.sink.RingBuffer(shape=net.out_layer.out.shape, buffer=steps)
    net.out_layer.out.connect(sink.a_in)
    # the ground truth was made with every layer's state cleared at the sample boundary,
    # each layer one step later than the one before it
    for i, layer in enumerate(net.layers):
        for var in (layer.neuron.u, layer.neuron.v):
            io.reset.Reset(interval=T, offset=i - 1).connect_var(var)
    net.in_layer.neuron.bias_mant.init = np.load(gts / "input_bias.npy")

    try:
        net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        out = sink.data.get()
    finally:
        net.stop()

    # ground truth: (1, W, H, C, T) → (C, H, W, T) as lava orders it; step 0 has no output
    gt = np.load(gts / "output.npy")[0].transpose(2, 1, 0, 3)[..., 1:]
    got = out[..., 2:T]                      # two layers of latency after the input layer
    assert got.shape == gt.shape
    assert gt.sum() > 0
    np.testing.assert_array_equal(got, gt)


def test_lava_imports_after_the_multiprocessing_context_was_fixed():
    """A tqdm bar (or anything) that fixed the start method earlier must not break Lava's import."""
    import subprocess
    import sys
    code = ("import multiprocessing as mp; mp.RLock(); import mst_lava.lava; "
            "from lava.magma.runtime.runtime import Runtime; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
