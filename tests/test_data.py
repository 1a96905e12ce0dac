import gzip
import pickle
import struct

import numpy as np
import pytest

from mst_lava.data import get_dataset
from mst_lava.data.static import read_idx
from mst_lava.errors import MSTError


def test_digits_fixed_stratified_split():
    tr, te = get_dataset("digits", split="train"), get_dataset("digits", split="test")
    assert len(tr) == 1437 and len(te) == 360
    labels = np.array([te[i][1] for i in range(len(te))])
    assert np.bincount(labels).min() >= 35                      # stratified: ~36 per class
    assert [te[i][1] for i in range(5)] == [get_dataset("digits", split="test")[i][1] for i in range(5)]
    x, _ = tr[0]
    assert x.shape == (1, 8, 8)


def _write_idx(path, arr, magic):
    header = struct.pack(">II", magic, arr.shape[0]) + b"".join(struct.pack(">I", d) for d in arr.shape[1:])
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fmnist_idx_reader_and_errors(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 255, (6, 28, 28))
    labels = np.arange(6) % 10
    for pre in ("train", "t10k"):
        _write_idx(tmp_path / f"{pre}-images-idx3-ubyte.gz", imgs, 2051)
        _write_idx(tmp_path / f"{pre}-labels-idx1-ubyte.gz", labels[:, None].reshape(6), 2049)
    ds = get_dataset("fmnist", tmp_path, "test")
    assert len(ds) == 6 and ds[3][1] == 3 and ds[0][0].shape == (1, 28, 28)
    assert np.array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), imgs)
    # corrupt: truncate the payload
    raw = gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz").read()
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(raw[:-10])
    with pytest.raises(MSTError, match="t10k-images-idx3-ubyte.gz is truncated"):
        get_dataset("fmnist", tmp_path, "test")
    with pytest.raises(MSTError, match="apt-get install dataset-fashion-mnist"):
        get_dataset("fmnist", tmp_path / "missing", "test")


def _write_cifar10(root):
    """A tiny CIFAR-10 "python version" folder: five train batches and a test batch of 4 images each."""
    d = root / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}, f)
    return d


def test_cifar_batches_and_resize(tmp_path):
    d = _write_cifar10(tmp_path)
    tr = get_dataset("cifar10", tmp_path, "train")
    assert len(tr) == 20 and tr[0][0].shape == (3, 32, 32)
    assert get_dataset("cifar10", tmp_path, "test", img_size=16)[1][0].shape == (3, 16, 16)
    with open(d / "test_batch", "wb") as f:
        f.write(b"garbage")
    with pytest.raises(MSTError, match="test_batch is not a valid CIFAR"):
        get_dataset("cifar10", tmp_path, "test")


def test_unknown_dataset():
    with pytest.raises(MSTError, match="unknown dataset 'mnist3'"):
        get_dataset("mnist3")


def test_batch_equals_per_item_and_loader_covers_the_split():
    import torch

    from mst_lava.data.static import BatchLoader
    ds = get_dataset("digits", split="test")
    x, y = ds.batch(torch.arange(5))
    for i in range(5):
        xi, yi = ds[i]
        assert torch.equal(x[i], xi) and int(y[i]) == yi
    dl = BatchLoader(ds, 64, shuffle=True, seed=3)
    seen = torch.cat([yb for _, yb in dl])
    assert len(dl) == -(-len(ds) // 64) and len(seen) == len(ds)
    assert torch.equal(seen.sort().values, ds.labels.sort().values)        # a permutation of the split
    assert len(BatchLoader(ds, 64, drop_last=True)) == len(ds) // 64
    halves = [torch.cat([yb for _, yb in BatchLoader(ds, 50, rank=r, world=2)]) for r in (0, 1)]
    assert len(halves[0]) + len(halves[1]) == len(ds)                      # DDP shards cover it once


def test_batchwise_crop_and_flip_are_shifts_and_mirrors_of_each_image():
    import torch

    from mst_lava.data.static import random_crop_flip
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    out = random_crop_flip(x.repeat(40, 1, 1, 1), 2, True, g)
    padded = torch.nn.functional.pad(x.repeat(40, 1, 1, 1), (2, 2, 2, 2))
    kinds = set()
    for i, o in enumerate(out):
        hits = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                if torch.equal(o, (lambda c: c.flip(-1) if f else c)(padded[i, :, dy:dy + 6, dx:dx + 6]))]
        assert hits, f"image {i} is not a crop (or mirrored crop) of its padded original"
        kinds.add(hits[0][2])
    assert kinds == {False, True}                                           # both flipped and not


def _torch_images(ds, n):
    import torch
    return torch.stack([ds[i][0] for i in range(n)]).numpy(), [ds[i][1] for i in range(n)]


@pytest.mark.parametrize("in_chans", [1, 3])
def test_eval_arrays_equal_the_torch_dataset_bit_for_bit(tmp_path, in_chans):
    """The Lava runtime's torch-free test inputs (data.eval_arrays) are the torch dataset's images exactly."""
    from mst_lava.data import eval_arrays
    a = eval_arrays("digits", None)
    x = a.eval_images(0, 40, 8, in_chans)
    want, labels = _torch_images(get_dataset("digits", None, "test", 8, in_chans=in_chans), 40)
    assert x.dtype == np.float32 and x.shape == (40, in_chans, 8, 8)
    np.testing.assert_array_equal(x, want)
    assert a.labels[:40].tolist() == labels
    assert a.eval_images(0, 1, 16, 1) is None             # a resize: the torch dataset's job
    # CIFAR (uint8, three channels): equal at its size, refused for one channel (a colour average)
    _write_cifar10(tmp_path)
    c = eval_arrays("cifar10", tmp_path)
    want = _torch_images(get_dataset("cifar10", tmp_path, "test"), 4)[0]
    np.testing.assert_array_equal(c.eval_images(0, 4, 32, 3), want)
    assert c.eval_images(0, 1, 32, 1) is None
    assert eval_arrays("imagenet", None) is None and eval_arrays("cifar10-dvs", None) is None


def test_every_static_dataset_has_a_torch_dataset():
    from mst_lava.data.files import STATIC_NAMES
    from mst_lava.data.static import STATIC_DATASETS
    assert set(STATIC_NAMES) == set(STATIC_DATASETS)
