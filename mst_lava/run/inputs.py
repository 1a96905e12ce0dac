"""The test samples an exported network runs on: ``mst run`` and ``mst verify``.

Static datasets at their own size come as numpy arrays (``data.eval_arrays``: no torch, so a Lava run
imports none); the others (resized, ImageNet folders, event frames) as torch datasets.
"""
from __future__ import annotations

import numpy as np

from mst_lava.errors import MSTError


def load_inputs(graph, dataset: str | None, root, n: int, offset: int = 0, frames: int | None = None,
                resize: bool = False):
    """The first ``n`` test samples (from ``offset``; ``n = 0``: to the end) the network expects:
    (x float32 numpy array, labels, dataset name)."""
    ds, name, n = eval_split(graph, dataset, root, n, offset, frames, resize)
    x, labels = samples(ds, offset, offset + n, name, graph)
    return x, labels, name


def eval_split(graph, dataset: str | None, root, n: int, offset: int = 0, frames: int | None = None,
               resize: bool = False):
    """The test split of the network's dataset (``dataset`` or the one the file records), its name and the
    number of samples ``n`` resolves to. A dataset other than the one the file records must fit the network:
    its image size and channels (unless ``resize``) and its number of classes."""
    from mst_lava.data import eval_arrays, get_dataset
    recorded = str(graph.attrs.get("dataset") or "") or None
    name = dataset or recorded
    if not name:
        raise MSTError(f"{graph.path or 'the network'} does not record its dataset; give --dataset NAME")
    if n < 0 or offset < 0:
        raise MSTError("--n must be non-negative (0 = the whole test split) and --offset non-negative")
    C, H, W = (int(s) for s in graph.layers[0].shape)
    if name != recorded and not resize:
        check_image_size(graph, name)
    ds = None if frames else eval_arrays(name, root, "test")
    if ds is None or ds.eval_images(0, 1, H, C) is None:
        kw = {"frames": frames} if frames else {}
        ds = get_dataset(name, root, "test", H, in_chans=C, **kw)
    if name != recorded:
        check_classes(graph, name, ds)
    if n == 0:
        n = len(ds) - offset
        if n < 1:
            raise MSTError(f"the {name} test split has {len(ds)} samples; --offset {offset} leaves none")
    if offset + n > len(ds):
        raise MSTError(f"the {name} test split has {len(ds)} samples; --offset {offset} --n {n} asks for more")
    return ds, name, n


def _network(graph) -> str:
    rec = str(graph.attrs.get("dataset") or "")
    return f"{graph.path or 'the network'}" + (f" (exported for {rec})" if rec else "")


def check_image_size(graph, name: str) -> None:
    """The images of dataset ``name`` have the network's input size and channels, else an MSTError (a
    silent resize of 28×28 images to 8×8 gave 0 % and a verify PASS)."""
    from mst_lava.data import NATIVE_SIZE
    if name not in NATIVE_SIZE:           # event datasets: frames are always resized to the model's input
        return
    C, H, W = (int(s) for s in graph.layers[0].shape)
    size, chans = NATIVE_SIZE[name]
    plural = "s" if C > 1 else ""
    if (size, size, chans) != (H, W, C):
        raise MSTError(f"dataset {name} has {size}x{size} images with {chans} channel{'s' if chans > 1 else ''}, "
                       f"{_network(graph)} takes {H}x{W} images with {C} channel{plural}: wrong --dataset for this "
                       "network? (--resize resizes the images to the network's input)")


def network_classes(graph) -> int:
    """The number of classes the file records (``num_classes``, else the readout's outputs)."""
    nc = graph.attrs.get("num_classes")
    if isinstance(nc, int) and not isinstance(nc, bool):
        return nc
    ro = [L for L in graph.layers if L.type == "mst_readout"]
    return int(np.prod(ro[0].shape)) if ro else int(np.prod(graph.layers[-1].shape))


def check_classes(graph, name: str, ds) -> None:
    """Dataset ``name`` has as many classes as the network's readout, else an MSTError (no option helps)."""
    k = getattr(ds, "num_classes", None) or len(getattr(ds, "classes", ()) or ())
    if k and int(k) != network_classes(graph):
        raise MSTError(f"dataset {name} has {int(k)} classes, {_network(graph)} has {network_classes(graph)}: "
                       "wrong --dataset for this network")


def samples(ds, start: int, stop: int, name: str, graph):
    """Samples ``start..stop-1`` of ``ds`` stacked: (x float32 numpy array, labels int array)."""
    from mst_lava.data import ImageArrays
    C, H, W = (int(s) for s in graph.layers[0].shape)
    if isinstance(ds, ImageArrays):
        x, ys = ds.eval_images(start, stop, H, C), ds.labels[start:stop]
    else:
        import torch
        xs, ys = [], []
        for i in range(start, stop):
            xi, y = ds[i]
            xs.append(torch.as_tensor(xi))
            ys.append(int(y))
        x = torch.stack(xs).float().numpy()
    if tuple(x.shape[-3:]) != (C, H, W):
        raise MSTError(f"dataset {name} gives samples of shape {tuple(x.shape[1:])}; the network expects "
                       f"({C}, {H}, {W}) (wrong --dataset for this network?)")
    return x, np.asarray(ys)
