"""Static image datasets read from local files: digits, Fashion-MNIST, CIFAR-10/100, ImageNet folders.

Every dataset yields ``(image, label)`` with ``image`` a float32 tensor ``(C, H, W)``,
normalized, at the model's input size. Training augmentation is random crop (with
padding) and horizontal flip — no flip for digits, whose mirror images are other digits.
"""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from mst_lava.errors import MSTError

FMNIST_DEFAULT = "/usr/share/datasets/fashion-mnist"
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot")


class TensorImages(Dataset):
    """Images held in memory as one uint8/float array ``(N, C, H, W)`` plus labels.

    :meth:`batch` prepares many images at once with tensor operations (scale, resize,
    augmentation, normalization); ``dataset[i]`` is the same code on one index, so the
    per-sample ``DataLoader`` path and the in-memory :class:`BatchLoader` give the same images.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, scale: float, mean, std,
                 img_size: int, in_chans: int, augment: bool, flip: bool, pad: int, classes):
        self.images = torch.from_numpy(np.array(images))  # own, writable copy
        self.labels = torch.as_tensor(np.array(labels), dtype=torch.long)
        self.scale, self.img_size, self.in_chans = scale, img_size, in_chans
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        if self.mean.shape[0] != in_chans:
            self.mean, self.std = self.mean.mean().view(1, 1, 1), self.std.mean().view(1, 1, 1)
        self.augment, self.flip, self.pad = augment, flip, pad
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.transform = None   # optional extra tensor transform (e.g. pepper noise), applied last, per image

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x, y = self.batch(torch.tensor([int(i)]))
        return x[0], int(y[0])

    def batch(self, idx: torch.Tensor, generator: torch.Generator | None = None):
        """Images ``idx`` as a normalized float32 batch ``(B, C, H, W)`` and their labels."""
        x = self.images[idx].to(torch.float32).div_(self.scale)
        if x.shape[1] != self.in_chans:
            if x.shape[1] == 1:
                x = x.expand(-1, self.in_chans, -1, -1)
            elif self.in_chans == 1:
                x = x.mean(1, keepdim=True)
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        if self.augment:
            x = random_crop_flip(x, self.pad, self.flip, generator)
        x = (x - self.mean) / self.std
        if self.transform is not None:
            x = torch.stack([self.transform(xi) for xi in x])
        return x, self.labels[idx]


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator | None = None):
    """Per image of a batch ``(B, C, H, W)``: a random crop of the zero-padded image, then a
    horizontal flip with probability ½; one gather for the whole batch."""
    B, _, H, W = x.shape
    rows = torch.arange(H).expand(B, H)
    cols = torch.arange(W).expand(B, W)
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))
        off = torch.randint(0, 2 * pad + 1, (2, B, 1), generator=generator)
        rows, cols = rows + off[0], cols + off[1]
    if flip:
        mirror = torch.rand(B, 1, generator=generator) < 0.5
        cols = torch.where(mirror, cols.flip(-1), cols)
    b = torch.arange(B)[:, None, None]
    return x.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


class BatchLoader:
    """Batches of a :class:`TensorImages` straight from memory: no per-sample Python work.

    Shuffles with its own generator (seeded; its state is part of a resumable training
    state), drops the last partial batch when asked, and in distributed training takes
    every ``world``-th sample of the permutation from ``rank`` on.
    """

    def __init__(self, ds: TensorImages, batch_size: int, *, shuffle: bool = False, drop_last: bool = False,
                 seed: int = 0, rank: int = 0, world: int = 1, limit: int | None = None):
        self.ds, self.batch_size, self.shuffle, self.drop_last = ds, int(batch_size), shuffle, drop_last
        self.rank, self.world = rank, world
        self.n = min(len(ds), limit) if limit else len(ds)
        self.generator = torch.Generator().manual_seed(seed)

    def _indices(self) -> torch.Tensor:
        idx = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        # every rank gets the same number of samples (the last n % world are left out), so every
        # rank takes the same number of DDP steps: one step more on one rank hangs or kills the others
        return idx[:self._per_rank() * self.world][self.rank::self.world]

    def _per_rank(self) -> int:
        return self.n // self.world

    def __len__(self) -> int:
        n = self._per_rank()
        return n // self.batch_size if self.drop_last and n >= self.batch_size else -(-n // self.batch_size)

    def __iter__(self):
        idx = self._indices()
        for b in range(len(self)):
            yield self.ds.batch(idx[b * self.batch_size:(b + 1) * self.batch_size], self.generator)


def digits(root, split, img_size, in_chans, augment):
    """scikit-learn's 8×8 digits, a fixed stratified 80/20 split (random_state=0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    idx_tr, idx_te = train_test_split(np.arange(len(d.target)), test_size=0.2, random_state=0,
                                      stratify=d.target)
    idx = idx_tr if split == "train" else idx_te
    images = d.images[idx].astype(np.float32)[:, None]
    return TensorImages(images, d.target[idx], scale=16.0, mean=(0.30,), std=(0.38,),
                        img_size=img_size, in_chans=in_chans, augment=augment, flip=False, pad=1,
                        classes=[str(i) for i in range(10)])


IDX_KINDS = {2051: "images", 2049: "labels"}


def read_idx(path: Path, kind: str | None = None) -> np.ndarray:
    """Read an idx (optionally gzip) file: images (N, rows, cols) uint8 or labels (N,) uint8.

    ``kind`` ("images" or "labels") is what the caller expects. A file that is empty, truncated,
    has zero rows, declares sizes beyond the memory available, or is the other kind gives an
    MSTError naming it. Only the declared payload is decompressed (a gzip bomb is not expanded)."""
    import zlib
    from mst_lava.resources import available_memory, fmt_bytes
    path = Path(path)
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


def fmnist(root, split, img_size, in_chans, augment):
    root = Path(root or FMNIST_DEFAULT)
    if not root.is_dir():
        _find(root, "train-images-idx3-ubyte")  # raises with the full explanation
    pre = "train" if split == "train" else "t10k"
    img_path, lbl_path = _find(root, f"{pre}-images-idx3-ubyte"), _find(root, f"{pre}-labels-idx1-ubyte")
    images = read_idx(img_path, "images")
    labels = read_idx(lbl_path, "labels")
    if len(images) != len(labels):
        raise MSTError(f"Fashion-MNIST: {img_path} holds {len(images)} images but {lbl_path} holds {len(labels)} labels")
    check_labels(labels, len(FMNIST_CLASSES), lbl_path)
    return TensorImages(images[:, None], labels, scale=255.0, mean=(0.2860,), std=(0.3530,),
                        img_size=img_size, in_chans=in_chans, augment=augment, flip=True, pad=2,
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
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(f, encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise MSTError(f"CIFAR: {path} is not a valid CIFAR python batch ({e})") from None
    if not isinstance(d, dict):
        raise MSTError(f"CIFAR: {path} is not a valid CIFAR python batch (it holds a {type(d).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def cifar(root, split, img_size, in_chans, augment, n_classes=10):
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
    return TensorImages(images, labels, scale=255.0, mean=mean, std=std, img_size=img_size,
                        in_chans=in_chans, augment=augment, flip=True, pad=4,
                        classes=[str(i) for i in range(n_classes)])


def imagenet(root, split, img_size, in_chans, augment):
    from torchvision import datasets, transforms
    if root is None or not (Path(root) / ("train" if split == "train" else "val")).is_dir():
        raise MSTError(f"ImageNet needs --data DIR with DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG "
                       f"(got {root})")
    norm = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    if augment:
        tf = transforms.Compose([transforms.RandomResizedCrop(img_size), transforms.RandomHorizontalFlip(),
                                 transforms.ToTensor(), norm])
    else:
        tf = transforms.Compose([transforms.Resize(int(img_size * 8 / 7)), transforms.CenterCrop(img_size),
                                 transforms.ToTensor(), norm])
    ds = datasets.ImageFolder(str(Path(root) / ("train" if split == "train" else "val")), transform=tf)
    ds.num_classes = len(ds.classes)
    return ds


STATIC_DATASETS = {
    "digits": digits,
    "fmnist": fmnist,
    "cifar10": lambda *a: cifar(*a, n_classes=10),
    "cifar100": lambda *a: cifar(*a, n_classes=100),
    "imagenet": imagenet,
}
