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

import errno
import os
import pickle
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mst_lava.errors import MSTError

FORMAT = "mst_lava.checkpoint"
VERSION = 1

# ----------------------------------------------------------------------------------------
# Output paths and atomic writes

LEGACY_TEMP_AGE_S = 600     # pid-less temp files (older versions) count as stale after this long


def _reason(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device (the disk is full)"
    return e.strerror or str(e) or type(e).__name__


def _check_target(path: Path, what: str) -> None:
    """``path`` is absent or a regular file (not a directory, symlink, FIFO or device)."""
    if not str(path).strip():
        raise MSTError(f"{what} is empty: give a file name")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        return          # a file sits in the way: reported by _existing_folder
    except OSError as e:
        raise MSTError(f"{what} {path}: cannot inspect it ({_reason(e)})") from None
    if stat.S_ISLNK(st.st_mode):
        raise MSTError(f"{what} {path} is a symbolic link; give the path of a regular file (it would be "
                       "replaced by a file, not written through)")
    if stat.S_ISDIR(st.st_mode):
        raise MSTError(f"{what} {path} is a directory; give a file name (e.g. inside it)")
    if not stat.S_ISREG(st.st_mode):
        raise MSTError(f"{what} {path} is not a regular file (a device, FIFO or socket); give a regular file name")


def _existing_folder(path: Path, what: str) -> Path:
    """The nearest existing ancestor folder of ``path`` (which mkdir would create the rest in)."""
    a = path.parent if str(path.parent) else Path(".")
    while True:
        try:
            st = os.stat(a)
        except FileNotFoundError:
            if a == a.parent:
                raise MSTError(f"{what} {path}: no existing folder above it") from None
            a = a.parent
            continue
        except NotADirectoryError:
            a = a.parent
            continue
        except OSError as e:
            raise MSTError(f"{what} {path}: cannot inspect {a} ({_reason(e)})") from None
        if not stat.S_ISDIR(st.st_mode):
            raise MSTError(f"{what} {path} lies under {a}, which is a file, not a folder")
        return a


def _probe_writable(folder: Path, path: Path, what: str) -> None:
    """Create and remove a file in ``folder``: the one test that also holds for root and read-only mounts."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".mst_write_probe.", dir=folder)
    except OSError as e:
        raise MSTError(f"{what} {path}: cannot write in the folder {folder} ({_reason(e)})") from None
    os.close(fd)
    os.unlink(probe)


def _same_file(a: Path, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError, TypeError):
        return False


def check_output_file(path, what: str = "output file", inputs=()) -> Path:
    """Refuse, before any work, an output file that cannot be written: a directory, a symlink, a
    device/FIFO, a path under a regular file, an unwritable folder, or one of the command's own
    ``inputs``. Removes stale temp files of an earlier killed write to it. Returns ``Path(path)``."""
    path = Path(path)
    _check_target(path, what)
    for inp in inputs:
        if inp is not None and _same_file(path, inp):
            raise MSTError(f"{what} {path} is also this command's input {inp}; writing it would destroy the "
                           "input: choose another output name")
    _probe_writable(_existing_folder(path, what), path, what)
    remove_stale_temps(path)
    return path


def check_output_dir(path, what: str = "report folder") -> Path:
    """Refuse, before any work, a folder that cannot be written into: a regular file or device, a
    path under a regular file, or an unwritable folder. Returns ``Path(path)``."""
    path = Path(path)
    if not str(path).strip():
        raise MSTError(f"{what} is empty: give a folder name")
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        _probe_writable(_existing_folder(path, what), path, what)
        return path
    except OSError as e:
        raise MSTError(f"{what} {path}: cannot inspect it ({_reason(e)})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MSTError(f"{what} {path} exists and is not a folder; give a folder name")
    _probe_writable(path, path, what)
    return path


def ensure_dir(path, what: str = "folder") -> Path:
    """``mkdir -p path`` with a one-line MSTError naming the path."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise MSTError(f"{what} {path} exists and is not a folder") from None
    except OSError as e:
        if isinstance(e, NotADirectoryError) or e.errno == errno.ENOTDIR:
            raise MSTError(f"{what} {path} lies under a file, not a folder") from None
        raise MSTError(f"cannot create {what} {path}: {_reason(e)}") from None
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    try:     # a zombie (killed, not yet reaped) writes nothing any more
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale_temps(path) -> list[Path]:
    """Remove temp files of ``path`` (``.NAME.<pid>.<random>.tmp``) whose writer no longer runs, and
    pid-less ones (``.NAME.<random>.tmp``, older versions) not touched for 10 minutes."""
    path = Path(path)
    prefix = f".{path.name}."
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent if str(path.parent) else "."))
    except OSError:
        return removed
    now = time.time()
    for e in entries:
        if not (e.name.startswith(prefix) and e.name.endswith(".tmp")):
            continue
        middle = e.name[len(prefix):-len(".tmp")]
        m = re.fullmatch(r"(\d+)\.\w+", middle)
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if m:
            pid = int(m.group(1))
            if pid == os.getpid() or _pid_alive(pid):
                continue
        elif not re.fullmatch(r"\w{8}", middle) or now - st.st_mtime < LEGACY_TEMP_AGE_S:
            continue
        try:
            os.unlink(e.path)
            removed.append(Path(e.path))
        except OSError:
            pass
    return removed


def atomic_write(path: str | os.PathLike, write, what: str = "output") -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: a failure leaves nothing half-written.

    The temp file ``.NAME.<pid>.<random>.tmp`` sits next to ``path``; temp files of earlier writers
    that were killed are removed first. ``path`` must be absent or a regular file. An OSError (full
    disk, read-only folder, ...) becomes a one-line MSTError naming ``path``; the temp file is removed
    on any failure, Ctrl-C included."""
    path = Path(path)
    _check_target(path, what)
    ensure_dir(path.parent if str(path.parent) else Path("."), f"the folder of {what}")
    remove_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise MSTError(f"cannot write {what} {path}: {_reason(e)}") from None
    os.close(fd)
    from mst_lava.interrupts import check as _interrupt_pending
    try:
        write(tmp)
        _interrupt_pending()        # a Ctrl-C/SIGTERM swallowed inside write() (a callback) commits nothing
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        _unlink(tmp)
        raise MSTError(f"cannot write {what} {path}: {_reason(e)}") from None
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(p) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass
    except OSError:
        pass


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
        try:
            torch.save(ckpt, tmp)
        except RuntimeError as e:   # torch's zip writer reports a failed write (e.g. a full disk) this way
            raise OSError(errno.EIO, f"torch.save failed: {_first_line(e)}") from None
    atomic_write(path, _save, "checkpoint")


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _sniff(path: Path) -> None:
    """Refuse, by its first bytes, a file that is no torch zip checkpoint, saying what it is instead."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise MSTError(f"cannot read checkpoint {path}: {_reason(e)}") from None
    if not head:
        raise MSTError(f"{path} is empty (0 bytes), not a checkpoint; re-create it with `mst train`")
    if head.startswith(ZIP_MAGIC):
        return
    if any(head[o:o + 8] == HDF5_MAGIC for o in (0, 512, 1024, 2048)):
        raise MSTError(f"{path} is an HDF5 file (a network exported by mst-export?), not a checkpoint: give the "
                       ".pt checkpoint written by `mst train`")
    if b"\0" not in head:
        try:
            head[:-4].decode("utf-8")
            text = True
        except UnicodeDecodeError:
            text = False
        if text:
            raise MSTError(f"{path} is a text file, not a checkpoint: give the .pt checkpoint written by `mst train`")
    if head[:1] == b"\x80":
        raise MSTError(f"{path} is a raw pickle or an old-style torch file, not an mst_lava checkpoint (a torch zip "
                       "file written by `mst train`); it was not unpickled")
    raise MSTError(f"{path} is not a checkpoint (not a torch zip file); give the .pt checkpoint written by "
                   "`mst train`")


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
    try:
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


def validate_checkpoint(ckpt: dict, path="checkpoint") -> None:
    """The checks of :func:`read_checkpoint` on a loaded dict (MSTError naming ``path`` and the field)."""
    for key in ("arch", "config", "state_dict"):
        if key not in ckpt:
            raise MSTError(f"{path} lacks the {key!r} entry")
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
    from mst_lava.model.rsm import check_mask_sites, parse_mask_spec
    try:
        check_mask_sites(parse_mask_spec(ckpt.get("mask") or {}), meta, "stored mask")
    except MSTError as e:
        raise MSTError(f"{path}: {e}") from None


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


def load_checkpoint(path) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, checkpoint dict)."""
    ckpt = read_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    model.eval()
    return model, ckpt
