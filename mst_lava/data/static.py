"""Static image datasets read from local files: digits, Fashion-MNIST, CIFAR-10/100, ImageNet folders.

The files are read by :mod:`mst_lava.data.files` (numpy only); this module makes torch datasets
of them. Every dataset yields ``(image, label)`` with ``image`` a float32 tensor ``(C, H, W)``,
normalized, at the model's input size. Training augmentation is random crop (with
padding) and horizontal flip — no flip for digits, whose mirror images are other digits.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from mst_lava.data import files
from mst_lava.data.files import FMNIST_CLASSES, FMNIST_DEFAULT, IDX_KINDS, ImageArrays, check_labels, read_idx  # noqa: F401 (re-exported)
from mst_lava.errors import MSTError


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


def from_arrays(a: ImageArrays, img_size: int, in_chans: int, augment: bool) -> TensorImages:
    """A :class:`TensorImages` of one split read by :mod:`mst_lava.data.files`."""
    return TensorImages(a.images, a.labels, scale=a.scale, mean=a.mean, std=a.std, img_size=img_size,
                        in_chans=in_chans, augment=augment, flip=a.flip, pad=a.pad, classes=a.classes)


def digits(root, split, img_size, in_chans, augment):
    """scikit-learn's 8×8 digits, a fixed stratified 80/20 split (random_state=0)."""
    return from_arrays(files.digits(root, split), img_size, in_chans, augment)


def fmnist(root, split, img_size, in_chans, augment):
    return from_arrays(files.fmnist(root, split), img_size, in_chans, augment)


def cifar(root, split, img_size, in_chans, augment, n_classes=10):
    return from_arrays(files.cifar(root, split, n_classes), img_size, in_chans, augment)


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


# ----------------------------------------------------------------------------------------
# The preprocessing of the paper's own code (bic-L/Masked-Spiking-Transformer, data/build.py), for the
# checkpoints `mst import-official` makes (docs/official-mst.md): torchvision transforms on PIL images.
# CIFAR: Resize of the uint8 32x32 image (PIL bilinear; theirs is 224, the released models' input size:
# here the model's input size) and their normalization constants; ImageNet: bicubic Resize to 256/224 of
# the input size, center crop. Training augmentation (not needed to evaluate): theirs for CIFAR (random
# crop with padding 4, resize, flip); for ImageNet a bicubic random-resized crop and flip (their
# RandAugment, random erasing and mixup are not reproduced).

OFFICIAL_CIFAR_NORM = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class PILImages(Dataset):
    """uint8 images ``(N, 3, H, W)`` in memory, each made a PIL image and passed through a torchvision
    ``pipeline`` (then the optional per-image tensor ``transform``, e.g. pepper noise)."""

    def __init__(self, a: ImageArrays, pipeline):
        self.images, self.labels = a.images, np.asarray(a.labels)
        self.pipeline = pipeline
        self.classes = list(a.classes)
        self.num_classes = len(self.classes)
        self.transform = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image
        x = self.pipeline(Image.fromarray(np.ascontiguousarray(np.asarray(self.images[i]).transpose(1, 2, 0))))
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])


def _three_channels(name: str, in_chans: int) -> None:
    if in_chans != 3:
        raise MSTError(f"{name}: the official preprocessing makes 3-channel images; the model takes {in_chans}")


def cifar_official(root, split, img_size, in_chans, augment, n_classes=10):
    from torchvision import transforms
    _three_channels(f"cifar{n_classes}-official", in_chans)
    a = files.cifar(root, split, n_classes)
    tail = [transforms.ToTensor(), transforms.Normalize(*OFFICIAL_CIFAR_NORM)]
    if augment:
        tf = [transforms.RandomCrop(32, padding=4), transforms.Resize(img_size), transforms.RandomHorizontalFlip()]
    else:
        tf = [transforms.Resize(img_size)]
    return PILImages(a, transforms.Compose(tf + tail))


def imagenet_official(root, split, img_size, in_chans, augment):
    from torchvision import datasets, transforms
    _three_channels("imagenet-official", in_chans)
    if root is None or not (Path(root) / ("train" if split == "train" else "val")).is_dir():
        raise MSTError(f"ImageNet needs --data DIR with DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG "
                       f"(got {root})")
    bicubic = transforms.InterpolationMode.BICUBIC
    tail = [transforms.ToTensor(), transforms.Normalize(*IMAGENET_NORM)]
    if augment:
        tf = [transforms.RandomResizedCrop(img_size, interpolation=bicubic), transforms.RandomHorizontalFlip()]
    else:
        tf = [transforms.Resize(int(256 / 224 * img_size), interpolation=bicubic), transforms.CenterCrop(img_size)]
    ds = datasets.ImageFolder(str(Path(root) / ("train" if split == "train" else "val")),
                              transform=transforms.Compose(tf + tail))
    ds.num_classes = len(ds.classes)
    return ds


STATIC_DATASETS = {
    "digits": digits,
    "fmnist": fmnist,
    "cifar10": lambda *a: cifar(*a, n_classes=10),
    "cifar100": lambda *a: cifar(*a, n_classes=100),
    "imagenet": imagenet,
    "cifar10-official": lambda *a: cifar_official(*a, n_classes=10),
    "cifar100-official": lambda *a: cifar_official(*a, n_classes=100),
    "imagenet-official": imagenet_official,
}
