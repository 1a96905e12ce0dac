"""Static image datasets as arrays: the file readers of digits, Fashion-MNIST and CIFAR-10/100.

numpy only (scikit-learn for digits). :mod:`mst_lava.data.static` turns an :class:`ImageArrays`
into a torch dataset for training and the torch executors; :meth:`ImageArrays.eval_images`
prepares test images the same way without torch, for the Lava runtime (``mst run`` on a Lava
backend imports no torch). Every reader refuses a bad file with one MSTError naming it.
"""
from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from mst_lava.errors import MSTError

FMNIST_DEFAULT = "/usr/share/datasets/fashion-mnist"
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot")


@dataclass
class ImageArrays:
    """One split of a static dataset: raw images ``(N, C, H, W)`` (uint8, or float32 for digits) and
    labels, with how to scale and normalize them and the training augmentation that suits them."""
    images: np.ndarray
    labels: np.ndarray
    scale: float            # raw value → [0, 1]
    mean: tuple             # per channel (or one value for all)
    std: tuple
    flip: bool              # horizontal flip is a valid augmentation
    pad: int                # random-crop padding
    classes: tuple

    def __len__(self) -> int:
        return len(self.labels)

    def eval_images(self, start: int, stop: int, img_size: int, in_chans: int) -> np.ndarray | None:
        """Images ``start..stop-1`` as float32 ``(n, in_chans, img_size, img_size)``, scaled and normalized
        bit for bit as ``static.TensorImages`` does without augmentation; None where that needs torch
        (a resize, or averaging colour channels into one)."""
        x = self.images[start:stop]
        C, H, W = x.shape[1:]
        mean = np.asarray(self.mean, dtype=np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(-1, 1, 1)
        if (H, W) != (img_size, img_size) or (C != in_chans and C != 1) or mean.shape[0] not in (1, in_chans):
            return None
        x = x.astype(np.float32) / np.float32(self.scale)
        if C != in_chans:
            x = np.broadcast_to(x, (x.shape[0], in_chans, H, W))
        return ((x - mean) / std).astype(np.float32, copy=False)


def digits(root, split) -> ImageArrays:
    """scikit-learn's 8×8 digits, a fixed stratified 80/20 split (random_state=0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    idx_tr, idx_te = train_test_split(np.arange(len(d.target)), test_size=0.2, random_state=0,
                                      stratify=d.target)
    idx = idx_tr if split == "train" else idx_te
    images = d.images[idx].astype(np.float32)[:, None]
    return ImageArrays(images, d.target[idx], scale=16.0, mean=(0.30,), std=(0.38,), flip=False, pad=1,
                       classes=tuple(str(i) for i in range(10)))


IDX_KINDS = {2051: "images", 2049: "labels"}


def read_idx(path: Path, kind: str | None = None) -> np.ndarray:
    """Read an idx (optionally gzip) file: images (N, rows, cols) uint8 or labels (N,) uint8.

    ``kind`` ("images" or "labels") is what the caller expects. A file that is empty, truncated,
    has zero rows, declares sizes beyond the memory available, or is the other kind gives an
    MSTError naming it. Only the declared payload is decompressed (a gzip bomb is not expanded)."""
    import zlib

    from mst_lava.fileio import check_input_file
    from mst_lava.resources import available_memory, fmt_bytes
    path = check_input_file(path, "dataset file")
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise MSTError(f"{path} is too short to be an idx file ({len(head)} bytes)")
            magic, n = struct.unpack(">II", head)
            if magic not in IDX_KINDS:
                raise MSTError(f"{path} has idx magic {magic}; expected 2051 (images) or 2049 (labels)")
            if kind is not None and IDX_KINDS[magic] != kind:
                raise MSTError(f"{path} is an idx {IDX_KINDS[magic]} file where the {kind} file belongs")
            if n == 0:
                raise MSTError(f"{path} holds zero {IDX_KINDS[magic]}; re-download it")
            if magic == 2051:
                dims = f.read(8)
                if len(dims) < 8:
                    raise MSTError(f"{path} is truncated: its header ends before the image size")
                rows, cols = struct.unpack(">II", dims)
                if rows == 0 or cols == 0:
                    raise MSTError(f"{path} declares images of {rows}x{cols} pixels")
                shape = (n, rows, cols)
            else:
                shape = (n,)
            expected = int(np.prod(shape, dtype=object))
            if expected > available_memory():
                raise MSTError(f"{path} declares {fmt_bytes(expected)} of data, more than the memory available; "
                               "the file is corrupt")
            data = f.read(expected + 1)
    except MSTError:
        raise
    except (OSError, EOFError, zlib.error) as e:
        raise MSTError(f"{path} is not a readable idx file ({e}); re-download it") from None
    if len(data) > expected:
        raise MSTError(f"{path} is corrupt: it holds more than the {expected} payload bytes its header declares")
    if len(data) < expected:
        raise MSTError(f"{path} is truncated or corrupt: {len(data)} payload bytes, expected {expected}")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def check_labels(labels: np.ndarray, n_classes: int, where) -> None:
    """Every label in [0, n_classes): an MSTError naming ``where`` and the first bad one otherwise."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise MSTError(f"{where}: labels must be a list of integers, not an array of {labels.dtype} "
                       f"{tuple(labels.shape)}")
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        i = int(bad[0])
        raise MSTError(f"{where}: label {int(labels[i])} (sample {i}) is outside 0..{n_classes - 1}; "
                       f"the dataset has {n_classes} classes ({bad.size} bad label{'s' if bad.size > 1 else ''})")


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (root / name).exists():
            return root / name
    raise MSTError(f"Fashion-MNIST: {root / (stem + '.gz')} not found. Expected in {root}: "
                   "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
                   "t10k-labels-idx1-ubyte.gz (Debian: apt-get install dataset-fashion-mnist, "
                   f"files in {FMNIST_DEFAULT}); point --data at the folder holding them")


def fmnist(root, split) -> ImageArrays:
    """Fashion-MNIST from its idx (gzip) files in ``root`` (default: Debian's dataset-fashion-mnist)."""
    root = Path(root or FMNIST_DEFAULT)
    if not root.is_dir():
        _find(root, "train-images-idx3-ubyte")  # raises with the full explanation
    pre = "train" if split == "train" else "t10k"
    img_path, lbl_path = _find(root, f"{pre}-images-idx3-ubyte"), _find(root, f"{pre}-labels-idx1-ubyte")
    images = read_idx(img_path, "images")
    labels = read_idx(lbl_path, "labels")
    if len(images) != len(labels):
        raise MSTError(f"Fashion-MNIST: {img_path} holds {len(images)} images but {lbl_path} holds "
                       f"{len(labels)} labels")
    check_labels(labels, len(FMNIST_CLASSES), lbl_path)
    return ImageArrays(images[:, None], labels, scale=255.0, mean=(0.2860,), std=(0.3530,), flip=True, pad=2,
                       classes=FMNIST_CLASSES)


class _SafeUnpickler(pickle.Unpickler):
    """CIFAR's python batches are pickles: allow numpy arrays and builtins, nothing else."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_cifar_batch(path: Path) -> dict:
    if not path.exists():
        raise MSTError(f"CIFAR: {path} not found")
    from mst_lava.fileio import check_input_file
    check_input_file(path, "CIFAR: dataset file")
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(f, encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise MSTError(f"CIFAR: {path} is not a valid CIFAR python batch ({e})") from None
    if not isinstance(d, dict):
        raise MSTError(f"CIFAR: {path} is not a valid CIFAR python batch (it holds a {type(d).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def cifar(root, split, n_classes: int = 10) -> ImageArrays:
    """CIFAR-10/100 from the python batches in ``root``."""
    if root is None:
        raise MSTError("CIFAR needs --data DIR: the folder cifar-10-batches-py (data_batch_1..5, test_batch, "
                       "batches.meta) or cifar-100-python (train, test, meta), from "
                       "https://www.cs.toronto.edu/~kriz/cifar.html (python version)")
    root = Path(root)
    if n_classes == 10:
        sub = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key = "labels"
    else:
        sub = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
        files = ["train" if split == "train" else "test"]
        label_key = "fine_labels"
    batches = [_load_cifar_batch(sub / f) for f in files]
    try:
        images = np.concatenate([np.asarray(b["data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in batches])
        labels = np.concatenate([np.asarray(b[label_key]) for b in batches])
    except (KeyError, ValueError, TypeError) as e:
        raise MSTError(f"CIFAR batches in {sub} lack the expected 'data'/{label_key!r} entries ({e})") from None
    if len(images) == 0:
        raise MSTError(f"CIFAR batches in {sub} ({', '.join(files)}) hold zero images")
    if len(images) != len(labels):
        raise MSTError(f"CIFAR batches in {sub} ({', '.join(files)}): {len(images)} images but {len(labels)} labels")
    check_labels(labels, n_classes, f"CIFAR batches in {sub} ({', '.join(files)})")
    mean, std = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)) if n_classes == 10 else \
        ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    return ImageArrays(images, labels, scale=255.0, mean=mean, std=std, flip=True, pad=4,
                       classes=tuple(str(i) for i in range(n_classes)))


# dataset name → reader(root, split); ``imagenet`` (image folders, torchvision) has no array reader
ARRAYS = {"digits": digits, "fmnist": fmnist, "cifar10": partial(cifar, n_classes=10),
          "cifar100": partial(cifar, n_classes=100)}
# the same files with the preprocessing of the paper's own code (static.py; docs/official-mst.md): the default
# dataset of a checkpoint made by `mst import-official`
OFFICIAL_NAMES = ("cifar10-official", "cifar100-official", "imagenet-official")
STATIC_NAMES = ("digits", "fmnist", "cifar10", "cifar100", "imagenet") + OFFICIAL_NAMES
