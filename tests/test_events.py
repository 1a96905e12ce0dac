"""Event datasets: indexing, splits, events → frames → model input, NDA, pepper noise, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures_events import (
    CIFAR10_CLASSES,
    synthetic_events,
    write_action_recognition_fixture,
    write_asl_dvs_fixture,
    write_cifar10dvs_fixture,
    write_dvs_gesture_fixture,
    write_ncaltech101_fixture,
    write_ncars_fixture,
)

from mst_lava.data import event_io
from mst_lava.data.events import (
    EVENT_DATASETS,
    collapse_frames,
    frames_for_steps,
    integrate,
    sae,
    stratified_split,
    to_unit_images,
)
from mst_lava.data.nda import NDA, affine, cutout, roll
from mst_lava.data.noise import PepperNoise, parse_densities, pepper_noise
from mst_lava.errors import MSTError


def ev_array(x, y, t, p):
    return event_io.make_events(x, y, t, p)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    d = tmp_path_factory.mktemp("event_sets")
    return {
        "cifar10-dvs": write_cifar10dvs_fixture(d / "c10", n_per_class=10, n_events=120),
        "cifar10-dvs-aedat": write_cifar10dvs_fixture(d / "c10o", n_per_class=2, fmt="aedat", n_events=120),
        "n-caltech101": write_ncaltech101_fixture(d / "ncal"),
        "n-cars": write_ncars_fixture(d / "ncars"),
        "action-recognition": write_action_recognition_fixture(d / "act"),
        "asl-dvs": write_asl_dvs_fixture(d / "asl"),
        "dvs-gesture": write_dvs_gesture_fixture(d / "gest"),
    }


# -------------------------------------------------------------------- events → frames

def test_integrate_counts_every_event_in_the_right_bin():
    ev = ev_array([0, 1, 1, 3, 3], [0, 0, 0, 2, 2], [10, 20, 30, 40, 49], [1, 0, 0, 1, 1])
    one = integrate(ev, (4, 3), 1)
    assert one.shape == (1, 2, 3, 4) and one.dtype == np.float32
    assert one.sum() == 5                                   # the last event is kept
    assert one[0, 1, 0, 0] == 1 and one[0, 0, 0, 1] == 2 and one[0, 1, 2, 3] == 2
    two = integrate(ev, (4, 3), 2)                          # bins [10, 30) and [30, 50)
    assert two[0].sum() == 2 and two[1].sum() == 3
    assert two[0, 0, 0, 1] == 1 and two[1, 0, 0, 1] == 1 and two[1, 1, 2, 3] == 2
    np.testing.assert_array_equal(two.sum(0), one[0])
    assert integrate(ev_array([], [], [], []), (4, 3), 3).shape == (3, 2, 3, 4)


def test_integrate_large_sample_matches_tonic_path():
    rng = np.random.RandomState(0)
    n = 40_000                                              # beyond tonic's int16 accumulator
    ev = ev_array(rng.randint(0, 8, n), rng.randint(0, 6, n), np.sort(rng.randint(0, 10**6, n)),
                  rng.randint(0, 2, n))
    big = integrate(ev, (8, 6), 3)
    ref = np.zeros((3, 2, 6, 8))
    t0, window = int(ev["t"][0]), -(-(int(ev["t"][-1]) - int(ev["t"][0]) + 1) // 3)
    np.add.at(ref, ((ev["t"] - t0) // window, ev["p"].astype(int), ev["y"], ev["x"]), 1)
    np.testing.assert_array_equal(big, ref)
    # the same bins through tonic's ToFrame on a small sample
    np.testing.assert_array_equal(integrate(ev[:5000], (8, 6), 3).sum(0), np.add.reduce(
        [np.bincount(((ev[:5000]['p'].astype(int) * 6 + ev[:5000]['y']) * 8 + ev[:5000]['x']),
                     minlength=96).reshape(2, 6, 8)]))


def test_sae_latest_event_per_pixel():
    ev = ev_array([1, 1, 2], [0, 0, 1], [0, 49, 99], [1, 1, 0])
    s = sae(ev, (3, 2), 1, 0, 100)
    assert s[0, 1, 0, 1] == pytest.approx(50 / 100)         # latest of t = 0, 49
    assert s[0, 0, 1, 2] == pytest.approx(100 / 100)
    assert np.count_nonzero(s) == 2
    s2 = sae(ev, (3, 2), 2, 0, 100)                          # sub-windows [0, 50), [50, 100)
    assert s2[0, 1, 0, 1] == pytest.approx(50 / 50) and s2[1, 0, 1, 2] == pytest.approx(50 / 50)


def test_to_unit_images_channels_and_scale():
    counts = np.zeros((2, 2, 4, 4), np.float32)
    counts[:, 0, 1, 1] = 1                                   # OFF pixel, active in both frames
    counts[:, 1, 2, 2] = 3                                   # ON pixel
    counts[1, 1, 0, 0] = 1
    x = to_unit_images(counts, 3, 4)
    assert x.shape == (2, 3, 4, 4) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert x[0, 0, 1, 1] == 1 and x[1, 1, 2, 2] == 1 and x[0, 1, 1, 1] == 0
    assert x[1, 2, 2, 2] == 1                                # channel 3 = both polarities
    static = to_unit_images(counts.sum(0, keepdims=True), 2, 4)[0]
    np.testing.assert_allclose(collapse_frames(x)[:2], static, atol=1e-6)   # no clipping here
    assert to_unit_images(counts, 1, 8).shape == (2, 1, 8, 8)
    sae_map = np.zeros((1, 2, 8, 8), np.float32)
    sae_map[0, 1, 3, 5] = 0.7
    pooled = to_unit_images(sae_map, 1, 4, kind="sae")
    assert float(pooled.max()) == pytest.approx(0.7)        # max-pooled, not blurred away


def test_frames_for_steps():
    x = torch.arange(3.0).view(1, 3, 1, 1, 1).expand(2, 3, 1, 1, 1)
    s = frames_for_steps(x, 6)
    assert s.shape == (6, 2, 1, 1, 1) and s[:, 0].flatten().tolist() == [0, 0, 1, 1, 2, 2]


# -------------------------------------------------------------------------- the datasets

def test_cifar10dvs_split_events_and_frames(roots):
    root = roots["cifar10-dvs"]
    tr = EVENT_DATASETS["cifar10-dvs"](str(root), "train", 32, 2, None, False)
    te = EVENT_DATASETS["cifar10-dvs"](str(root), "test", 32, 2, None, False)
    assert (len(tr), len(te)) == (90, 10)                   # 9:1 per class, as the paper's 9,000/1,000
    assert tr.classes == list(CIFAR10_CLASSES) and tr.num_classes == 10
    assert sorted(te.labels) == list(range(10))
    assert all(p.endswith("_9.aedat4") for p in te.items)   # the last file of each class
    assert not set(tr.items) & set(te.items)
    i = te.labels.index(3)
    expected = synthetic_events(3, 10, 120, 128, 128, 200_000, seed=1000 * 3 + 9)
    got = te.events(i)
    for f in "xytp":
        np.testing.assert_array_equal(got[f].astype(np.int64), expected[f])
    frames = te.maps(i)
    ref = np.zeros((1, 2, 128, 128))
    np.add.at(ref, (0, expected["p"], expected["y"], expected["x"]), 1)
    np.testing.assert_array_equal(frames, ref)
    x, y = te[i]
    assert y == 3 and x.shape == (2, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= -1 and float(x.max()) <= 1


def test_cifar10dvs_original_aedat(roots):
    ds = EVENT_DATASETS["cifar10-dvs"](str(roots["cifar10-dvs-aedat"]), "train", 16, 1, 4, True)
    assert len(ds) == 10 and ds.split_info["format"] == ".aedat"
    x, y = ds[0]
    assert x.shape == (4, 1, 16, 16) and y == 0
    expected = synthetic_events(0, 10, 120, 128, 128, 200_000, seed=0)
    np.testing.assert_array_equal(ds.events(0)["x"].astype(np.int64), expected["x"])


@pytest.mark.parametrize("name,n_classes,sensor", [
    ("n-caltech101", 3, (240, 180)), ("n-cars", 2, (120, 100)), ("asl-dvs", 24, (240, 180)),
    ("dvs-gesture", 11, (128, 128)), ("action-recognition", 3, (346, 260))])
def test_builders_shapes_and_disjoint_splits(roots, name, n_classes, sensor):
    build = EVENT_DATASETS[name]
    tr = build(str(roots[name]), "train", 24, 2, None, False)
    te = build(str(roots[name]), "test", 24, 3, 2, False)
    assert tr.num_classes == n_classes == len(tr.classes) and tr.sensor_size == sensor
    assert len(tr) > 0 and len(te) > 0 and not set(map(str, tr.items)) & set(map(str, te.items))
    x, y = tr[len(tr) - 1]
    assert x.shape == (2, 24, 24) and 0 <= y < n_classes
    xf, _ = te[0]
    assert xf.shape == (2, 3, 24, 24) and xf.dtype == torch.float32
    again = build(str(roots[name]), "test", 24, 3, 2, False)
    assert again.items == te.items                            # fixed split


def test_ncaltech101_reads_expected_events(roots):
    ds = EVENT_DATASETS["n-caltech101"](str(roots["n-caltech101"]), "train", 32, 2, None, False)
    assert ds.classes == ["accordion", "airplanes", "anchor"]  # annotations folder ignored
    assert ds.split_info["seed"] == 0 and ds.split_info["test_fraction"] == 0.1
    path = ds.items[0]
    label, idx = ds.labels[0], int(path[-8:-4]) - 1
    expected = synthetic_events(label, 3, 300, 240, 180, 300_000, seed=77 + 31 * label + idx)
    np.testing.assert_array_equal(ds.events(0)["t"].astype(np.int64), expected["t"])
    np.testing.assert_array_equal(ds.events(0)["y"].astype(np.int64), expected["y"])


def test_denoise_option(roots):
    from mst_lava.data.events import n_cars
    plain = n_cars(str(roots["n-cars"]), "train", 32, 2)
    clean = n_cars(str(roots["n-cars"]), "train", 32, 2, denoise_us=2_000)
    assert 0 < len(clean.events(0)) < len(plain.events(0))
    assert clean[0][0].shape == (2, 32, 32)


def test_ncars_train_test_folders(roots):
    tr = EVENT_DATASETS["n-cars"](str(roots["n-cars"]), "train", 32, 2, None, False)
    te = EVENT_DATASETS["n-cars"](str(roots["n-cars"]), "test", 32, 2, None, False)
    assert (len(tr), len(te)) == (4, 2) and tr.classes == ["background", "cars"]
    assert all("n-cars_train" in p for p in tr.items) and all("n-cars_test" in p for p in te.items)
    assert tr.labels == [0, 0, 1, 1]


def test_dvs_gesture_segments_follow_label_csv(roots):
    tr = EVENT_DATASETS["dvs-gesture"](str(roots["dvs-gesture"]), "train", 32, 2, None, False)
    assert tr.labels == [0, 1, 2] and all("user01" in it[0] for it in tr.items)
    for i in range(3):
        ev = tr.events(i)
        _, t0, t1 = tr.items[i]
        assert len(ev) == 200 and ev["t"].min() >= t0 and ev["t"].max() < t1


def test_action_recognition_sae_windows(roots):
    tr = EVENT_DATASETS["action-recognition"](str(roots["action-recognition"]), "train", 32, 1, None, False)
    te = EVENT_DATASETS["action-recognition"](str(roots["action-recognition"]), "test", 32, 1, None, False)
    assert tr.split_info["window_us"] == 300_000 and tr.kind == "sae"
    assert not {it[0] for it in tr.items} & {it[0] for it in te.items}   # recordings never straddle
    assert len(tr) == 6                                      # 3 classes × 1 recording × 2 windows
    path, t0, t1 = tr.items[0]
    ev = tr.events(0)
    assert len(ev) and ev["t"].min() >= t0 and ev["t"].max() < t1
    m = tr.maps(0)
    assert m.shape == (1, 2, 260, 346) and 0 < m.max() <= 1
    x, _ = tr[0]
    assert x.shape == (1, 32, 32) and float(x.max()) > -1


def test_action_recognition_png_frames(tmp_path):
    from PIL import Image
    for c in ("jumping", "waving"):
        for i in range(3):
            (tmp_path / c).mkdir(exist_ok=True)
            a = np.zeros((26, 34), np.uint8)
            a[5 + i, 7] = 255
            Image.fromarray(a).save(tmp_path / c / f"{i}.png")
    ds = EVENT_DATASETS["action-recognition"](str(tmp_path), "train", 16, 3, 2, False)
    assert ds.classes == ["jumping", "waving"] and len(ds) == 4 and ds.kind == "image"
    x, _ = ds[0]
    assert x.shape == (2, 3, 16, 16) and torch.equal(x[0], x[1])


def test_get_dataset_and_dataloader(roots):
    from mst_lava.data import dataset_names, get_dataset
    assert set(EVENT_DATASETS) <= set(dataset_names())
    ds = get_dataset("n-cars", roots["n-cars"], "train", 32, 2, augment=True, frames=3)
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert xb.shape == (4, 3, 2, 32, 32) and yb.tolist() == [0, 0, 1, 1]
    assert collapse_frames(xb).shape == (4, 2, 32, 32)
    ds.transform = PepperNoise(0.5, seed=0)
    assert ds[0][0].shape == (3, 2, 32, 32)


def test_stratified_split_is_fixed_and_stratified():
    labels = [0] * 10 + [1] * 20 + [2] * 1
    tr, te = stratified_split(labels, 0.2, seed=0)
    assert sorted(tr + te) == list(range(31)) and not set(tr) & set(te)
    assert [labels[i] for i in te].count(0) == 2 and [labels[i] for i in te].count(1) == 4
    assert 30 in tr                                          # a single sample stays in train
    assert stratified_split(labels, 0.2, seed=0) == (tr, te)


# ------------------------------------------------------------------------------ errors

def test_missing_root_and_layout_errors(tmp_path):
    with pytest.raises(MSTError, match="--data DIR.*airplane"):
        EVENT_DATASETS["cifar10-dvs"](None, "train", 32, 2, None, False)
    with pytest.raises(MSTError, match="no such folder.*n-cars_train"):
        EVENT_DATASETS["n-cars"](str(tmp_path / "nope"), "train", 32, 2, None, False)
    (tmp_path / "airplane").mkdir()
    with pytest.raises(MSTError, match="missing: automobile"):
        EVENT_DATASETS["cifar10-dvs"](str(tmp_path), "train", 32, 2, None, False)
    for name in ("n-caltech101", "asl-dvs", "dvs-gesture", "action-recognition"):
        with pytest.raises(MSTError, match="docs/datasets.md"):
            EVENT_DATASETS[name](str(tmp_path), "train", 32, 2, None, False)


def test_bad_options(roots):
    build = EVENT_DATASETS["n-cars"]
    with pytest.raises(MSTError, match="in_chans"):
        build(str(roots["n-cars"]), "train", 32, 4, None, False)
    with pytest.raises(MSTError, match="split"):
        build(str(roots["n-cars"]), "val", 32, 2, None, False)
    with pytest.raises(MSTError, match="--frames"):
        build(str(roots["n-cars"]), "train", 32, 2, -1, False)


def test_corrupt_file_error_names_file_and_layout(tmp_path):
    root = write_ncars_fixture(tmp_path / "nc")
    ds = EVENT_DATASETS["n-cars"](str(root), "train", 32, 2, None, False)
    victim = ds.items[1]
    with open(victim, "r+b") as f:
        f.truncate(len(open(victim, "rb").read()) - 3)
    with pytest.raises(MSTError) as e:
        ds[1]
    assert victim in str(e.value) and "n-cars_train" in str(e.value)
    root = write_cifar10dvs_fixture(tmp_path / "c", n_per_class=2, n_events=20)
    bad = root / "dog" / "cifar10_dog_1.aedat4"
    bad.write_bytes(b"garbage")
    ds = EVENT_DATASETS["cifar10-dvs"](str(root), "test", 32, 2, None, False)
    with pytest.raises(MSTError, match="cifar10_dog_1.aedat4.*not an AEDAT 4.0"):
        ds[ds.labels.index(5)]


# --------------------------------------------------------------------------------- NDA

def test_nda_operations():
    x = torch.zeros(2, 1, 8, 8)
    x[:, :, 2, 3] = 1
    assert roll(x, 1, -1)[0, 0, 3, 2] == 1 and roll(x, 0, -4)[0, 0, 2, 7] == 1
    assert affine(x)[0].allclose(x[0], atol=1e-6)           # identity
    assert cutout(torch.ones(1, 8, 8), 4, 4, 4)[0, 2:6, 2:6].sum() == 0
    r = affine(torch.ones(1, 1, 9, 9), angle_deg=45)
    assert r[0, 0, 4, 4] == pytest.approx(1) and r[0, 0, 0, 0] == 0   # corners leave the image


def test_nda_same_transform_for_all_frames_and_reproducible():
    base = torch.rand(1, 2, 16, 16)
    x = base.expand(4, 2, 16, 16).clone()
    nda = NDA()
    for seed in range(8):
        y = nda(x, torch.Generator().manual_seed(seed))
        assert y.shape == x.shape and all(torch.equal(y[0], y[t]) for t in range(4))
        assert torch.equal(y, nda(x, torch.Generator().manual_seed(seed)))
        assert float(y.min()) >= 0 and float(y.max()) <= 1 + 1e-6


# ------------------------------------------------------------------------- pepper noise

def test_pepper_noise_density_and_values():
    x = torch.zeros(3, 10, 10)
    x[1, 0, 0] = 2.0
    x[2, 5, 5] = -0.5
    y = pepper_noise(x, 0.1, torch.Generator().manual_seed(0))
    changed = (y != x).any(0)
    assert int(changed.sum()) in (9, 10)                    # 10 pixels, one may already be max
    hit = (y[0] == 0) & (y[1] == 2.0) & (y[2] == 0)          # every hit pixel gets each channel's max
    assert bool(hit[changed].all())
    assert torch.equal(x[1, 0, 0], torch.tensor(2.0))         # input untouched
    assert torch.equal(pepper_noise(x, 0.0), x)
    full = pepper_noise(x, 1.0)
    assert torch.equal(full, x.amax(dim=(1, 2), keepdim=True).expand_as(x))


def test_pepper_noise_batches_generator_and_value():
    x = torch.rand(4, 2, 8, 8)
    a = pepper_noise(x, 0.25, torch.Generator().manual_seed(1), value=5.0)
    b = pepper_noise(x, 0.25, torch.Generator().manual_seed(1), value=5.0)
    assert torch.equal(a, b)
    per_img = (a == 5.0).all(1).flatten(1).sum(1)
    assert per_img.tolist() == [16, 16, 16, 16]
    assert not torch.equal(a[0] == 5.0, a[1] == 5.0)         # each image draws its own pixels
    assert pepper_noise(torch.rand(6, 6), 0.5).shape == (6, 6)
    frames = pepper_noise(torch.rand(2, 3, 2, 8, 8), 0.1)    # (B, T, C, H, W)
    assert frames.shape == (2, 3, 2, 8, 8)


def test_pepper_noise_validates_density():
    for bad in (-0.01, 1.5, float("nan")):
        with pytest.raises(MSTError, match=r"\[0, 1\]"):
            pepper_noise(torch.zeros(1, 4, 4), bad)
    assert parse_densities("0.01, 0.05,0.1") == [0.01, 0.05, 0.1]
    with pytest.raises(MSTError, match="not a number"):
        parse_densities("0.01,abc")
    with pytest.raises(MSTError, match=r"\[0, 1\]"):
        parse_densities("2")
