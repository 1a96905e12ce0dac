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


# ----------------------------------------------------------------------------------------
# the start-up hook: any `import lava` works in this environment, not only after mst_lava's

def _run_py(args, **kw):
    import subprocess
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, **kw)


def test_plain_lava_import_works_in_this_environment():
    """`from lava.lib.dl import netx` in a fresh interpreter of this environment, without importing
    mst_lava first: the .pth start-up hook (make setup) has registered the import hook already."""
    code = ("import sys\n"
            "from lava.lib.dl import netx\n"
            "from lava.magma.compiler import var_model\n"
            "from mst_lava.lava import compat\n"
            "assert compat.PATCHED_FIELDS == 8, compat.PATCHED_FIELDS\n"
            "assert var_model.CoreEncoder().x is not var_model.CoreEncoder().x\n"
            "assert not any(m.startswith('mst_lava.') and m not in ('mst_lava.lava', 'mst_lava.lava.compat') "
            "for m in sys.modules), sorted(m for m in sys.modules if m.startswith('mst_lava'))\n"
            "print('ok')\n")
    r = _run_py(["-c", code])
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (
        f"`from lava.lib.dl import netx` fails in {sys.prefix} without importing mst_lava first; is the start-up "
        f"hook {compat.PTH_NAME} installed (make setup)?\n{r.stderr[-3000:]}")


def test_start_up_hook_only_registers_the_finder():
    """At interpreter start the hook imports mst_lava.lava.compat and nothing else: no Lava, numpy, torch or
    multiprocessing, and no multiprocessing patch before Lava is imported."""
    code = ("import sys\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mst_lava', 'lava', 'numpy', 'torch', "
            "'multiprocessing')))\n"
            "print(sum(type(f).__name__ == '_VarModelFinder' for f in sys.meta_path))\n")
    r = _run_py(["-c", code])
    assert r.returncode == 0, r.stderr[-2000:]
    mods, finders = r.stdout.strip().splitlines()
    assert mods == "['mst_lava', 'mst_lava.lava', 'mst_lava.lava.compat']"
    assert finders == "1"


def test_install_pth_writes_a_hook_that_site_processes(tmp_path):
    """install_pth() writes the one line; `site` runs it for a site directory and the finder is registered
    (checked with -S, so this environment's own hook is not what registered it)."""
    path = compat.install_pth(str(tmp_path))
    assert Path(path).read_text() == compat.PTH_LINE
    root = Path(compat.__file__).resolve().parents[2]
    code = ("import sys, site\n"
            f"sys.path.insert(0, {str(root)!r})\n"
            "print(any(type(f).__name__ == '_VarModelFinder' for f in sys.meta_path))\n"
            f"site.addsitedir({str(tmp_path)!r})\n"
            "print(any(type(f).__name__ == '_VarModelFinder' for f in sys.meta_path))\n")
    r = _run_py(["-S", "-c", code])
    assert r.returncode == 0 and r.stderr == "", r.stderr[-2000:]
    assert r.stdout.split() == ["False", "True"]
    assert compat.remove_pth(str(tmp_path)) and not Path(path).exists()


def test_start_up_line_is_silent_without_mst_lava(tmp_path):
    """A hook left behind after mst_lava is gone must not disturb the interpreter."""
    compat.install_pth(str(tmp_path))
    r = _run_py(["-S", "-c", f"import site; site.addsitedir({str(tmp_path)!r}); print('fine')"],
                cwd=str(tmp_path))
    assert r.returncode == 0 and r.stdout.strip() == "fine" and r.stderr == "", r.stderr[-2000:]
