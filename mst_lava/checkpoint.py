"""Checkpoints: state dict + model config + metrics, written atomically, read with weights_only=True.

(Output-path checks and ``atomic_write`` are in :mod:`mst_lava.fileio`, re-exported here.)

Layout of the saved dict (plain containers and tensors only, so ``weights_only`` loads it):

    {"format": "mst_lava.checkpoint", "version": 1,
     "arch": "mst" | "resnet18" | "vgg16",
     "config": {...},            # the model config as a dict (MSTConfig.to_dict())
     "state_dict": {...},
     "mask": {"Q": 0.75, ...},   # RSM ratios the model was trained with
     "metrics": {...},           # e.g. {"ann_acc": 0.97, "epoch": 29}
     "dataset": "digits",
     "train_state": {...}}       # optional: optimizer/scheduler/epoch for --resume
"""
from __future__ import annotations

import errno
import io
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from mst_lava.errors import MSTError

# Output paths and atomic writes live in mst_lava/fileio.py (no torch: the format core and the Lava
# runtime write through it); re-exported here for the callers that import them from checkpoint.
from mst_lava.fileio import (  # noqa: F401
    LEGACY_TEMP_AGE_S,
    _check_target,
    _existing_folder,
    _pid_alive,
    _probe_writable,
    _reason,
    _same_file,
    _unlink,
    atomic_write,
    check_output_dir,
    check_output_file,
    ensure_dir,
    file_kind,
    remove_stale_temps,
)

FORMAT = "mst_lava.checkpoint"
VERSION = 1


# ----------------------------------------------------------------------------------------
# Checkpoints

def save_checkpoint(path, model: torch.nn.Module, *, arch: str = "mst", mask: dict | None = None,
                    metrics: dict | None = None, dataset: str | None = None,
                    train_state: dict | None = None) -> None:
    cfg = model.cfg.to_dict() if hasattr(model.cfg, "to_dict") else dict(model.cfg)
    ckpt = {"format": FORMAT, "version": VERSION, "arch": arch, "config": cfg,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "mask": dict(mask or {}), "metrics": dict(metrics or {}), "dataset": dataset}
    if train_state is not None:
        ckpt["train_state"] = train_state

    def _save(tmp):
        # serialized in memory first, then written with plain file I/O (as the HDF5 writer does): a failed
        # write (a full disk, a quota) is an OSError with its errno, reported as such by atomic_write, not
        # torch's zip-writer message ("[enforce fail at inline_container.cc] ... unexpected pos")
        buf = io.BytesIO()
        try:
            torch.save(ckpt, buf)
        except RuntimeError as e:
            raise OSError(errno.EIO, f"torch.save failed: {_first_line(e)}") from None
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
    atomic_write(path, _save, "checkpoint")


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def _sniff(path: Path) -> None:
    """Refuse, by its first bytes (:func:`mst_lava.fileio.file_kind`), a file that is no torch zip checkpoint,
    saying what it is instead."""
    kind = file_kind(path, "checkpoint")
    if kind == "zip":
        return
    raise MSTError({
        "empty": f"{path} is empty (0 bytes), not a checkpoint; re-create it with `mst train`",
        "hdf5": f"{path} is an HDF5 file (a network exported by mst-export?), not a checkpoint: give the .pt "
                "checkpoint written by `mst train`",
        "text": f"{path} is a text file, not a checkpoint: give the .pt checkpoint written by `mst train`",
        "pickle": f"{path} is a raw pickle or an old-style torch file, not an mst_lava checkpoint (a torch zip file "
                  "written by `mst train`); it was not unpickled",
    }.get(kind, f"{path} is not a checkpoint (not a torch zip file); give the .pt checkpoint written by "
                "`mst train`"))


def _check_archive(path: Path) -> None:
    """Before torch.load: the zip archive's members, by their central directory, declare no more data
    than the memory available (a zip bomb is not expanded), and every member's CRC-32 matches (a bit
    flipped inside a tensor is refused, naming the member, not loaded as a different weight)."""
    from mst_lava.resources import available_memory, fmt_bytes
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            declared = sum(i.file_size for i in infos)
            have = available_memory()
            if declared > have:
                big = max(infos, key=lambda i: i.file_size)
                raise MSTError(f"{path}: its zip members declare {fmt_bytes(declared)} of uncompressed data "
                               f"({big.filename}: {fmt_bytes(big.file_size)}), more than the {fmt_bytes(have)} of "
                               "memory available; the file is corrupt or hostile and was not loaded")
            bad = z.testzip()
    except MSTError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError, OSError) as e:
        raise MSTError(f"{path} is not a readable checkpoint (truncated or corrupt: {_first_line(e)}); re-create "
                       "it with `mst train`") from None
    if bad is not None:
        raise MSTError(f"{path} is corrupt: the zip member {bad} fails its CRC-32 check (a changed byte, e.g. a "
                       "disk or copy error); it was not loaded: re-create or re-copy it")


def read_checkpoint(path) -> dict[str, Any]:
    """Load and validate a checkpoint dict. Never unpickles arbitrary objects.

    Validated before any model is built: the container, the model config (types, ranges, and the
    memory the model would need), the weights against the config (names and shapes, on the meta
    device), finite weights, the stored mask and training state. Every failure is one MSTError
    naming the file and the field."""
    path = Path(path)
    if not path.exists():
        raise MSTError(f"checkpoint {path} does not exist; train one with `mst train ... --out {path}`")
    if path.is_dir():
        raise MSTError(f"checkpoint path {path} is a directory, not a .pt file")
    if not path.is_file():
        raise MSTError(f"checkpoint path {path} is not a regular file")
    _sniff(path)
    _check_archive(path)
    try:
        with warnings.catch_warnings():     # torch warns (on stderr) about sparse tensors it validates
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL [\w.]+", str(e))
        raise MSTError(f"{path} was refused: it holds objects other than tensors and plain containers"
                       f"{f' ({found.group(0)})' if found else ''}, so it was not written by mst_lava and is not "
                       "loaded") from None
    except Exception as e:  # noqa: BLE001 - whatever the zip/pickle reader raises, the file is damaged
        raise MSTError(f"{path} is not a readable checkpoint (truncated or corrupt: {_first_line(e)}); re-create "
                       "it with `mst train`") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise MSTError(f"{path} is a torch file but not an mst_lava checkpoint (no format tag)")
    if ckpt.get("version") != VERSION:
        raise MSTError(f"{path} has checkpoint version {ckpt.get('version')!r}; this mst_lava reads version {VERSION}")
    validate_checkpoint(ckpt, path)
    return ckpt


def _kind(v) -> str:
    return type(v).__name__


# the top-level entries a checkpoint may have (the layout above); an unknown one that holds tensors is
# refused (data nothing reads, e.g. a hidden payload or an inflated file), an unknown plain value is kept
KNOWN_KEYS = ("format", "version", "arch", "config", "state_dict", "mask", "metrics", "dataset", "train_state")


# the tensor dtypes a checkpoint may hold: the floating types of weights, buffers and optimizer state
# (`mst train` writes float32; import-official converts to float32; float16/bfloat16/float64 are exact or
# near-exact in float32), and int64 for BatchNorm's num_batches_tracked and step counters. Not fp8 (no
# arithmetic), not integers, bool or complex as weights (validate_checkpoint compares each weight's kind
# with the model's), not sparse or meta tensors.
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
TENSOR_DTYPES = (*FLOAT_DTYPES, torch.int64)


def _check_tensor_kind(v: torch.Tensor, where: str, dtypes: tuple | None = TENSOR_DTYPES) -> None:
    if v.layout != torch.strided:
        raise MSTError(f"{where} is a {str(v.layout).replace('torch.', '')} tensor; a checkpoint holds dense "
                       "tensors only")
    if v.device.type != "cpu":
        raise MSTError(f"{where} is a tensor on the {v.device.type!r} device, with no data in the file "
                       "(a meta tensor); the checkpoint is incomplete")
    if dtypes is not None and v.dtype not in dtypes:
        raise MSTError(f"{where} has dtype {str(v.dtype).replace('torch.', '')}; a checkpoint holds float32, "
                       "float16, bfloat16 or float64 tensors (int64 only for counters such as BatchNorm's "
                       "num_batches_tracked)")


def _collect_tensors(v, where: str, out: list, depth: int = 0) -> None:
    if isinstance(v, torch.Tensor):
        out.append((where, v))
    elif depth < 50 and isinstance(v, dict):
        for k, x in v.items():
            _collect_tensors(x, f"{where}.{k}", out, depth + 1)
    elif depth < 50 and isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            _collect_tensors(x, f"{where}[{i}]", out, depth + 1)


def _holds_tensor(v, depth: int = 0) -> bool:
    if isinstance(v, torch.Tensor):
        return True
    if depth > 50:
        return True     # nesting that deep is no plain config: treat it as data
    if isinstance(v, dict):
        return any(_holds_tensor(x, depth + 1) for x in v.values())
    if isinstance(v, (list, tuple)):
        return any(_holds_tensor(x, depth + 1) for x in v)
    return False


def validate_checkpoint(ckpt: dict, path="checkpoint") -> None:
    """The checks of :func:`read_checkpoint` on a loaded dict (MSTError naming ``path`` and the field)."""
    for key in ("arch", "config", "state_dict"):
        if key not in ckpt:
            raise MSTError(f"{path} lacks the {key!r} entry")
    for key, v in ckpt.items():
        if key not in KNOWN_KEYS and _holds_tensor(v):
            raise MSTError(f"{path}: unknown top-level entry {key!r} holds tensors; an mst_lava checkpoint has "
                           f"only {', '.join(KNOWN_KEYS)}; it was not loaded")
    if not isinstance(ckpt["arch"], str):
        raise MSTError(f"{path}: 'arch' must be a name such as 'mst', not {_kind(ckpt['arch'])}")
    if not isinstance(ckpt["config"], dict):
        raise MSTError(f"{path}: 'config' must be a dict of model fields, not {_kind(ckpt['config'])}")
    sd = ckpt["state_dict"]
    if not isinstance(sd, dict):
        raise MSTError(f"{path}: 'state_dict' must be a dict of tensors, not {_kind(sd)}")
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise MSTError(f"{path}: state_dict entry {k!r} is a {_kind(v)}, not a tensor")
        _check_tensor_kind(v, f"{path}: weight {k}")
    ts_tensors = []
    _collect_tensors(ckpt.get("train_state"), "train_state", ts_tensors)
    for where, v in ts_tensors:
        _check_tensor_kind(v, f"{path}: {where}", None)   # any dtype: RNG states are uint8
    for key, types, what in (("mask", (dict,), "a dict of SITE: ratio"), ("metrics", (dict,), "a dict"),
                             ("dataset", (str,), "a dataset name"), ("train_state", (dict,), "a dict")):
        v = ckpt.get(key)
        if v is not None and not isinstance(v, types):
            raise MSTError(f"{path}: {key!r} must be {what}, not {_kind(v)}")
    ts = ckpt.get("train_state")
    if ts is not None:
        ep = ts.get("epoch")
        if isinstance(ep, bool) or not isinstance(ep, int) or ep < 0 or not isinstance(ts.get("optimizer"), dict):
            raise MSTError(f"{path}: 'train_state' needs an 'epoch' integer >= 0 and an 'optimizer' dict")
    from mst_lava.model import required_config_keys
    missing = [k for k in required_config_keys(ckpt["arch"]) if k not in ckpt["config"]]
    if missing:
        raise MSTError(f"{path}: its model config lacks {missing[0]!r}"
                       f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}, which changes what the model "
                       "computes; it is not filled with a default: re-create the checkpoint with `mst train`")
    meta = meta_model(ckpt, path)
    expected = meta.state_dict()
    for k, t in expected.items():
        if k not in sd:
            raise MSTError(f"{path}: weights do not fit its own config: {k} is missing")
        if tuple(sd[k].shape) != tuple(t.shape):
            raise MSTError(f"{path}: weights do not fit its own config: {k} has shape {tuple(sd[k].shape)}, the "
                           f"config gives {tuple(t.shape)}")
    extra = [k for k in sd if k not in expected]
    if extra:
        raise MSTError(f"{path}: weights do not fit its own config: unexpected entry {extra[0]}")
    for k, t in expected.items():
        if t.is_floating_point() != sd[k].is_floating_point():
            want = ("floating point (float32, float16, bfloat16 or float64)" if t.is_floating_point()
                    else str(t.dtype).replace("torch.", ""))
            have = str(sd[k].dtype).replace("torch.", "")
            raise MSTError(f"{path}: weight {k} is {have}; it must be {want}: it would be cast silently to another "
                           "value: re-create the checkpoint with `mst train`")
    from mst_lava.resources import available_memory, fmt_bytes
    need = sum(t.numel() * t.element_size() for t in list(meta.parameters()) + list(meta.buffers()))
    have = available_memory()
    if need > have:
        raise MSTError(f"{path}: the model its config describes needs {fmt_bytes(need)} of memory, more than the "
                       f"{fmt_bytes(have)} available here")
    for k, v in sd.items():
        if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all()):
            n = int((~torch.isfinite(v)).sum())
            raise MSTError(f"{path}: weight {k} holds {n} NaN or infinite value{'s' if n > 1 else ''} (training "
                           "diverged?); retrain it, e.g. with a lower --lr")
    _check_value_ranges(sd, meta, path)
    from mst_lava.model.rsm import check_mask_sites, parse_mask_spec
    try:
        check_mask_sites(parse_mask_spec(ckpt.get("mask") or {}), meta, "stored mask")
    except MSTError as e:
        raise MSTError(f"{path}: {e}") from None


def _check_value_ranges(sd: dict, meta: torch.nn.Module, path) -> None:
    """Values a model cannot compute with, though finite: a QCFS threshold λ that is zero, negative or
    denormal (x/λ overflows, the quantizer's steps vanish), a negative BatchNorm running variance (a NaN
    square root). An MSTError names the first such entry."""
    from mst_lava.model.qcfs import QCFS
    tiny = torch.finfo(torch.float32).tiny
    for name, m in meta.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(m, QCFS):
            k = prefix + "lam"
            v = sd[k].detach().to(torch.float64)
            if bool((v < tiny).any()):
                raise MSTError(f"{path}: QCFS threshold {k} is {float(v.min()):.6g}; it must be positive and at "
                               f"least {tiny:.3g} (a normal float32); retrain or re-import the model")
        elif isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            k = prefix + "running_var"
            v = sd.get(k)
            if v is not None and bool((v.detach().to(torch.float64) < 0).any()):
                n = int((v < 0).sum())
                raise MSTError(f"{path}: BatchNorm variance {k} holds {n} negative value{'s' if n > 1 else ''} "
                               f"(min {float(v.min()):.6g}); a variance is never negative: the file is corrupt")


def meta_model(ckpt: dict, path="checkpoint") -> torch.nn.Module:
    """The model a checkpoint's config describes, built on the meta device (no memory, no weights):
    its structure, parameter shapes and sites, to validate against before anything is allocated."""
    from mst_lava.model import build_model_from_config
    try:
        with torch.device("meta"):
            return build_model_from_config(ckpt["arch"], ckpt["config"])
    except MSTError as e:
        raise MSTError(f"{path}: {e}") from None
    except (RuntimeError, ValueError, TypeError, OverflowError, ArithmeticError, MemoryError) as e:
        raise MSTError(f"{path}: its model config cannot be built ({_first_line(e)})") from None


def model_from_checkpoint(ckpt: dict) -> torch.nn.Module:
    """Build the model a checkpoint describes and load its weights."""
    from mst_lava.model import build_model_from_config
    model = build_model_from_config(ckpt["arch"], ckpt["config"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as e:
        raise MSTError(f"checkpoint weights do not fit its own config: {_first_line(e)}") from None
    return model


def weights_fingerprint(state_dict) -> str:
    """SHA-256 (hex) of a model's weights: over the state dict's entries in sorted key order, each key's UTF-8
    name, its shape and the bytes of its float32 numpy copy. ``mst-export`` records it as the file's root
    attribute ``source_sha256``; ``mst verify`` recomputes it from the checkpoint it is given."""
    import hashlib
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key]
        if not isinstance(t, torch.Tensor):
            continue
        a = t.detach().to("cpu", torch.float32).contiguous().numpy()
        h.update(key.encode("utf-8") + b"\0" + repr(tuple(a.shape)).encode("ascii") + b"\0")
        h.update(a.tobytes())
    return h.hexdigest()


def load_checkpoint(path) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, checkpoint dict)."""
    ckpt = read_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    model.eval()
    return model, ckpt
