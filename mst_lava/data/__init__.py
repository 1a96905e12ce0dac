"""Dataset registry: ``get_dataset(name, root, split, img_size, in_chans)``.

Static sets live in ``static.py`` (torch datasets) over the file readers of ``files.py`` (numpy);
event-camera sets in ``events.py`` (``EVENT_DATASETS``). ``eval_arrays`` gives a static test split
as arrays without importing torch (the Lava runtime); the rest imports torch when called.
"""
from __future__ import annotations

from mst_lava.data.files import ARRAYS, STATIC_NAMES, ImageArrays
from mst_lava.errors import MSTError

# Default model preset for each dataset name.
DEFAULT_PRESET = {"digits": "digits", "fmnist": "fmnist", "cifar10": "cifar", "cifar100": "cifar",
                  "imagenet": "swin-t", "cifar10-dvs": "dvs", "n-caltech101": "dvs", "n-cars": "dvs",
                  "action-recognition": "dvs", "asl-dvs": "dvs", "dvs-gesture": "dvs",
                  "cifar10-official": "swin-t", "cifar100-official": "swin-t", "imagenet-official": "swin-t"}


# (image size, channels) a static dataset is read at when no other size is asked for: the raw images of
# digits, Fashion-MNIST and CIFAR, the preprocessing's output for ImageNet and the official variants.
# Event datasets have none (their sensors' frames are always resized to the model's input).
NATIVE_SIZE = {"digits": (8, 1), "fmnist": (28, 1), "cifar10": (32, 3), "cifar100": (32, 3),
               "imagenet": (224, 3), "cifar10-official": (224, 3), "cifar100-official": (224, 3),
               "imagenet-official": (224, 3)}


def _event_datasets() -> dict:
    try:
        from mst_lava.data.events import EVENT_DATASETS
    except ImportError:
        return {}
    return EVENT_DATASETS


def dataset_names() -> list[str]:
    return list(STATIC_NAMES) + list(_event_datasets())


def eval_arrays(name: str, root, split: str = "test") -> ImageArrays | None:
    """A static dataset's split as arrays (numpy, no torch), or None for datasets read otherwise
    (ImageNet folders, event cameras: use :func:`get_dataset`)."""
    reader = ARRAYS.get(name)
    return None if reader is None else reader(root, split)


def get_dataset(name: str, root=None, split: str = "train", img_size: int | None = None,
                in_chans: int | None = None, augment: bool = False, frames: int | None = None):
    """A torch Dataset of ``(image (C, H, W) float32, label)`` for ``name`` read from ``root``."""
    if split not in ("train", "test"):
        raise MSTError(f"split must be 'train' or 'test', not {split!r}")
    if name in STATIC_NAMES:
        from mst_lava.data.static import STATIC_DATASETS
        if frames:
            raise MSTError("--frames applies to event-camera datasets only")
        defaults = NATIVE_SIZE[name]
        return STATIC_DATASETS[name](root, split, img_size or defaults[0], in_chans or defaults[1], augment)
    events = _event_datasets()
    if name in events:
        return events[name](root, split, img_size or 128, in_chans or 2, frames, augment)
    raise MSTError(f"unknown dataset {name!r}; choose from {', '.join(dataset_names())}")


def as_images(x):
    """A batch as the ANN takes it: event frames ``(B, T, C, H, W)`` are averaged into one image."""
    if x.dim() == 5:
        from mst_lava.data.events import collapse_frames
        return collapse_frames(x)
    return x
