"""Checkpoints: state dict + model config + metrics, written atomically, read with weights_only=True.

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

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from mst_lava.errors import MSTError

FORMAT = "mst_lava.checkpoint"
VERSION = 1


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: a failure leaves nothing half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path, model: torch.nn.Module, *, arch: str = "mst", mask: dict | None = None,
                    metrics: dict | None = None, dataset: str | None = None,
                    train_state: dict | None = None) -> None:
    cfg = model.cfg.to_dict() if hasattr(model.cfg, "to_dict") else dict(model.cfg)
    ckpt = {"format": FORMAT, "version": VERSION, "arch": arch, "config": cfg,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "mask": dict(mask or {}), "metrics": dict(metrics or {}), "dataset": dataset}
    if train_state is not None:
        ckpt["train_state"] = train_state
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def read_checkpoint(path) -> dict[str, Any]:
    """Load and validate a checkpoint dict. Never unpickles arbitrary objects."""
    path = Path(path)
    if not path.exists():
        raise MSTError(f"checkpoint {path} does not exist; train one with `mst train ... --out {path}`")
    if path.is_dir():
        raise MSTError(f"checkpoint path {path} is a directory, not a .pt file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise MSTError(f"{path} was refused: it holds objects other than tensors and plain containers "
                       f"(possibly a malicious pickle). Only checkpoints written by mst_lava load. "
                       f"Detail: {str(e).splitlines()[0]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise MSTError(f"{path} is not a readable checkpoint (truncated or corrupt: "
                       f"{str(e).splitlines()[0] if str(e) else type(e).__name__}); re-create it with `mst train`") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise MSTError(f"{path} is a torch file but not an mst_lava checkpoint (no format tag)")
    if ckpt.get("version") != VERSION:
        raise MSTError(f"{path} has checkpoint version {ckpt.get('version')}; this mst_lava reads version {VERSION}")
    for key in ("arch", "config", "state_dict"):
        if key not in ckpt:
            raise MSTError(f"{path} lacks the {key!r} entry")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> torch.nn.Module:
    """Build the model a checkpoint describes and load its weights."""
    from mst_lava.model import build_model_from_config
    model = build_model_from_config(ckpt["arch"], ckpt["config"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise MSTError(f"checkpoint weights do not fit its own config: {str(e).splitlines()[0]}") from None
    return model


def load_checkpoint(path) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, checkpoint dict)."""
    ckpt = read_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    model.eval()
    return model, ckpt
