"""``mst import-official``: the paper's own released checkpoints as mst_lava checkpoints.

The authors' code (repository bic-L/Masked-Spiking-Transformer, ``main.py``) saves
``{"model": state dict, "optimizer", "lr_scheduler", "max_accuracy", "scaler", "epoch",
"config": yacs CfgNode}`` with ``torch.save``. This module

* reads such a file without running pickled code: ``torch.load`` with a restricted pickle
  module whose ``find_class`` hands out only tensor-rebuild functions, containers, dtypes and a
  stand-in for yacs' ``CfgNode`` (turned into plain dicts); any other global is refused by name
  before anything is called, TorchScript archives and non-zip files are refused unread;
* infers the architecture from the state dict's shapes (embed dim, depths, heads, window,
  MLP ratio, classes, qkv bias, BatchNorm in the MLP) and the image size from the shifted-window
  masks or the config, the masking ratio and dataset from the config;
* maps every official key onto :class:`mst_lava.model.mst.MST` built with the official
  topology switches (``mlp_norm``, ``mlp_skip_norm``, ``final_layernorm``), refusing a file
  whose keys or shapes do not fit (the first mismatch named) and checking the derived buffers
  (relative-position index, shift masks) against ours;
* writes a normal mst_lava checkpoint.

The point-by-point comparison of the two models is docs/official-mst.md.
"""
from __future__ import annotations

import _compat_pickle
import math
import pickle
import re
import types
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from mst_lava import argtypes as at
from mst_lava.errors import MSTError
from mst_lava.fileio import file_kind
from mst_lava.model.mst import MST, MSTConfig, relative_position_index, shift_attention_mask

L_OFFICIAL = 16            # main.py: replace_activation_by_floor(ann, t=16, ...): the QCFS levels
LAM_INIT_OFFICIAL = 2.0    # main.py: --threshold default, the initial λ of every site
# the official DATA.DATASET names → ours, with their class counts
DATASETS = {"cifar10": ("cifar10", 10), "cifar100": ("cifar100", 100), "imagenet": ("imagenet", 1000)}
BY_CLASSES = {n: name for name, (_, n) in DATASETS.items()}

# ----------------------------------------------------------------------------------------
# Reading the file: an allow-list unpickler


class CfgNodeStandIn(dict):
    """What a pickled yacs ``CfgNode`` becomes: a dict of its items; its internal state (the
    immutability flag, deprecated/renamed key sets) is dropped, nothing of yacs is imported."""

    def __setstate__(self, state) -> None:
        pass


class RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _torch_dtypes() -> dict[str, Any]:
    return {name: v for name, v in vars(torch).items() if isinstance(v, torch.dtype)}


def _allowed_globals() -> dict[tuple[str, str], Any]:
    u = torch._utils
    allowed = {
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("_codecs", "encode"): _latin1_encode,          # how protocol 2 pickles bytes
        ("torch", "Size"): torch.Size,
        ("yacs.config", "CfgNode"): CfgNodeStandIn,
    }
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter"):
        if hasattr(u, name):
            allowed[("torch._utils", name)] = getattr(u, name)
    for name, dt in _torch_dtypes().items():
        allowed[("torch", name)] = dt
    return allowed


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` restricted to what pickle uses it for: str → bytes in latin-1."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedGlobal("_codecs.encode (with other arguments than a latin-1 string)")
    return text.encode("latin-1")


class _Unpickler(pickle.Unpickler):
    """Hands out only allow-listed globals; everything else raises :class:`RefusedGlobal`."""

    def find_class(self, module, name):
        # protocol 2 (torch.save's default) writes Python 2 names such as __builtin__.set
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        allowed = _allowed_globals().get((module, name))
        if allowed is None:
            raise RefusedGlobal(f"{module}.{name}")
        return allowed


def _restricted_pickle_module() -> types.ModuleType:
    """A module that ``torch.load(pickle_module=...)`` uses: ``Unpickler`` is the restricted one;
    ``load`` (torch's legacy format only, which is refused before torch.load runs) is too."""
    mod = types.ModuleType("mst_lava_restricted_pickle")
    mod.Unpickler = _Unpickler
    mod.load = lambda f, **kw: _Unpickler(f, **kw).load()
    mod.UnpicklingError = pickle.UnpicklingError
    return mod


def plain(v, where: str = "config"):
    """A loaded value as plain data: CfgNode/OrderedDict → dict, set → sorted list; leaves must
    be None, bool, int, float, str or bytes (a tensor in a config is refused)."""
    if isinstance(v, dict):
        return {str(k): plain(x, f"{where}.{k}") for k, x in v.items()}
    if isinstance(v, tuple):
        return tuple(plain(x, where) for x in v)
    if isinstance(v, list):
        return [plain(x, where) for x in v]
    if isinstance(v, (set, frozenset)):
        return sorted((plain(x, where) for x in v), key=repr)
    if v is None or isinstance(v, (bool, int, float, str, bytes)):
        return v
    raise MSTError(f"{where} holds a {type(v).__name__}, not plain data")


def _sniff(path: Path) -> None:
    kind = file_kind(path, "checkpoint")
    if kind != "zip":
        raise MSTError({
            "empty": f"{path} is empty (0 bytes), not a checkpoint",
            "hdf5": f"{path} is an HDF5 file, not a checkpoint of the official MST code",
            "pickle": f"{path} is a raw pickle or a torch file in the legacy (pre-1.6) format; only torch's zip "
                      "format is read (it was not unpickled). Re-save it with torch >= 1.6 where you trust it",
        }.get(kind, f"{path} is not a torch checkpoint (not a zip file)"))
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise MSTError(f"{path} is a damaged zip file ({e}); download it again") from None
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        raise MSTError(f"{path} is a TorchScript archive, not a checkpoint of the official MST code; it was not loaded")
    if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        raise MSTError(f"{path} is a zip file but not a torch checkpoint (no data.pkl)")


def read_official(path) -> dict:
    """The checkpoint dict (or bare state dict) of an official file, loaded by the allow-list unpickler."""
    path = Path(path)
    if not path.exists():
        raise MSTError(f"{path} does not exist")
    if not path.is_file():
        raise MSTError(f"{path} is not a regular file")
    _sniff(path)
    try:
        obj = torch.load(path, map_location="cpu", pickle_module=_restricted_pickle_module(), weights_only=False,
                         mmap=True)
    except RefusedGlobal as e:
        raise MSTError(f"{path} was refused: it asks to import {e.name}, which is not a tensor, a container or "
                       "the yacs config, so it is not a checkpoint of the official MST code; nothing in it was "
                       "run") from None
    except MSTError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the zip/pickle reader raises, the file is damaged
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MSTError(f"{path} is not a readable torch checkpoint ({first})") from None
    return obj


# ----------------------------------------------------------------------------------------
# The official state-dict layout, from a config


def _bn(prefix: str, n: int) -> list[tuple[str, tuple]]:
    return [(f"{prefix}.{k}", s) for k, s in (("weight", (n,)), ("bias", (n,)), ("running_mean", (n,)),
                                              ("running_var", (n,)), ("num_batches_tracked", ()))]


def stage_geometry(cfg: MSTConfig) -> list[tuple[int, int, int, int]]:
    """(dim, resolution, window, shift of odd blocks) per stage, as both models build them."""
    res, out = cfg.img_size // cfg.patch_size, []
    for s in range(len(cfg.depths)):
        w = min(cfg.window, res)
        out.append((cfg.embed_dim * 2 ** s, res, w, w // 2 if res > w else 0))
        res //= 2
    return out


def official_layout(cfg: MSTConfig) -> list[tuple[str, tuple, str | None]]:
    """(official key, shape, our key) for every entry of the official model's state dict, in its
    order. Our key is None for the buffers both sides derive from the geometry
    (``relative_position_index``, ``attn_mask``): they are checked, not copied. λ (``up``) is
    (1,) there and () here."""
    rows: list[tuple[str, tuple, str | None]] = []
    C, p = cfg.embed_dim, cfg.patch_size

    def lam(off: str, ours: str):
        rows.append((f"{off}.up", (1,), f"{ours}.lam"))

    def same(off: str, ours: str, entries):
        for k, s in entries:
            rows.append((k, s, ours + k[len(off):]))

    same("patch_embed.proj", "patch_embed", [("patch_embed.proj.weight", (C, cfg.in_chans, p, p)),
                                             ("patch_embed.proj.bias", (C,))])
    lam("patch_embed.proj_if", "embed_act")
    same("patch_embed.norm", "embed_norm", _bn("patch_embed.norm", C))
    for s, ((dim, res, w, shift), depth, heads) in enumerate(zip(stage_geometry(cfg), cfg.depths, cfg.heads)):
        hidden = int(dim * cfg.mlp_ratio)
        for i in range(depth):
            o, u = f"layers.{s}.blocks.{i}", f"stages.{s}.{i}"
            if shift and i % 2:
                rows.append((f"{o}.attn_mask", ((res // w) ** 2, w * w, w * w), None))
            same(f"{o}.norm1", f"{u}.norm1", _bn(f"{o}.norm1", dim))
            lam(f"{o}.shortcut1_if", f"{u}.sc1")
            rows.append((f"{o}.attn.relative_position_bias_table", ((2 * w - 1) ** 2, heads), f"{u}.attn.bias_table"))
            rows.append((f"{o}.attn.relative_position_index", (w * w, w * w), None))
            same(f"{o}.attn.qkv", f"{u}.attn.qkv", [(f"{o}.attn.qkv.weight", (3 * dim, dim))] +
                 ([(f"{o}.attn.qkv.bias", (3 * dim,))] if cfg.qkv_bias else []))
            for off, ours in (("q_if", "q_act"), ("k_if", "k_act"), ("v_if", "v_act"), ("attn_if", "a_act"),
                              ("attn_v_if", "av_act")):
                lam(f"{o}.attn.{off}", f"{u}.attn.{ours}")
            same(f"{o}.attn.proj", f"{u}.attn.proj", [(f"{o}.attn.proj.weight", (dim, dim)),
                                                      (f"{o}.attn.proj.bias", (dim,))])
            lam(f"{o}.attn.proj_if", f"{u}.attn.proj_act")
            same(f"{o}.norm2", f"{u}.norm2", _bn(f"{o}.norm2", dim))
            lam(f"{o}.shortcut2_if", f"{u}.sc2")
            same(f"{o}.mlp.fc1", f"{u}.fc1", [(f"{o}.mlp.fc1.weight", (hidden, dim)), (f"{o}.mlp.fc1.bias", (hidden,))])
            if cfg.mlp_norm:
                same(f"{o}.mlp.norm1", f"{u}.fc1_norm", _bn(f"{o}.mlp.norm1", hidden))
            lam(f"{o}.mlp.fc1_if", f"{u}.mlp1")
            same(f"{o}.mlp.fc2", f"{u}.fc2", [(f"{o}.mlp.fc2.weight", (dim, hidden)), (f"{o}.mlp.fc2.bias", (dim,))])
            if cfg.mlp_norm:
                same(f"{o}.mlp.norm2", f"{u}.fc2_norm", _bn(f"{o}.mlp.norm2", dim))
            lam(f"{o}.mlp.fc2_if", f"{u}.mlp2")
        if s + 1 < len(cfg.depths):
            o, u = f"layers.{s}.downsample", f"merges.{s}"
            rows.append((f"{o}.reduction.weight", (2 * dim, 4 * dim), f"{u}.reduction.weight"))
            same(f"{o}.norm", f"{u}.norm", _bn(f"{o}.norm", 4 * dim))
            lam(f"{o}.reduction_if", f"{u}.act")
    nf = C * 2 ** (len(cfg.depths) - 1)
    rows += [("norm.weight", (nf,), "norm.weight"), ("norm.bias", (nf,), "norm.bias"),
             ("head.weight", (cfg.num_classes, nf), "head.weight"), ("head.bias", (cfg.num_classes,), "head.bias")]
    return rows


def official_config(**kw) -> MSTConfig:
    """An MSTConfig with the official topology: BN in the MLP for ImageNet (``mlp_norm``),
    the MLP's skip from BN2(x), a final LayerNorm, L = 16, λ initialised at 2."""
    d = dict(mlp_skip_norm=True, final_layernorm=True, L=L_OFFICIAL, lam_init=LAM_INIT_OFFICIAL, preset="official")
    d.update(kw)
    return MSTConfig(**d)


# ----------------------------------------------------------------------------------------
# Inferring the architecture


def _get(cfg: dict | None, *keys):
    v = cfg
    for k in keys:
        if not isinstance(v, dict) or k not in v:
            return None
        v = v[k]
    return v


def _indices(sd: dict, pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in sd for m in [re.match(pattern, k)] if m})


def _need(sd: dict, key: str, ndim: int) -> tuple:
    if key not in sd:
        raise MSTError(f"the state dict lacks {key}: not the official MST layout")
    shape = tuple(sd[key].shape)
    if len(shape) != ndim:
        raise MSTError(f"{key} has shape {shape}, the official MST layout has {ndim} dimensions there")
    return shape


def _window_of(sd: dict, s: int) -> tuple[int, int]:
    n, heads = _need(sd, f"layers.{s}.blocks.0.attn.relative_position_bias_table", 2)
    w = (math.isqrt(n) + 1) // 2
    if (2 * w - 1) ** 2 != n or w < 1:
        raise MSTError(f"layers.{s}.blocks.0.attn.relative_position_bias_table has {n} rows, not (2w-1)^2 for a "
                       "window w")
    return w, heads


def infer_config(sd: dict, config: dict | None, img_size: int | None = None) -> tuple[MSTConfig, list[str]]:
    """Our MSTConfig for an official state dict: shapes first, then the config for what they do
    not tell (the image size when no shifted block shows it, the window when a stage's grid equals it).
    Returns the config and notes (where the file's config disagrees with its weights)."""
    notes: list[str] = []
    if "absolute_pos_embed" in sd:
        raise MSTError("the checkpoint has an absolute position embedding (APE = True): not supported")
    C, in_chans, p, p2 = _need(sd, "patch_embed.proj.weight", 4)
    if p != p2:
        raise MSTError(f"patch_embed.proj.weight has a {p}x{p2} kernel; only square patches are supported")
    if "patch_embed.norm.weight" not in sd:
        raise MSTError("the checkpoint has no patch_embed.norm (PATCH_NORM = False): not supported")
    stages = _indices(sd, r"layers\.(\d+)\.")
    if not stages or stages != list(range(len(stages))):
        raise MSTError(f"the state dict's stages are {stages}, not layers.0 .. layers.N")
    depths, heads, windows = [], [], []
    for s in stages:
        blocks = _indices(sd, rf"layers\.{s}\.blocks\.(\d+)\.")
        if not blocks or blocks != list(range(len(blocks))):
            raise MSTError(f"the blocks of layers.{s} are {blocks}, not blocks.0 .. blocks.N")
        depths.append(len(blocks))
        w, h = _window_of(sd, s)
        windows.append(w)
        heads.append(h)
    hidden, dim0 = _need(sd, "layers.0.blocks.0.mlp.fc1.weight", 2)
    mlp_ratio = hidden / dim0
    K, nf = _need(sd, "head.weight", 2)
    # the grid side of stage 0: from a shift mask (nW = (res/w)^2 windows), else from the config
    res0 = None
    for s in stages:
        key = f"layers.{s}.blocks.1.attn_mask"
        if key in sd:
            nW = _need(sd, key, 3)[0]
            side = math.isqrt(nW)
            if side * side != nW:
                raise MSTError(f"{key} has {nW} windows, not a square number")
            res0 = side * windows[s] * 2 ** s
            break
    cfg_img = _get(config, "DATA", "IMG_SIZE")
    cfg_win = _get(config, "MODEL", "MST", "WINDOW_SIZE")
    if img_size is not None:
        if res0 is not None and res0 * p != img_size:
            raise MSTError(f"--img-size {img_size} does not fit the weights: their shift masks give {res0 * p}")
        res0 = img_size // p if img_size % p == 0 else None
        if res0 is None:
            raise MSTError(f"--img-size {img_size} is not a multiple of the patch size {p}")
    elif res0 is not None:
        if isinstance(cfg_img, int) and cfg_img != res0 * p:
            notes.append(f"the config's IMG_SIZE {cfg_img} disagrees with the shift masks ({res0 * p}); the masks win")
    elif isinstance(cfg_img, int) and not isinstance(cfg_img, bool) and cfg_img > 0 and cfg_img % p == 0:
        res0 = cfg_img // p
    elif depths[0] >= 2:
        res0 = windows[0]       # a stage-0 pair of blocks without a shift mask: the grid fits in one window
    else:
        raise MSTError("cannot tell the image size from this file (no config, no shifted block): give --img-size")
    # the window: a stage with a larger grid shows it; else any window >= the grid builds the same model
    window = next((w for s, w in enumerate(windows) if (res0 >> s) > w), None)
    if window is None:
        window = cfg_win if isinstance(cfg_win, int) and not isinstance(cfg_win, bool) and cfg_win >= windows[0] \
            else windows[0]
    elif isinstance(cfg_win, int) and cfg_win != window:
        notes.append(f"the config's WINDOW_SIZE {cfg_win} disagrees with the weights ({window}); the weights win")
    mst_cfg = _get(config, "MODEL", "MST") or {}
    for name, ours in (("EMBED_DIM", C), ("DEPTHS", depths), ("NUM_HEADS", heads), ("PATCH_SIZE", p)):
        v = mst_cfg.get(name)
        if v is not None and (list(v) if isinstance(v, (list, tuple)) else v) != ours:
            notes.append(f"the config's {name} {v} disagrees with the weights ({ours}); the weights win")
    qk_scale = mst_cfg.get("QK_SCALE")
    if qk_scale not in (None, 0):
        raise MSTError(f"the config sets QK_SCALE = {qk_scale}; only the default head_dim^-0.5 is supported")
    cfg = official_config(
        img_size=res0 * p, in_chans=in_chans, num_classes=K, patch_size=p, embed_dim=C, depths=tuple(depths),
        heads=tuple(heads), window=window, mlp_ratio=mlp_ratio, qkv_bias="layers.0.blocks.0.attn.qkv.bias" in sd,
        mlp_norm="layers.0.blocks.0.mlp.norm1.weight" in sd)
    if nf != cfg.embed_dim * 2 ** (len(depths) - 1):
        raise MSTError(f"head.weight has {nf} inputs; the last stage has {cfg.embed_dim * 2 ** (len(depths) - 1)} "
                       "channels")
    return cfg, notes


# ----------------------------------------------------------------------------------------
# Import


def _mask_ratio(config: dict | None) -> float:
    r = _get(config, "MODEL", "MST", "MASKING_RATIO")
    if r is None:
        return 0.0
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < 1:
        raise MSTError(f"the config's MASKING_RATIO {r!r} is not a ratio in [0, 1)")
    return float(r)


def _dataset(config: dict | None, num_classes: int, given: str | None) -> str:
    if given is not None:
        name = given.lower()
        if name not in DATASETS:
            raise MSTError(f"--dataset {given!r}: choose from {', '.join(DATASETS)}")
        if DATASETS[name][1] != num_classes:
            raise MSTError(f"--dataset {name} has {DATASETS[name][1]} classes; the checkpoint's head has {num_classes}")
        return DATASETS[name][0]
    named = _get(config, "DATA", "DATASET")
    if isinstance(named, str) and named.lower() in DATASETS and DATASETS[named.lower()][1] == num_classes:
        return DATASETS[named.lower()][0]
    if num_classes in BY_CLASSES:
        return DATASETS[BY_CLASSES[num_classes]][0]
    raise MSTError(f"the checkpoint's head has {num_classes} classes and names no known dataset: give --dataset")


def split_checkpoint(obj, path="checkpoint") -> tuple[dict, dict | None, dict]:
    """(state dict, config as plain data or None, metrics) of a loaded official file: the training
    dict of main.py (``model`` + ``config`` + ...) or a bare state dict."""
    if not isinstance(obj, dict):
        raise MSTError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    bare = "model" not in obj
    if not bare:
        sd = obj["model"]
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        raise MSTError(f"{path} has no 'model' entry (the official state dict); its keys: "
                       f"{', '.join(map(str, list(obj)[:8]))}")
    if not isinstance(sd, dict) or not sd:
        raise MSTError(f"{path}: 'model' must be a non-empty state dict, not {type(sd).__name__}")
    if all(isinstance(k, str) and k.startswith("module.") for k in sd):     # saved from the DDP wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise MSTError(f"{path}: state dict entry {k!r} is a {type(v).__name__}, not a tensor")
    config = None
    if not bare and obj.get("config") is not None:
        try:
            config = plain(obj["config"], "the config")
        except RecursionError:
            raise MSTError(f"{path}: its config is nested too deeply to be a config") from None
        if not isinstance(config, dict):
            raise MSTError(f"{path}: 'config' is a {type(config).__name__}, not a config node")
    metrics = {}
    for k in ("max_accuracy", "epoch"):
        v = None if bare else obj.get(k)
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            metrics[f"official_{k}"] = v
    return sd, config, metrics


def convert_state_dict(sd: dict, cfg: MSTConfig) -> dict:
    """Our state dict for an official one; refuses (naming the first mismatch) an unknown key, a
    missing key, a wrong shape, a derived buffer that differs from ours, or a NaN/inf weight."""
    layout = official_layout(cfg)
    table = {k: (shape, ours) for k, shape, ours in layout}
    for k, v in sd.items():
        if k not in table:
            raise MSTError(f"unexpected key {k} (shape {tuple(v.shape)}): not in the official layout of the "
                           f"inferred architecture")
        if tuple(v.shape) != table[k][0]:
            raise MSTError(f"{k} has shape {tuple(v.shape)}; the inferred architecture needs {table[k][0]}")
    for k, _, _ in layout:
        if k not in sd:
            raise MSTError(f"the state dict lacks {k}")
    geo = stage_geometry(cfg)
    out = {}
    for k, shape, ours in layout:
        v = sd[k]
        if ours is None:
            s = int(k.split(".")[1])
            dim, res, w, shift = geo[s]
            ref = shift_attention_mask(res, res, w, shift) if k.endswith("attn_mask") else relative_position_index(w)
            if not torch.equal(v.to(ref.dtype), ref):
                what = "shift mask" if k.endswith("attn_mask") else "relative-position index"
                raise MSTError(f"{k} differs from the {what} of a {res}x{res} grid with window {w}: a different "
                               "window scheme, not supported")
            continue
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise MSTError(f"{k} holds NaN or infinite values")
        if k.endswith("num_batches_tracked"):
            out[ours] = v.to(torch.long).reshape(())
        else:
            if not v.is_floating_point():
                raise MSTError(f"{k} is a {v.dtype} tensor, not floating point")
            out[ours] = v.detach().to(torch.float32).reshape(shape if not k.endswith(".up") else ()).clone()
    return out


def import_official(path, dataset: str | None = None, img_size: int | None = None):
    """(our model in eval mode, info dict with mask, dataset, metrics, notes) for an official checkpoint."""
    obj = read_official(path)
    sd, config, metrics = split_checkpoint(obj, path)
    try:
        cfg, notes = infer_config(sd, config, img_size)
        new_sd = convert_state_dict(sd, cfg)
    except MSTError as e:
        raise MSTError(f"{path}: {e}") from None
    name = _dataset(config, cfg.num_classes, dataset)
    ratio = _mask_ratio(config)
    model = MST(cfg)
    model.load_state_dict(new_sd, strict=True)
    model.eval()
    mask = {s: ratio for s in ("Q", "K", "A")} if ratio > 0 else {}
    return model, {"mask": mask, "dataset": name, "metrics": metrics, "notes": notes}


# ----------------------------------------------------------------------------------------
# CLI


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import-official", help="convert a checkpoint of the paper's own code (bic-L/Masked-Spiking-Transformer)",
        description="Reads a checkpoint saved by the official MST code (e.g. Cifar10_checkpoint.pth) without "
                    "running pickled code, infers the architecture from its weights, maps every weight onto "
                    "mst_lava's MST with the official topology (docs/official-mst.md) and writes an mst_lava "
                    "checkpoint for snn-eval, mst-export, run and verify. The masking ratio (Q, K, A) and the "
                    "dataset come from the file's config.")
    p.add_argument("checkpoint", type=at.path_text, help="the official .pth file")
    p.add_argument("-o", "--out", type=at.path_text, required=True, help="the mst_lava checkpoint to write (.pt)")
    p.add_argument("--dataset", default=None, choices=tuple(DATASETS),
                   help="the dataset it was trained on (default: from its config, else from its number of classes)")
    p.add_argument("--img-size", type=at.positive_int, default=None,
                   help="input side, only for a file without config whose weights do not show it")
    p.add_argument("--preprocessing", default="official", choices=("official", "ours"),
                   help="the dataset the checkpoint records, which snn-eval, mst-export, run and verify then use: "
                        "official (default) = the paper code's image preprocessing (dataset cifar10-official, "
                        "cifar100-official or imagenet-official: PIL resize of the uint8 image and their CIFAR "
                        "normalization; bicubic ImageNet resize), ours = this project's loaders (cifar10, ...)")
    p.set_defaults(func=run_import)


def run_import(args) -> int:
    from mst_lava.checkpoint import check_output_file, save_checkpoint
    check_output_file(args.out, "-o", inputs=[args.checkpoint])
    model, info = import_official(args.checkpoint, args.dataset, args.img_size)
    for n in info["notes"]:
        print(f"note: {n}")
    dataset = f"{info['dataset']}-official" if args.preprocessing == "official" else info["dataset"]
    save_checkpoint(args.out, model, arch="mst", mask=info["mask"], metrics=info["metrics"], dataset=dataset)
    c = model.cfg
    mask = " ".join(f"{k}={v:g}" for k, v in info["mask"].items()) or "none"
    print(f"imported {args.checkpoint}: {dataset}, {c.img_size}x{c.img_size}x{c.in_chans}, "
          f"patch {c.patch_size}, embed {c.embed_dim}, depths {list(c.depths)}, heads {list(c.heads)}, "
          f"window {c.window}, MLP x{c.mlp_ratio:g}"
          f"{' with BN' if c.mlp_norm else ''}, {c.num_classes} classes, masking {mask}; wrote {args.out}")
    return 0
