"""Event-camera datasets read from local files: CIFAR10-DVS, N-Caltech101, N-Cars, the paper's
Action Recognition set, ASL-DVS and (extra) DVS128 Gesture.

``EVENT_DATASETS[name](root, split, img_size, in_chans, frames, augment)`` builds a torch
Dataset yielding ``(x, label)``. Nothing is downloaded: files are indexed here and decoded by
``mst_lava.data.event_io`` (tonic's low-level readers where tonic has one).

Events → model input (see docs/datasets.md):

1. decode the sample's events (x, y, t µs, polarity) in image coordinates;
2. integrate them into ``T`` frames per polarity with tonic's ``ToFrame`` (``T = frames``, or 1
   when ``frames`` is None); the Action Recognition recordings use the Surface of Active
   Events (SAE) instead, as the paper does;
3. map polarity planes to ``in_chans`` channels: 1 → both polarities together, 2 → (OFF, ON),
   3 → (OFF, ON, both);
4. resize to ``img_size × img_size`` (bilinear, antialiased; non-square sensors are stretched;
   an SAE is max-pooled when shrunk, which is exactly the SAE of the coarser grid);
5. scale to [0, 1]: event counts are divided by a robust per-sample, per-channel maximum
   (99th percentile of the non-zero pixels of the time-summed image) and clipped; frame ``t``
   is scaled by ``T`` so that the mean of the frames equals the static image up to clipping.
   SAE values are in [0, 1] already;
6. training only (``augment=True``): NDA (Li et al. 2022; ``mst_lava.data.nda``);
7. normalize ``(x - 0.5) / 0.5`` → [-1, 1].

Output: ``frames=None`` → ``(in_chans, img_size, img_size)``, the whole sample collapsed into
one image (what the ANN and the converted SNN take as a static input); ``frames=T`` →
``(T, in_chans, img_size, img_size)``. A model that takes one image uses
:func:`collapse_frames` (mean over frames); an SNN can present frame ``t`` during steps
``[t·S/T, (t+1)·S/T)`` of an ``S``-step simulation (:func:`frames_for_steps`).
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from mst_lava.data import event_io
from mst_lava.data.nda import NDA
from mst_lava.errors import MSTError

SPLIT_SEED = 0            # seed of every fixed stratified split below
MEAN, STD = 0.5, 0.5      # normalization of the [0, 1] event images
ACTION_WINDOW_US = 300_000  # SAE window of the Action Recognition recordings (see docs)
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
NCARS_CLASSES = ("background", "cars")
ASL_CLASSES = tuple(c for c in "abcdefghiklmnopqrstuvwxy")           # 24 letters, no j, no z
GESTURE_CLASSES = ("hand clapping", "right hand wave", "left hand wave", "right arm clockwise",
                   "right arm counter-clockwise", "left arm clockwise",
                   "left arm counter-clockwise", "arm roll", "air drums", "air guitar", "other")
ACTION_CLASSES = ("arm-crossing", "getting-up", "jumping", "kicking", "picking-up",
                  "sitting-down", "throwing", "turning-around", "walking", "waving")

LAYOUTS = {
    "cifar10-dvs": "DIR/{airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck}/"
                   "*.aedat4 (tonic's re-encoded archive, each class zip extracted) or *.aedat "
                   "(the original AEDAT 2.0 release); DIR may also hold them one folder down "
                   "(e.g. DIR/CIFAR10DVS/airplane/...)",
    "n-caltech101": "DIR/Caltech101/<class>/image_XXXX.bin (or DIR/<class>/*.bin), one folder "
                    "per class as in the N-Caltech101 archive",
    "n-cars": "DIR/n-cars_train/{background,cars}/*.dat and DIR/n-cars_test/{background,cars}/"
              "*.dat (train/test also accepted as folder names)",
    "action-recognition": "DIR/<action>/*.aedat (DAVIS346 jAER recordings, one folder per "
                          "action) or DIR/<action>/*.png (frames already SAE-encoded)",
    "asl-dvs": "DIR/<letter>/*.mat for the 24 letters a-y without j (any depth, e.g. "
               "DIR/Yin/a/a_0001.mat); each .mat holds x, y, ts, pol",
    "dvs-gesture": "DIR/DvsGesture/{trials_to_train.txt,trials_to_test.txt,userXX_<light>.aedat,"
                   "userXX_<light>_labels.csv} (the IBM release; DIR may be DvsGesture itself) or "
                   "DIR/{ibmGestureTrain,ibmGestureTest}/userXX_<light>/<label>.npy (tonic's copy)",
}


# ------------------------------------------------------------------ events → frames → input

def integrate(events: np.ndarray, sensor_size: tuple[int, int], n_frames: int = 1) -> np.ndarray:
    """Event counts ``(n_frames, 2, H, W)`` float32 over ``n_frames`` equal time bins.

    Uses tonic's ``ToFrame`` with a time window of ``ceil((t_last - t_first + 1) / n_frames)``
    from the first event, so every event lands in a bin (tonic's ``n_time_bins`` drops the
    last event). tonic accumulates in int16, so samples of 32,768 events or more are counted
    here with ``np.bincount`` (same bins) instead.
    """
    from tonic.transforms import ToFrame
    W, H = sensor_size
    T = int(n_frames)
    if len(events) == 0:
        return np.zeros((T, 2, H, W), np.float32)
    t0, t1 = int(events["t"][0]), int(events["t"][-1])
    window = -(-(t1 - t0 + 1) // T)
    if len(events) < 32768:
        tf = ToFrame(sensor_size=(W, H, 2), time_window=window, start_time=t0,
                     end_time=t0 + T * window)
        return tf(events).astype(np.float32)
    k = (events["t"].astype(np.int64) - t0) // window
    flat = ((k * 2 + events["p"].astype(np.int64)) * H + events["y"].astype(np.int64)) * W \
        + events["x"].astype(np.int64)
    return np.bincount(flat, minlength=T * 2 * H * W).reshape(T, 2, H, W).astype(np.float32)


def sae(events: np.ndarray, sensor_size: tuple[int, int], n_frames: int, t_start: int,
        t_end: int) -> np.ndarray:
    """Surface of Active Events ``(n_frames, 2, H, W)`` in [0, 1] over ``[t_start, t_end)``.

    The window is cut into ``n_frames`` equal sub-windows; in each, a pixel's value per
    polarity is ``(t_last - t_begin + 1) / length`` for its most recent event (0 without
    events): recent activity is bright, older activity darker (Mueggler et al. 2017; the
    encoding of Miao et al. 2019).
    """
    W, H = sensor_size
    T = int(n_frames)
    out = np.zeros((T, 2, H, W), np.float32)
    t = events["t"].astype(np.int64)
    keep = (t >= t_start) & (t < t_end)
    if not keep.any():
        return out
    ev, t = events[keep], t[keep]
    edges = t_start + (np.arange(T + 1, dtype=np.int64) * max(1, t_end - t_start)) // T
    k = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, T - 1)
    width = np.maximum(edges[k + 1] - edges[k], 1)
    val = ((t - edges[k] + 1) / width).astype(np.float32)
    np.maximum.at(out, (k, ev["p"].astype(np.int64), ev["y"].astype(np.int64),
                        ev["x"].astype(np.int64)), val)
    return out


def _channels(maps: torch.Tensor, in_chans: int, kind: str) -> torch.Tensor:
    if kind == "image":                       # (T, 1, H, W) grey frames
        return maps.expand(-1, in_chans, -1, -1)
    off, on = maps[:, 0:1], maps[:, 1:2]
    both = torch.maximum(off, on) if kind == "sae" else off + on
    return {1: both, 2: torch.cat([off, on], 1), 3: torch.cat([off, on, both], 1)}[in_chans]


def to_unit_images(maps: np.ndarray | torch.Tensor, in_chans: int, img_size: int,
                   kind: str = "counts") -> torch.Tensor:
    """``(T, 2, H, W)`` maps (counts, SAE, or ``(T, 1, H, W)`` grey images) → ``(T, C, S, S)`` in [0, 1]."""
    x = torch.as_tensor(maps, dtype=torch.float32)
    x = _channels(x, in_chans, kind)
    S = int(img_size)
    H, W = x.shape[-2:]
    if kind == "sae" and (H > S or W > S):
        # the SAE of a coarser grid is the max (latest event) over each block: max-pool down
        x = F.adaptive_max_pool2d(x, (min(H, S), min(W, S)))
    if tuple(x.shape[-2:]) != (S, S):
        x = F.interpolate(x, size=(S, S), mode="bilinear", align_corners=False, antialias=True)
    x = x.clamp_min(0)
    if kind == "counts":
        T = x.shape[0]
        static = x.sum(0).flatten(1)                          # (C, S·S)
        scale = torch.ones(static.shape[0])
        for c in range(static.shape[0]):
            nz = static[c][static[c] > 0]
            if nz.numel():
                scale[c] = torch.quantile(nz, 0.99).clamp_min(1e-6)
        x = x * (T / scale.view(1, -1, 1, 1))
    return x.clamp(0, 1)


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - MEAN) / STD


def collapse_frames(x: torch.Tensor) -> torch.Tensor:
    """Mean over the frames axis: ``(T, C, H, W)`` → ``(C, H, W)``, ``(B, T, C, H, W)`` → ``(B, C, H, W)``."""
    return x.mean(dim=-4)


def frames_for_steps(x: torch.Tensor, steps: int) -> torch.Tensor:
    """``(B, T, C, H, W)`` → ``(steps, B, C, H, W)``: frame ``t`` shown at steps ``[t·S/T, (t+1)·S/T)``."""
    T = x.shape[1]
    idx = (torch.arange(steps) * T) // steps
    return x.transpose(0, 1)[idx]


# ---------------------------------------------------------------------------- the Dataset

class EventDataset(Dataset):
    """Samples ``(item, label)`` whose events come from ``reader(item)``.

    Attributes: ``classes``, ``num_classes``, ``labels``, ``split_info`` (how train/test were
    formed, with the seed), ``sensor_size`` ``(W, H)``, ``transform`` (optional tensor
    transform applied last, e.g. :class:`mst_lava.data.noise.PepperNoise`).
    """

    kind = "counts"

    def __init__(self, name: str, items: list, labels: list[int], classes, reader, sensor_size,
                 img_size: int, in_chans: int, frames: int | None, augment: bool,
                 split_info: dict, denoise_us: float | None = None):
        if in_chans not in (1, 2, 3):
            raise MSTError(f"{name}: in_chans must be 1, 2 or 3 for event data, not {in_chans}")
        if int(img_size) < 1:
            raise MSTError(f"{name}: img_size must be positive, not {img_size}")
        if frames is not None and int(frames) < 1:
            raise MSTError(f"--frames must be a positive number of frames, not {frames}")
        self.name = name
        self.items, self.labels = list(items), [int(v) for v in labels]
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.reader = reader
        self.sensor_size = tuple(sensor_size) if sensor_size else None
        self.img_size, self.in_chans = int(img_size), int(in_chans)
        self.frames = int(frames) if frames else None
        self.augment = bool(augment)
        self.nda = NDA() if augment else None
        self.split_info = dict(split_info)
        self.denoise_us = denoise_us
        self.transform = None

    def __len__(self) -> int:
        return len(self.items)

    def _item_path(self, i: int):
        item = self.items[i]
        return item[0] if isinstance(item, tuple) else item

    def events(self, i: int) -> np.ndarray:
        """Decoded events of sample ``i`` (image coordinates, inside the sensor)."""
        try:
            ev = self.reader(self.items[i])
        except MSTError as e:
            raise MSTError(f"{e} [dataset {self.name}; expected {LAYOUTS.get(self.name, '')}]") from None
        except (OSError, ValueError, IndexError, KeyError) as e:
            raise MSTError(f"{self._item_path(i)}: cannot read ({type(e).__name__}: {e}) "
                           f"[dataset {self.name}; expected {LAYOUTS.get(self.name, '')}]") from None
        if self.sensor_size is not None and len(ev):
            W, H = self.sensor_size
            ok = (ev["x"] >= 0) & (ev["x"] < W) & (ev["y"] >= 0) & (ev["y"] < H)
            if not ok.all():
                ev = ev[ok]
        if self.denoise_us and len(ev):
            from tonic.transforms import Denoise
            ev = Denoise(filter_time=self.denoise_us)(ev)
        return ev

    def maps(self, i: int) -> np.ndarray:
        """Per-polarity maps ``(T, 2, H, W)`` of sample ``i`` at sensor resolution."""
        return integrate(self.events(i), self.sensor_size, self.frames or 1)

    def __getitem__(self, i: int):
        x = to_unit_images(self.maps(i), self.in_chans, self.img_size, self.kind)
        if self.nda is not None:
            x = self.nda(x)
        x = normalize(x)
        if self.frames is None:
            x = x[0]
        x = x.contiguous()
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]


class SAEDataset(EventDataset):
    """Windows of long recordings encoded as Surfaces of Active Events.

    Items are ``(path, t_start, t_end)``; ``reader(item)`` returns the window's events.
    """

    kind = "sae"

    def maps(self, i: int) -> np.ndarray:
        _, t0, t1 = self.items[i]
        return sae(self.events(i), self.sensor_size, self.frames or 1, t0, t1)


class ImageFramesDataset(EventDataset):
    """Frames already encoded as grey images (e.g. the paper's 4,670 SAE frames as PNG)."""

    kind = "image"

    def maps(self, i: int) -> np.ndarray:
        path = self.items[i]
        try:
            from PIL import Image
            with Image.open(path) as im:
                a = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        except (OSError, ValueError) as e:
            raise MSTError(f"{path}: not a readable image ({e}) "
                           f"[dataset {self.name}; expected {LAYOUTS[self.name]}]") from None
        return np.broadcast_to(a, (self.frames or 1, 1, *a.shape)).copy()


# ------------------------------------------------------------------------- indexing helpers

def _require_root(root, name: str) -> Path:
    if root is None or str(root) == "":
        raise MSTError(f"dataset {name!r} reads local files: pass --data DIR with the layout "
                       f"{LAYOUTS[name]} (see docs/datasets.md)")
    p = Path(root).expanduser()
    if not p.is_dir():
        raise MSTError(f"{p}: no such folder for dataset {name!r}; expected {LAYOUTS[name]} "
                       "(see docs/datasets.md)")
    return p


def _find_dir(base: Path, test, depth: int = 2) -> Path | None:
    """``base`` or the first sub-folder (breadth first, sorted, up to ``depth``) passing ``test``."""
    level = [base]
    for _ in range(depth + 1):
        for d in level:
            if test(d):
                return d
        level = [c for d in level for c in sorted(d.iterdir()) if c.is_dir()]
    return None


def _no_files(name: str, base: Path, what: str) -> MSTError:
    return MSTError(f"{base}: {what} for dataset {name!r}; expected {LAYOUTS[name]} "
                    "(see docs/datasets.md)")


def _natural_key(path: Path):
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", path.name)]


def _n_test(n: int, fraction: float) -> int:
    if n < 2:
        return 0
    return min(n - 1, max(1, int(round(n * fraction))))


def stratified_split(labels, test_fraction: float, seed: int = SPLIT_SEED):
    """Per-class shuffled split (numpy RandomState(seed)); returns (train_idx, test_idx) sorted."""
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = _n_test(len(idx), test_fraction)
        test.extend(idx[:k].tolist())
        train.extend(idx[k:].tolist())
    return sorted(train), sorted(test)


def _pick(split: str, train, test):
    if split not in ("train", "test"):
        raise MSTError(f"split must be 'train' or 'test', not {split!r}")
    return train if split == "train" else test


def _nonempty(name: str, base: Path, split: str, items) -> None:
    if not items:
        raise _no_files(name, base, f"no {split} samples found (each class needs at least 2 "
                                    "files to form a train/test split)")


# --------------------------------------------------------------------------- CIFAR10-DVS

def _read_cifar10dvs(path: str) -> np.ndarray:
    if path.endswith(".aedat4"):
        return event_io.read_aedat4(path)
    return event_io.read_aedat2(path, default_chip="dvs128")


def cifar10_dvs(root, split="train", img_size=128, in_chans=2, frames=None, augment=False, **kw):
    """CIFAR10-DVS (Li et al. 2017), 10 × 1,000 recordings, 128 × 128 DVS128.

    Split as the paper (9,000 / 1,000): in each class, files ordered by their number; the
    last 10 % are the test set.
    """
    name = "cifar10-dvs"
    _pick(split, 0, 0)
    base = _require_root(root, name)
    croot = _find_dir(base, lambda d: all((d / c).is_dir() for c in CIFAR10_CLASSES))
    if croot is None:
        found = [c for c in CIFAR10_CLASSES if _find_dir(base, lambda d, c=c: (d / c).is_dir())]
        missing = [c for c in CIFAR10_CLASSES if c not in found]
        raise _no_files(name, base, "class folder(s) missing: " + ", ".join(missing))
    ext = ".aedat4" if any(croot.rglob("*.aedat4")) else ".aedat"
    items, labels = [], []
    for label, c in enumerate(CIFAR10_CLASSES):
        files = sorted((f for f in (croot / c).rglob("*" + ext) if f.is_file()), key=_natural_key)
        k = _n_test(len(files), 0.1)
        chosen = files[:len(files) - k] if split == "train" else files[len(files) - k:]
        items += [str(f) for f in chosen]
        labels += [label] * len(chosen)
    _nonempty(name, croot, split, items)
    info = {"policy": "per class, files in numeric order; last 10% test (paper: 9,000/1,000)",
            "test_fraction": 0.1, "format": ext}
    return EventDataset(name, items, labels, CIFAR10_CLASSES, _read_cifar10dvs, (128, 128),
                        img_size, in_chans, frames, augment, info, **kw)


# -------------------------------------------------------------------------- N-Caltech101

def n_caltech101(root, split="train", img_size=128, in_chans=2, frames=None, augment=False, **kw):
    """N-Caltech101 (Orchard et al. 2015): ATIS .bin files, one folder per class, 240 × 180.

    No official split: a fixed stratified 90 / 10 split (seed ``SPLIT_SEED``).
    """
    name = "n-caltech101"
    base = _require_root(root, name)
    croot = base / "Caltech101" if (base / "Caltech101").is_dir() else base
    classes = [d for d in sorted(croot.iterdir()) if d.is_dir() and "annotation" not in d.name.lower()
               and any(d.glob("*.bin"))] if croot.is_dir() else []
    if not classes:
        raise _no_files(name, croot, "no class folders with .bin files")
    files, labels = [], []
    for label, d in enumerate(classes):
        fs = sorted(d.glob("*.bin"), key=_natural_key)
        files += [str(f) for f in fs]
        labels += [label] * len(fs)
    tr, te = stratified_split(labels, 0.1, SPLIT_SEED)
    idx = _pick(split, tr, te)
    _nonempty(name, croot, split, idx)
    info = {"policy": "stratified random split per class", "test_fraction": 0.1, "seed": SPLIT_SEED}
    return EventDataset(name, [files[i] for i in idx], [labels[i] for i in idx],
                        [d.name for d in classes], event_io.read_atis_bin, (240, 180),
                        img_size, in_chans, frames, augment, info, **kw)


# -------------------------------------------------------------------------------- N-Cars

def _read_ncars(path: str) -> np.ndarray:
    return event_io.read_prophesee_dat(path)


def n_cars(root, split="train", img_size=128, in_chans=2, frames=None, augment=False, **kw):
    """N-Cars (Sironi et al. 2018): 100 ms ATIS TD samples, 120 × 100, the release's train/test folders."""
    name = "n-cars"
    base = _require_root(root, name)
    pairs = (("n-cars_train", "n-cars_test"), ("train", "test"))

    def has_split(d):
        return any((d / a).is_dir() and (d / b).is_dir() for a, b in pairs)

    droot = _find_dir(base, has_split)
    if droot is None:
        raise _no_files(name, base, "no n-cars_train/ and n-cars_test/ folders")
    a, b = next((a, b) for a, b in pairs if (droot / a).is_dir() and (droot / b).is_dir())
    sdir = droot / _pick(split, a, b)
    items, labels = [], []
    for label, c in enumerate(NCARS_CLASSES):
        if not (sdir / c).is_dir():
            raise _no_files(name, sdir, f"class folder {c}/ missing")
        fs = sorted((sdir / c).glob("*.dat"), key=_natural_key)
        items += [str(f) for f in fs]
        labels += [label] * len(fs)
    _nonempty(name, sdir, split, items)
    info = {"policy": "the release's n-cars_train / n-cars_test folders"}
    return EventDataset(name, items, labels, NCARS_CLASSES, _read_ncars, (120, 100),
                        img_size, in_chans, frames, augment, info, **kw)


# ------------------------------------------------------------------------------- ASL-DVS

def asl_dvs(root, split="train", img_size=128, in_chans=2, frames=None, augment=False, **kw):
    """ASL-DVS (Bi et al. 2019): 24 letters × 4,200 .mat samples, 240 × 180.

    No official split: a fixed stratified 80 / 20 split (seed ``SPLIT_SEED``).
    """
    name = "asl-dvs"
    base = _require_root(root, name)
    files, labels = [], []
    for f in sorted(base.rglob("*.mat"), key=lambda p: (p.parent.name.lower(), _natural_key(p))):
        letter = f.parent.name.lower()
        if letter in ASL_CLASSES:
            files.append(str(f))
            labels.append(ASL_CLASSES.index(letter))
    if not files:
        raise _no_files(name, base, "no .mat files in letter folders")
    tr, te = stratified_split(labels, 0.2, SPLIT_SEED)
    idx = _pick(split, tr, te)
    _nonempty(name, base, split, idx)
    info = {"policy": "stratified random split per class", "test_fraction": 0.2, "seed": SPLIT_SEED}
    return EventDataset(name, [files[i] for i in idx], [labels[i] for i in idx], ASL_CLASSES,
                        event_io.read_asl_mat, (240, 180), img_size, in_chans, frames, augment,
                        info, **kw)


# ------------------------------------------------------------------------- DVS128 Gesture

@functools.lru_cache(maxsize=2)
def _gesture_recording(path: str) -> np.ndarray:
    return event_io.read_aedat31(path)


def _read_gesture_segment(item) -> np.ndarray:
    path, t0, t1 = item
    ev = _gesture_recording(path)
    i0, i1 = np.searchsorted(ev["t"], [t0, t1])
    return ev[i0:i1]


def _read_gesture_npy(path: str) -> np.ndarray:
    a = np.load(path)
    if a.ndim != 2 or a.shape[1] < 4:
        raise MSTError(f"{path}: expected an (N, 4) array of x, y, p, t (ms)")
    return event_io.make_events(a[:, 0], a[:, 1], a[:, 3].astype(np.int64) * 1000, a[:, 2])


def dvs_gesture(root, split="train", img_size=128, in_chans=2, frames=None, augment=False, **kw):
    """DVS128 Gesture (Amir et al. 2017): 11 gestures, 128 × 128, the release's train/test trials.

    The IBM release (AEDAT 3.1 recordings + label CSVs; one sample per labelled segment) or
    tonic's pre-cut ``.npy`` copy.
    """
    name = "dvs-gesture"
    base = _require_root(root, name)
    orig = _find_dir(base, lambda d: (d / "trials_to_train.txt").is_file())
    info = {"policy": "the release's trials_to_train / trials_to_test lists"}
    if orig is not None:
        listing = orig / _pick(split, "trials_to_train.txt", "trials_to_test.txt")
        if not listing.is_file():
            raise _no_files(name, orig, f"{listing.name} missing")
        items, labels = [], []
        for line in listing.read_text().split():
            rec = orig / line.strip()
            if not rec.suffix == ".aedat":
                continue
            csv = rec.with_name(rec.stem + "_labels.csv")
            if not rec.is_file() or not csv.is_file():
                raise _no_files(name, orig, f"{rec.name} or {csv.name} listed in {listing.name} "
                                            "but missing")
            try:
                rows = np.loadtxt(csv, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
            except ValueError as e:
                raise MSTError(f"{csv}: unreadable label file ({e}); expected rows "
                               "class,startTime_usec,endTime_usec") from None
            for cls, t0, t1 in rows[:, :3]:
                if not 1 <= cls <= len(GESTURE_CLASSES):
                    raise MSTError(f"{csv}: class {cls} outside 1..{len(GESTURE_CLASSES)}")
                items.append((str(rec), int(t0), int(t1)))
                labels.append(int(cls) - 1)
        _nonempty(name, orig, split, items)
        return EventDataset(name, items, labels, GESTURE_CLASSES, _read_gesture_segment,
                            (128, 128), img_size, in_chans, frames, augment, info, **kw)
    troot = _find_dir(base, lambda d: (d / "ibmGestureTrain").is_dir() and (d / "ibmGestureTest").is_dir())
    if troot is None:
        raise _no_files(name, base, "neither trials_to_train.txt nor ibmGestureTrain/ found")
    sdir = troot / _pick(split, "ibmGestureTrain", "ibmGestureTest")
    files = sorted(sdir.rglob("*.npy"), key=lambda p: (p.parent.name, _natural_key(p)))
    items = [str(f) for f in files if f.stem.isdigit() and int(f.stem) < len(GESTURE_CLASSES)]
    labels = [int(Path(f).stem) for f in items]
    _nonempty(name, sdir, split, items)
    return EventDataset(name, items, labels, GESTURE_CLASSES, _read_gesture_npy, (128, 128),
                        img_size, in_chans, frames, augment, info, **kw)


# --------------------------------------------------------------------- Action Recognition

def _read_action_window(item) -> np.ndarray:
    path, t0, t1 = item
    rec, lines = event_io.aedat2_records(path)
    i0, i1 = np.searchsorted(np.asarray(rec["t"]), [t0, t1])
    return event_io.decode_aedat2(rec[i0:i1], event_io.detect_chip(lines, "davis346"))


def action_recognition(root, split="train", img_size=128, in_chans=2, frames=None, augment=False,
                       window_us: int = ACTION_WINDOW_US, **kw):
    """Action Recognition (Miao et al. 2019): DAVIS346 recordings of 10 actions, 346 × 260.

    Recordings are cut into consecutive ``window_us`` windows, each encoded as a Surface of
    Active Events (``frames`` sub-windows when given). Folders of ready-made frame images are
    read as they are. No official split: a fixed stratified 80 / 20 split of the recordings
    (or images) per class (seed ``SPLIT_SEED``), so windows of one recording never straddle.
    """
    name = "action-recognition"
    base = _require_root(root, name)

    def class_dirs(d):
        return [c for c in sorted(d.iterdir()) if c.is_dir() and
                any(f.suffix.lower() in (".aedat",) + _IMAGE_EXTS for f in c.iterdir())]

    croot = _find_dir(base, lambda d: bool(class_dirs(d)), depth=1)
    if croot is None:
        raise _no_files(name, base, "no action folders with .aedat or image files")
    classes = class_dirs(croot)
    recs, imgs = [], []
    for label, c in enumerate(classes):
        for f in sorted(c.iterdir(), key=_natural_key):
            if f.suffix.lower() == ".aedat":
                recs.append((str(f), label))
            elif f.suffix.lower() in _IMAGE_EXTS:
                imgs.append((str(f), label))
    use = recs if recs else imgs
    tr, te = stratified_split([lab for _, lab in use], 0.2, SPLIT_SEED)
    idx = _pick(split, tr, te)
    _nonempty(name, croot, split, idx)
    info = {"policy": "stratified random split of recordings per class", "test_fraction": 0.2,
            "seed": SPLIT_SEED}
    names = [c.name for c in classes]
    if not recs:
        info["policy"] = "stratified random split of frame images per class"
        return ImageFramesDataset(name, [use[i][0] for i in idx], [use[i][1] for i in idx], names,
                                  None, None, img_size, in_chans, frames, augment, info, **kw)
    info["window_us"] = int(window_us)
    items, labels = [], []
    for i in idx:
        path, label = use[i]
        try:
            t0, t1 = event_io.aedat2_time_span(path)
        except MSTError as e:
            raise MSTError(f"{e} [dataset {name}; expected {LAYOUTS[name]}]") from None
        n = max(1, (t1 - t0) // int(window_us))
        for k in range(n):
            items.append((path, t0 + k * int(window_us), t0 + (k + 1) * int(window_us)))
            labels.append(label)
    return SAEDataset(name, items, labels, names, _read_action_window, (346, 260), img_size,
                      in_chans, frames, augment, info, **kw)


EVENT_DATASETS = {
    "cifar10-dvs": cifar10_dvs,
    "n-caltech101": n_caltech101,
    "n-cars": n_cars,
    "action-recognition": action_recognition,
    "asl-dvs": asl_dvs,
    "dvs-gesture": dvs_gesture,
}

SENSOR_SIZES = {"cifar10-dvs": (128, 128), "n-caltech101": (240, 180), "n-cars": (120, 100),
                "action-recognition": (346, 260), "asl-dvs": (240, 180), "dvs-gesture": (128, 128)}

__all__ = ["EVENT_DATASETS", "EventDataset", "SAEDataset", "ImageFramesDataset", "integrate",
           "sae", "to_unit_images", "collapse_frames", "frames_for_steps", "stratified_split",
           "LAYOUTS", "SPLIT_SEED"]
