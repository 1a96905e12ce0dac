"""mst import-official: the paper's own checkpoints (bic-L/Masked-Spiking-Transformer).

The synthetic checkpoints here follow the official key layout, written down in this file from the
official model code (docs/official-mst.md), not from mst_lava.official; the reference forward pass
is the official formulas in plain torch on the official state dict. yacs is not installed, so a
stand-in ``yacs.config.CfgNode`` (a dict subclass with yacs' internal state) is pickled under that
name: the loader must read it without importing anything.
"""
from __future__ import annotations

import os
import pickle
import sys
import types
import zipfile

import pytest
import torch
import torch.nn.functional as F

from mst_lava.checkpoint import read_checkpoint
from mst_lava.cli import main
from mst_lava.errors import MSTError
from mst_lava.model.mst import MSTConfig
from mst_lava.official import import_official, official_layout, read_official
from mst_lava.snn.simulate import simulate

# two small official configurations: ImageNet-style (BN in the MLP; shifted windows in stages 0-1,
# stage 2's grid equals the window) and CIFAR-style (no MLP BN; every grid <= the window, so no
# shift masks and the image size comes from the config), masked at 75 %
IMAGENET = dict(img=32, patch=2, in_chans=3, C=8, depths=(2, 2, 2), heads=(1, 2, 2), window=4, classes=1000,
                mlp_norm=True, dataset="imagenet", masking=0.0)
CIFAR = dict(img=16, patch=2, in_chans=3, C=8, depths=(2, 2), heads=(2, 2), window=8, classes=10,
             mlp_norm=False, dataset="Cifar10", masking=0.75)


# ----------------------------------------------------------------------------------------
# The official layout (models/mst.py: MaskedSpikingTransformer with every ReLU replaced by
# MyFloor(up, t=16), whose `up` is a (1,) parameter), in state-dict order


def official_keys(a: dict) -> list[tuple[str, tuple]]:
    C, p = a["C"], a["patch"]
    bn = lambda k, n: [(f"{k}.weight", (n,)), (f"{k}.bias", (n,)), (f"{k}.running_mean", (n,)),  # noqa: E731
                       (f"{k}.running_var", (n,)), (f"{k}.num_batches_tracked", ())]
    keys = [("patch_embed.proj.weight", (C, a["in_chans"], p, p)), ("patch_embed.proj.bias", (C,)),
            ("patch_embed.proj_if.up", (1,))] + bn("patch_embed.norm", C)
    res = a["img"] // p
    for s, (depth, h) in enumerate(zip(a["depths"], a["heads"])):
        dim = C * 2 ** s
        w = min(a["window"], res)
        shifted = res > a["window"]
        for i in range(depth):
            o = f"layers.{s}.blocks.{i}"
            if shifted and i % 2:
                keys.append((f"{o}.attn_mask", ((res // w) ** 2, w * w, w * w)))
            keys += bn(f"{o}.norm1", dim) + [(f"{o}.shortcut1_if.up", (1,))]
            keys += [(f"{o}.attn.relative_position_bias_table", ((2 * w - 1) ** 2, h)),
                     (f"{o}.attn.relative_position_index", (w * w, w * w)),
                     (f"{o}.attn.qkv.weight", (3 * dim, dim)), (f"{o}.attn.qkv.bias", (3 * dim,))]
            keys += [(f"{o}.attn.{n}.up", (1,)) for n in ("q_if", "k_if", "v_if", "attn_if", "attn_v_if")]
            keys += [(f"{o}.attn.proj.weight", (dim, dim)), (f"{o}.attn.proj.bias", (dim,)),
                     (f"{o}.attn.proj_if.up", (1,))]
            keys += bn(f"{o}.norm2", dim) + [(f"{o}.shortcut2_if.up", (1,))]
            keys += [(f"{o}.mlp.fc1.weight", (4 * dim, dim)), (f"{o}.mlp.fc1.bias", (4 * dim,))]
            keys += bn(f"{o}.mlp.norm1", 4 * dim) if a["mlp_norm"] else []
            keys += [(f"{o}.mlp.fc1_if.up", (1,)), (f"{o}.mlp.fc2.weight", (dim, 4 * dim)),
                     (f"{o}.mlp.fc2.bias", (dim,))]
            keys += bn(f"{o}.mlp.norm2", dim) if a["mlp_norm"] else []
            keys += [(f"{o}.mlp.fc2_if.up", (1,))]
        if s + 1 < len(a["depths"]):
            o = f"layers.{s}.downsample"
            keys += [(f"{o}.reduction.weight", (2 * dim, 4 * dim))] + bn(f"{o}.norm", 4 * dim) + \
                [(f"{o}.reduction_if.up", (1,))]
            res //= 2
    nf = C * 2 ** (len(a["depths"]) - 1)
    return keys + [("norm.weight", (nf,)), ("norm.bias", (nf,)), ("head.weight", (a["classes"], nf)),
                   ("head.bias", (a["classes"],))]


def rel_index(w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")
    c = torch.stack([ys.flatten(), xs.flatten()])
    rel = c[:, :, None] - c[:, None, :] + (w - 1)
    return rel[0] * (2 * w - 1) + rel[1]


def shift_mask(res: int, w: int) -> torch.Tensor:
    """-100 between tokens of different regions (rows/cols [0, res-w), [res-w, res-w/2), [res-w/2, res))."""
    s = w // 2
    band = torch.tensor([0 if c < res - w else (1 if c < res - s else 2) for c in range(res)])
    label = band[:, None] * 3 + band[None, :]                                   # res, res
    win = label.view(res // w, w, res // w, w).permute(0, 2, 1, 3).reshape(-1, w * w)
    return (win[:, None, :] != win[:, :, None]).float() * -100.0


def official_state_dict(a: dict, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in official_keys(a):
        if k.endswith("num_batches_tracked"):
            v = torch.tensor(1000)
        elif k.endswith("relative_position_index"):
            v = rel_index(int(round(shape[0] ** 0.5)))
        elif k.endswith("attn_mask"):
            s = int(k.split(".")[1])
            res = a["img"] // a["patch"] // 2 ** s
            v = shift_mask(res, int(round(shape[1] ** 0.5)))
        elif k.endswith(".up"):
            v = 1.0 + 2.0 * torch.rand(shape, generator=g)
        elif k.endswith("running_var"):
            v = 0.5 + 1.5 * torch.rand(shape, generator=g)
        elif k.endswith(("running_mean", ".bias")) or "bias_table" in k:
            v = 0.3 * torch.randn(shape, generator=g)
        elif len(shape) == 1:            # BN / LN weights
            v = 0.5 + torch.rand(shape, generator=g)
        else:                            # linear / conv weights, unit-variance outputs
            fan_in = int(torch.tensor(shape[1:]).prod())
            v = torch.randn(shape, generator=g) * fan_in ** -0.5
        sd[k] = v
    return sd


class CfgNode(dict):
    """Stands in for yacs.config.CfgNode: a dict subclass whose instance dict holds yacs' internal
    state (pickled by protocol 2 as NEWOBJ + SETITEMS + BUILD, as the real class is)."""

    def __init__(self, init=None):
        super().__init__(init or {})
        self.__dict__.update({"__immutable__": True, "__deprecated_keys__": {"OLD.KEY"}, "__renamed_keys__": {},
                              "__new_allowed__": False})

    def __getattr__(self, name):
        if name in self:
            return self[name]
        raise AttributeError(name)


CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"


def official_config(a: dict) -> CfgNode:
    mst = CfgNode({"PATCH_SIZE": a["patch"], "IN_CHANS": a["in_chans"], "EMBED_DIM": a["C"],
                   "DEPTHS": list(a["depths"]), "NUM_HEADS": list(a["heads"]), "WINDOW_SIZE": a["window"],
                   "MLP_RATIO": 4.0, "QKV_BIAS": True, "QK_SCALE": None, "APE": False, "PATCH_NORM": True,
                   "MASKING_RATIO": a["masking"]})
    return CfgNode({"DATA": CfgNode({"DATASET": a["dataset"], "IMG_SIZE": a["img"], "INTERPOLATION": "bicubic"}),
                    "MODEL": CfgNode({"TYPE": "mst", "NUM_CLASSES": a["classes"], "MST": mst}),
                    "TRAIN": CfgNode({"OPTIMIZER": CfgNode({"NAME": "adamw", "BETAS": (0.9, 0.999)})})})


@pytest.fixture
def save_official(tmp_path, monkeypatch):
    """save(a, sd=None, obj=None) → path of a .pth in the format of main.py (yacs resolvable only while saving)."""
    def save(a, sd=None, obj=None, name="official.pth"):
        sd = official_state_dict(a) if sd is None else sd
        if obj is None:
            obj = {"model": sd, "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
                                              "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0]}]},
                   "lr_scheduler": {"t_initial": 300, "base_values": [1e-4]}, "max_accuracy": 96.7,
                   "scaler": {"scale": 65536.0}, "epoch": 299, "config": official_config(a)}
        path = tmp_path / name
        yacs, yc = types.ModuleType("yacs"), types.ModuleType("yacs.config")
        yc.CfgNode = CfgNode
        with monkeypatch.context() as m:
            m.setitem(sys.modules, "yacs", yacs)
            m.setitem(sys.modules, "yacs.config", yc)
            torch.save(obj, path)
        return path
    return save


# ----------------------------------------------------------------------------------------
# The official forward pass, in plain torch on the official state dict


def myfloor(x, up):
    """modules_QCFS.MyFloor with t = 16: up · clamp(floor(x/up·t + 0.5)/t, 0, 1)."""
    return torch.clamp(torch.floor(x / up * 16 + 0.5) / 16, 0, 1) * up


def official_forward(sd: dict, a: dict, x: torch.Tensor, act=None) -> torch.Tensor:
    act = act or (lambda key, t: myfloor(t, sd[key + ".up"]))
    bn = lambda k, t: F.batch_norm(t, sd[k + ".running_mean"], sd[k + ".running_var"], sd[k + ".weight"],  # noqa: E731
                                   sd[k + ".bias"], False, 0.0, 1e-5)
    tok_bn = lambda k, t: bn(k, t.transpose(1, 2)).transpose(1, 2)   # noqa: E731  BatchNorm1d on (B, C, L)
    lin = lambda k, t: F.linear(t, sd[k + ".weight"], sd.get(k + ".bias"))  # noqa: E731
    x = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=a["patch"]).flatten(2)
    x = act("patch_embed.proj_if", bn("patch_embed.norm", x).transpose(1, 2))      # B, L, C
    res = a["img"] // a["patch"]
    for s, (depth, h) in enumerate(zip(a["depths"], a["heads"])):
        w = min(a["window"], res)
        for i in range(depth):
            o = f"layers.{s}.blocks.{i}"
            sh = w // 2 if (res > a["window"] and i % 2) else 0
            B, L, C = x.shape
            y = act(o + ".shortcut1_if", tok_bn(o + ".norm1", x)).view(B, res, res, C)
            y = torch.roll(y, (-sh, -sh), (1, 2)) if sh else y
            y = y.view(B, res // w, w, res // w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, C)
            qkv = lin(o + ".attn.qkv", y).reshape(-1, w * w, 3, h, C // h).permute(2, 0, 3, 1, 4)
            q, k, v = (act(f"{o}.attn.{n}", qkv[j]) for j, n in enumerate(("q_if", "k_if", "v_if")))
            att = act(o + ".attn.attn_if", (q @ k.transpose(-2, -1)) * (C // h) ** -0.5)
            bias = sd[o + ".attn.relative_position_bias_table"][rel_index(w).view(-1)].view(w * w, w * w, h)
            att = att + bias.permute(2, 0, 1).unsqueeze(0)
            if sh:
                m = shift_mask(res, w)
                att = (att.view(B, m.shape[0], h, w * w, w * w) + m[None, :, None]).view(-1, h, w * w, w * w)
            y = act(o + ".attn.attn_v_if", (att.softmax(-1) @ v).transpose(1, 2).reshape(-1, w * w, C))
            y = act(o + ".attn.proj_if", lin(o + ".attn.proj", y))
            y = y.view(B, res // w, res // w, w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, res, res, C)
            y = torch.roll(y, (sh, sh), (1, 2)) if sh else y
            x = tok_bn(o + ".norm2", x + y.reshape(B, L, C))          # the MLP's skip starts at BN2
            m = lin(o + ".mlp.fc1", act(o + ".shortcut2_if", x))
            m = tok_bn(o + ".mlp.norm1", m) if a["mlp_norm"] else m
            m = lin(o + ".mlp.fc2", act(o + ".mlp.fc1_if", m))
            m = tok_bn(o + ".mlp.norm2", m) if a["mlp_norm"] else m
            x = x + act(o + ".mlp.fc2_if", m)
        if s + 1 < len(a["depths"]):
            o = f"layers.{s}.downsample"
            B, L, C = x.shape
            g = x.view(B, res, res, C)
            g = torch.cat([g[:, 0::2, 0::2], g[:, 1::2, 0::2], g[:, 0::2, 1::2], g[:, 1::2, 1::2]], -1)
            x = act(o + ".reduction_if", lin(o + ".reduction", tok_bn(o + ".norm", g.view(B, -1, 4 * C))))
            res //= 2
    x = F.layer_norm(x, (x.shape[-1],), sd["norm.weight"], sd["norm.bias"], 1e-5)
    return lin("head", x.mean(1))


# ----------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("a", [IMAGENET, CIFAR], ids=["imagenet", "cifar10"])
def test_layout_table_matches_the_official_code(a):
    cfg = MSTConfig(img_size=a["img"], in_chans=a["in_chans"], num_classes=a["classes"], patch_size=a["patch"],
                    embed_dim=a["C"], depths=a["depths"], heads=a["heads"], window=a["window"], mlp_norm=a["mlp_norm"],
                    mlp_skip_norm=True, final_layernorm=True)
    assert [(k, s) for k, s, _ in official_layout(cfg)] == official_keys(a)
    # every one of our weights is mapped, once
    from mst_lava.model.mst import MST
    ours = [o for _, _, o in official_layout(cfg) if o is not None]
    assert sorted(ours) == sorted(MST(cfg).state_dict())


def test_loader_reads_config_as_plain_data_without_importing_yacs(save_official):
    path = save_official(CIFAR)
    assert "yacs" not in sys.modules
    obj = read_official(path)
    assert "yacs" not in sys.modules
    assert obj["epoch"] == 299 and obj["max_accuracy"] == 96.7
    assert obj["model"]["layers.0.blocks.0.attn.q_if.up"].shape == (1,)
    model, info = import_official(path)
    assert info["dataset"] == "cifar10" and info["mask"] == {"Q": 0.75, "K": 0.75, "A": 0.75}
    assert info["metrics"] == {"official_max_accuracy": 96.7, "official_epoch": 299}
    c = model.cfg
    assert (c.img_size, c.patch_size, c.embed_dim, c.depths, c.heads, c.window, c.num_classes) == \
        (16, 2, 8, (2, 2), (2, 2), 8, 10)
    assert (c.mlp_norm, c.mlp_skip_norm, c.final_layernorm, c.L) == (False, True, True, 16)


@pytest.mark.parametrize("a", [IMAGENET, CIFAR], ids=["imagenet", "cifar10"])
def test_imported_ann_equals_the_official_formulas(a, save_official):
    sd = official_state_dict(a, seed=1)
    model, _ = import_official(save_official(a, sd))
    x = torch.randn(4, 3, a["img"], a["img"], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref, got = official_forward(sd, a, x), model(x)
        assert (ref - got).abs().max() <= 1e-5 * max(1.0, float(ref.abs().max()))
        assert torch.equal(ref.argmax(1), got.argmax(1))
        sd64 = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
        ref64, got64 = official_forward(sd64, a, x.double()), model.double()(x.double())
        assert (ref64 - got64).abs().max() <= 1e-10
    assert (ref[0] - ref[1]).abs().max() > 1e-2          # the inputs are told apart: a real check


def test_bare_state_dict_infers_the_image_size_from_the_shift_masks(save_official):
    sd = {"module." + k: v for k, v in official_state_dict(IMAGENET).items()}    # as saved from DDP
    model, info = import_official(save_official(IMAGENET, obj=sd))
    assert model.cfg.img_size == 32 and model.cfg.window == 4 and model.cfg.mlp_norm
    assert info["dataset"] == "imagenet" and info["mask"] == {}


def test_imported_snn_equals_official_if_conversion(save_official):
    """simulate(attention="paper") = the official network with IF neurons (threshold λ = up, membrane
    λ/2, reset by subtraction) on every MyFloor, averaged over the steps."""
    a = dict(CIFAR, masking=0.0)
    sd = official_state_dict(a, seed=3)
    model, _ = import_official(save_official(a, sd))
    x = torch.randn(4, 3, a["img"], a["img"], generator=torch.Generator().manual_seed(4))
    T, v, acc = 3, {}, 0
    for _ in range(T):
        def act(key, inp):
            lam = sd[key + ".up"]
            mem = v.get(key, lam / 2 * torch.ones_like(inp)) + inp
            spike = (mem >= lam).to(inp.dtype)
            v[key] = mem - spike * lam
            return spike * lam
        with torch.no_grad():
            acc = acc + official_forward(sd, a, x, act)
    res = simulate(model, x, T, attention="paper")
    assert (res.logits - acc / T).abs().max() <= 1e-5


def test_cli_writes_a_valid_checkpoint(save_official, tmp_path, capsys):
    out = tmp_path / "ours.pt"
    assert main(["import-official", "--help"]) == 0
    assert "import-official" in capsys.readouterr().out
    assert main(["import-official", str(save_official(CIFAR)), "-o", str(out)]) == 0
    assert "masking Q=0.75 K=0.75 A=0.75" in capsys.readouterr().out
    ck = read_checkpoint(out)
    assert ck["dataset"] == "cifar10-official" and ck["mask"] == {"Q": 0.75, "K": 0.75, "A": 0.75}
    assert ck["config"]["mlp_skip_norm"] and ck["config"]["final_layernorm"] and "mlp_norm" not in ck["config"]
    assert main(["import-official", str(save_official(CIFAR)), "-o", str(out), "--preprocessing", "ours"]) == 0
    assert read_checkpoint(out)["dataset"] == "cifar10"
    assert main(["import-official", str(save_official(CIFAR)), "-o", str(out), "--dataset", "imagenet"]) == 2
    assert "1000 classes" in capsys.readouterr().err
    # the export of the official topology: tests/test_official_export.py


def _refused(path, *words):
    with pytest.raises(MSTError) as e:
        import_official(path)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    return msg


def test_refuses_unknown_missing_and_misshapen_keys(save_official):
    sd = official_state_dict(CIFAR)
    sd["layers.0.blocks.1.attn.extra.weight"] = torch.zeros(3)
    _refused(save_official(CIFAR, sd, name="a.pth"), "unexpected key layers.0.blocks.1.attn.extra.weight")
    sd = official_state_dict(CIFAR)
    sd["layers.1.blocks.0.mlp.fc2.bias"] = torch.zeros(17)
    _refused(save_official(CIFAR, sd, name="b.pth"), "layers.1.blocks.0.mlp.fc2.bias has shape (17,)", "(16,)")
    sd = official_state_dict(CIFAR)
    del sd["layers.1.blocks.1.attn.v_if.up"]
    _refused(save_official(CIFAR, sd, name="c.pth"), "lacks layers.1.blocks.1.attn.v_if.up")
    sd = official_state_dict(IMAGENET)
    sd["layers.0.blocks.1.attn_mask"] = torch.zeros_like(sd["layers.0.blocks.1.attn_mask"])
    _refused(save_official(IMAGENET, sd, name="d.pth"), "layers.0.blocks.1.attn_mask differs")
    sd = official_state_dict(IMAGENET)
    sd["norm.running_mean"] = torch.zeros(32)        # a BatchNorm before the head: not the official layout
    _refused(save_official(IMAGENET, sd, name="e.pth"), "unexpected key norm.running_mean")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_refuses_malicious_pickles_without_running_them(save_official, tmp_path, capsys):
    marker = tmp_path / "pwned"
    obj = {"model": official_state_dict(CIFAR), "config": _Evil(marker)}
    msg = _refused(save_official(CIFAR, obj=obj, name="evil.pth"), "refused", "system")
    assert not marker.exists() and "nothing in it was run" in msg
    # a raw pickle (or a legacy torch file) is not unpickled at all
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    _refused(raw, "raw pickle", "not unpickled")
    assert not marker.exists()
    # a config holding some other class (here argparse's Namespace) is refused by name
    import argparse
    obj = {"model": official_state_dict(CIFAR), "config": argparse.Namespace(lr=1)}
    _refused(save_official(CIFAR, obj=obj, name="ns.pth"), "argparse.Namespace")
    # a zip that is no torch file, and a TorchScript archive
    z = tmp_path / "plain.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("x/readme.txt", "hi")
    _refused(z, "no data.pkl")
    ts = tmp_path / "script.pt"          # TorchScript's layout: torch.load would hand it to torch.jit.load
    with zipfile.ZipFile(ts, "w") as f:
        f.writestr("script/data.pkl", pickle.dumps({}, protocol=2))
        f.writestr("script/constants.pkl", pickle.dumps((), protocol=2))
        f.writestr("script/code/__torch__.py", "")
    _refused(ts, "TorchScript")
    # the CLI: one line, exit 2
    assert main(["import-official", str(tmp_path / "evil.pth"), "-o", str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")


def test_default_configs_are_unchanged_by_the_official_fields():
    d = MSTConfig().to_dict()
    assert not {"mlp_norm", "mlp_skip_norm", "final_layernorm"} & set(d)
    assert MSTConfig.from_dict(d) == MSTConfig()
    on = MSTConfig(mlp_norm=True, final_layernorm=True).to_dict()
    assert on["mlp_norm"] and on["final_layernorm"] and "mlp_skip_norm" not in on
    with pytest.raises(MSTError, match="mlp_norm must be true or false"):
        MSTConfig(mlp_norm="yes")
