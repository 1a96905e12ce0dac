"""The test samples an exported network runs on: ``mst run`` and ``mst verify``.

Static datasets at their own size come as numpy arrays (``data.eval_arrays``: no torch, so a Lava run
imports none); the others (resized, ImageNet folders, event frames) as torch datasets.
"""
from __future__ import annotations

import numpy as np

from mst_lava.errors import MSTError


def load_inputs(graph, dataset: str | None, root, n: int, offset: int = 0, frames: int | None = None):
    """The first ``n`` test samples (from ``offset``; ``n = 0``: to the end) the network expects:
    (x float32 numpy array, labels, dataset name)."""
    ds, name, n = eval_split(graph, dataset, root, n, offset, frames)
    x, labels = samples(ds, offset, offset + n, name, graph)
    return x, labels, name


def eval_split(graph, dataset: str | None, root, n: int, offset: int = 0, frames: int | None = None):
    """The test split of the network's dataset (``dataset`` or the one the file records), its name and the
    number of samples ``n`` resolves to."""
    from mst_lava.data import eval_arrays, get_dataset
    name = dataset or str(graph.attrs.get("dataset") or "") or None
    if not name:
        raise MSTError(f"{graph.path or 'the network'} does not record its dataset; give --dataset NAME")
    if n < 0 or offset < 0:
        raise MSTError("--n must be non-negative (0 = the whole test split) and --offset non-negative")
    C, H, W = (int(s) for s in graph.layers[0].shape)
    ds = None if frames else eval_arrays(name, root, "test")
    if ds is None or ds.eval_images(0, 1, H, C) is None:
        kw = {"frames": frames} if frames else {}
        ds = get_dataset(name, root, "test", H, in_chans=C, **kw)
    if n == 0:
        n = len(ds) - offset
        if n < 1:
            raise MSTError(f"the {name} test split has {len(ds)} samples; --offset {offset} leaves none")
    if offset + n > len(ds):
        raise MSTError(f"the {name} test split has {len(ds)} samples; --offset {offset} --n {n} asks for more")
    return ds, name, n



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
