"""The format core and the Lava runtime without torch (issue 13, item 3), and the file's JSON attributes.

The reader, writer, ``netx_ops`` and the RSM mask generator depend on numpy and h5py only; ``mst run``
on a Lava backend (data, build, run, report) imports no torch. Checked in subprocesses whose import
system refuses torch and records every attempt: an attempt fails the test even when the code would
have caught the ImportError, so "never imported" also means "runs where torch is not installed".
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tomllib

from mst_lava.errors import MSTError
from mst_lava.export import read_network, write_network
from mst_lava.export.graph import JSON_ATTRS

ROOT = Path(__file__).resolve().parents[1]
DIGITS_NET = ROOT / "export" / "digits.net"

# runs first in the subprocess: refuse torch, remember every attempt, report at exit
_NO_TORCH = '''
import atexit, sys
attempts = []
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            attempts.append(name)
            raise ImportError(f"torch is not available here ({name})")
        return None
sys.meta_path.insert(0, _NoTorch())
def _report():
    sys.stdout.flush()
    print("TORCH-ATTEMPTS", attempts, "TORCH-LOADED", "torch" in sys.modules, flush=True)
atexit.register(_report)
'''


def _run_without_torch(code: str, tmp_path, timeout=600):
    r = subprocess.run([sys.executable, "-c", _NO_TORCH + code], capture_output=True, text=True, timeout=timeout,
                       cwd=tmp_path)
    tail = [ln for ln in r.stdout.splitlines() if ln.startswith("TORCH-ATTEMPTS")]
    assert tail, f"no report (exit {r.returncode})\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r, tail[-1]


@pytest.mark.skipif(not DIGITS_NET.exists(), reason="the shipped export/digits.net is absent")
def test_lava_run_imports_no_torch(tmp_path):
    """`mst run export/digits.net --n 2 --T 8 --backend lava-cpu` (with a report) never imports torch."""
    code = (f"from mst_lava.cli import main\n"
            f"rc = main(['run', {str(DIGITS_NET)!r}, '--n', '2', '--T', '8', '--backend', 'lava-cpu', "
            f"'--no-progress', '--report', 'rep'])\n"
            f"print('RC', rc)\n")
    r, report = _run_without_torch(code, tmp_path)
    assert "RC 0" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert report == "TORCH-ATTEMPTS [] TORCH-LOADED False", report
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["backend"] == "lava-cpu" and rep["n_samples"] == 2 and rep["mask"] == {}
    assert "mask none" in (tmp_path / "rep" / "summary.md").read_text()


@pytest.mark.skipif(not DIGITS_NET.exists(), reason="the shipped export/digits.net is absent")
def test_format_core_needs_numpy_and_h5py_only(tmp_path):
    """Reader, writer, netx_ops, the RSM generator, the Lava builder, the data arrays and `mst inspect`: no torch."""
    code = (f"import numpy as np\n"
            f"from mst_lava.export import read_network, write_network\n"
            f"from mst_lava import netx_ops as ops\n"
            f"from mst_lava.model import rsm\n"
            f"import mst_lava.lava.builder, mst_lava.lava.runner, mst_lava.data\n"
            f"g = read_network({str(DIGITS_NET)!r})\n"
            f"write_network('copy.net', g)\n"
            f"g2 = read_network('copy.net')\n"
            f"assert [L.name for L in g2.layers] == [L.name for L in g.layers] and g2.attrs['mask'] == {{}}\n"
            f"keep = rsm.keep_mask_numpy(0, 'Q', 0, 3, 100, 0.75)\n"
            f"fan = ops.conv_fanout((2, 4, 4), np.ones((3, 2, 3, 3)), (1, 1), (1, 1))\n"
            f"x = mst_lava.data.eval_arrays('digits', None).eval_images(0, 2, 8, 1)\n"
            f"assert x.shape == (2, 1, 8, 8) and fan.shape == (2, 4, 4) and keep.shape == (100,)\n"
            f"from mst_lava.cli import main\n"
            f"assert main(['inspect', {str(DIGITS_NET)!r}, '--json', 'inspect.json']) == 0\n"
            f"print('OK')\n")
    r, report = _run_without_torch(code, tmp_path, timeout=300)
    assert "OK" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert report == "TORCH-ATTEMPTS [] TORCH-LOADED False", report


def test_pyproject_splits_the_training_dependencies():
    """The package's own dependencies are the Lava runtime's (no torch); torch and friends are `mst_lava[train]`."""
    import re
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs):
        return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in reqs}
    core, train = names(meta["dependencies"]), names(meta["optional-dependencies"]["train"])
    assert {"numpy", "h5py"} <= core and not core & {"torch", "torchvision", "timm", "tonic"}
    assert {"torch", "torchvision", "timm", "tonic"} <= train


# ----------------------------------------------------------------------------------------
# JSON attributes: written by write_network, decoded by read_network, all of them

@pytest.mark.skipif(not DIGITS_NET.exists(), reason="the shipped export/digits.net is absent")
def test_every_json_attribute_is_decoded(tmp_path):
    g = read_network(DIGITS_NET)
    assert isinstance(g.attrs["mask"], dict) and isinstance(g.attrs["model_config"], dict)
    g.attrs["mask"] = {"Q": 0.75, "K@1": 0.5}
    from mst_lava.model.rsm import drop_threshold, ratio_for
    for L in g.layers:              # the layers apply the mask (a mask no layer applies is refused)
        if L.mst.get("site"):
            r = ratio_for(g.attrs["mask"], L.mst["site"], int(L.mst["block"]))
            L.mst.update(rsm_ratio=r, rsm_threshold=drop_threshold(r))
    g.attrs["checkpoint_metrics"] = {"ann_acc": 0.98}
    write_network(tmp_path / "a.net", g)
    with h5py.File(tmp_path / "a.net", "r") as f:       # stored as JSON text
        assert json.loads(f.attrs["mask"]) == {"Q": 0.75, "K@1": 0.5}
    back = read_network(tmp_path / "a.net")
    for k in JSON_ATTRS:
        assert back.attrs[k] == g.attrs[k] and isinstance(back.attrs[k], dict)


@pytest.mark.skipif(not DIGITS_NET.exists(), reason="the shipped export/digits.net is absent")
@pytest.mark.parametrize("key,value,msg", [
    ("mask", "{not json", "attribute 'mask' is not valid JSON"),
    ("mask", "[0.5]", "attribute mask is \\[0.5\\]; a JSON object belongs here"),
    ("mask", '{"Q": 1.5}', "attribute mask: 'Q' has ratio 1.5"),
    ("checkpoint_metrics", "7", "attribute checkpoint_metrics is 7; a JSON object belongs here"),
    ("model_config", np.int64(3), "attribute model_config is 3; JSON text of an object belongs here"),
])
def test_bad_json_attributes_are_refused(tmp_path, key, value, msg):
    bad = tmp_path / "bad.net"
    bad.write_bytes(DIGITS_NET.read_bytes())
    with h5py.File(bad, "r+") as f:
        f.attrs[key] = value
    with pytest.raises(MSTError, match=msg):
        read_network(bad)


def test_writer_stores_dicts_only_as_the_json_attributes(tmp_path):
    from mst_lava.export.plain import dense_layer, input_layer, plain_network
    g = plain_network([input_layer((2,)), dense_layer(np.ones((3, 2)), None)])
    g.attrs["notes"] = {"a": 1}
    with pytest.raises(ValueError, match="attribute 'notes' is a dict; only model_config, mask, checkpoint_metrics"):
        write_network(tmp_path / "x.net", g)
