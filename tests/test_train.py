import subprocess
import sys

import torch

from mst_lava.checkpoint import read_checkpoint
from mst_lava.cli import main
from mst_lava.train import TrainConfig, make_optimizer, train


def test_train_resume_and_finetune(tmp_path):
    out = tmp_path / "a.pt"
    m = train(TrainConfig(dataset="digits", preset="digits", epochs=1, batch_size=32, limit_train=64,
                          out=str(out), progress=False))
    ck = read_checkpoint(out)
    assert ck["train_state"]["epoch"] == 0 and 0.0 <= m["ann_acc"] <= 1.0
    # resume continues to epoch 2 from the saved optimizer state
    train(TrainConfig(epochs=2, batch_size=32, limit_train=64, out=str(out), resume=True, progress=False))
    ck = read_checkpoint(out)
    assert ck["train_state"]["epoch"] == 1 and len(ck["metrics"]["history"]) == 2
    # fine-tune from it with masking
    ft = tmp_path / "ft.pt"
    train(TrainConfig(epochs=1, batch_size=32, limit_train=64, out=str(ft), init=str(out),
                      mask=["Q=0.75", "K=0.75", "A=0.75"], progress=False))
    assert read_checkpoint(ft)["mask"] == {"Q": 0.75, "K": 0.75, "A": 0.75}


def test_optimizer_groups_and_seeding_unchanged_by_timm():
    import random
    from pathlib import Path

    import numpy as np
    import torch
    from timm.utils import random_seed

    from mst_lava.checkpoint import model_from_checkpoint
    from mst_lava.model import build_model
    # the rule before timm's groups: decay on every parameter but 1-D ones and bias tables
    for model in (build_model("digits"), build_model("cifar")):
        opt = make_optimizer(model, 1e-3, 0.05)
        named = list(model.named_parameters())
        no = [p for n, p in named if p.ndim <= 1 or n.endswith("bias_table")]
        decay = [p for n, p in named if not (p.ndim <= 1 or n.endswith("bias_table"))]
        assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
        assert [list(map(id, g["params"])) for g in opt.param_groups] == [list(map(id, decay)), list(map(id, no))]
    # an optimizer state written before (the shipped checkpoint) lands on the same parameters
    ck = read_checkpoint(Path(__file__).resolve().parents[1] / "export" / "digits.pt")
    model = model_from_checkpoint(ck)
    opt = make_optimizer(model, 1e-3, 0.05)
    opt.load_state_dict(ck["train_state"]["optimizer"])
    for g in opt.param_groups:
        for p in g["params"]:
            assert opt.state[p]["exp_avg"].shape == p.shape
    # timm's random_seed(seed, rank) seeds python, numpy and torch with seed + rank as before
    random_seed(3, 2)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    assert a == (random.random(), np.random.rand(), torch.rand(1).item())


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["train", "--preset", "digits", "--mask", "Q=1.2", "--out", str(tmp_path / "x.pt")]) == 2
    assert "outside [0, 1)" in capsys.readouterr().err
    assert main(["train", "--dataset", "nosuch", "--out", str(tmp_path / "x.pt")]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_help_lists_commands():
    r = subprocess.run([sys.executable, "-m", "mst_lava.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout
    r = subprocess.run([sys.executable, "-m", "mst_lava.cli", "train", "--help"], capture_output=True, text=True)
    for opt in ("--mask", "--resume", "--init", "--epochs", "--lr", "--batch-size", "--data"):
        assert opt in r.stdout


def test_init_fine_tunes_on_the_checkpoints_own_dataset(tmp_path):
    """`--init ckpt` without --dataset trains on the dataset the checkpoint was trained on, not digits."""
    import torch

    from mst_lava.checkpoint import save_checkpoint
    from mst_lava.model import build_model
    src = tmp_path / "src.pt"
    save_checkpoint(src, build_model("digits", embed_dim=8, heads=(2, 2), mlp_ratio=1.0), dataset="nosuch")
    torch.manual_seed(0)
    import pytest

    from mst_lava.errors import MSTError
    with pytest.raises(MSTError, match="nosuch"):          # it reached for the checkpoint's dataset
        train(TrainConfig(epochs=1, limit_train=32, out=str(tmp_path / "ft.pt"), init=str(src), progress=False))
    m = train(TrainConfig(epochs=1, limit_train=32, out=str(tmp_path / "ft.pt"), init=str(src), dataset="digits",
                          progress=False))
    assert read_checkpoint(tmp_path / "ft.pt")["dataset"] == "digits" and 0 <= m["ann_acc"] <= 1


def test_resume_repeats_the_uninterrupted_run(tmp_path):
    """Epoch 2 after --resume sees the same shuffling, augmentation and masks as without a stop."""
    import torch
    kw = dict(dataset="digits", preset="digits", batch_size=32, limit_train=96, progress=False,
              mask=["Q=0.5"], seed=3)
    full = tmp_path / "full.pt"
    train(TrainConfig(epochs=2, out=str(full), **kw))
    part = tmp_path / "part.pt"
    train(TrainConfig(epochs=1, out=str(part), **kw))
    train(TrainConfig(epochs=2, out=str(part), resume=True, **{k: v for k, v in kw.items() if k != "dataset"}))
    a, b = read_checkpoint(full), read_checkpoint(part)
    assert [h["loss"] for h in a["metrics"]["history"]] == [h["loss"] for h in b["metrics"]["history"]]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k


def test_train_baselines_and_levels(tmp_path):
    """`arch` trains the QCFS ResNet-18 / VGG-16 baselines (saved as such, fine-tuned as such);
    `levels` sets L of a fresh model; mismatches are one-line errors."""
    import pytest

    from mst_lava.checkpoint import load_checkpoint
    from mst_lava.errors import MSTError
    out = tmp_path / "r.pt"
    train(TrainConfig(dataset="digits", arch="resnet18", epochs=1, batch_size=32, limit_train=64, levels=4,
                      out=str(out), progress=False))
    ck = read_checkpoint(out)
    assert ck["arch"] == "resnet18" and ck["config"]["L"] == 4 and ck["config"]["preset"] == "digits"
    model, _ = load_checkpoint(out)
    assert type(model).__name__ == "QCFSResNet18"
    ft = tmp_path / "ft.pt"
    train(TrainConfig(epochs=1, batch_size=32, limit_train=64, out=str(ft), init=str(out), mask=["act=0.5"],
                      progress=False))
    assert read_checkpoint(ft)["arch"] == "resnet18" and read_checkpoint(ft)["mask"] == {"act": 0.5}
    train(TrainConfig(epochs=2, batch_size=32, limit_train=64, out=str(out), resume=True, progress=False))
    assert read_checkpoint(out)["arch"] == "resnet18" and len(read_checkpoint(out)["metrics"]["history"]) == 2
    v = tmp_path / "v.pt"
    train(TrainConfig(dataset="digits", arch="vgg16", epochs=1, batch_size=32, limit_train=32, out=str(v),
                      progress=False))
    assert read_checkpoint(v)["arch"] == "vgg16" and read_checkpoint(v)["config"]["L"] == 16
    m = tmp_path / "m.pt"
    train(TrainConfig(dataset="digits", epochs=1, batch_size=32, limit_train=32, levels=8, out=str(m),
                      progress=False))
    assert read_checkpoint(m)["arch"] == "mst" and read_checkpoint(m)["config"]["L"] == 8
    from mst_lava.model.qcfs import iter_sites
    m4 = tmp_path / "m4.pt"       # --init with levels: the trained model re-quantized to L = 4, λ kept
    train(TrainConfig(epochs=1, batch_size=32, limit_train=32, levels=4, init=str(m), out=str(m4), lr=0.0,
                      progress=False))
    model4, ck4 = load_checkpoint(m4)
    assert ck4["config"]["L"] == 4 and {s.L for _, s in iter_sites(model4)} == {4}
    lam8 = {k: v for k, v in read_checkpoint(m)["state_dict"].items() if k.endswith(".lam")}
    assert all(torch.equal(v, ck4["state_dict"][k]) for k, v in lam8.items())
    for kw, msg in ((dict(arch="resnet50", dataset="digits"), "unknown architecture"),
                    (dict(arch="vgg16", init=str(out)), "checkpoint is 'resnet18'"),
                    (dict(levels=4, resume=True, out=str(m)), "--qcfs-levels"),
                    (dict(levels=1 << 17, init=str(m)), "L"),
                    (dict(arch="resnet18", dataset="digits", preset="swin-t"), "unknown preset")):
        with pytest.raises(MSTError, match=msg):
            train(TrainConfig(**{"epochs": 1, "limit_train": 32, "out": str(tmp_path / "x.pt"), "progress": False,
                                 **kw}))


def test_cli_arch_and_qcfs_levels(tmp_path):
    out = tmp_path / "v.pt"
    assert main(["train", "--arch", "vgg16", "--dataset", "digits", "--epochs", "1", "--batch-size", "32",
                 "--limit-train", "32", "--qcfs-levels", "4", "--threads", "1", "--out", str(out)]) == 0
    ck = read_checkpoint(out)
    assert ck["arch"] == "vgg16" and ck["config"]["L"] == 4
    assert main(["train", "--arch", "resnet50", "--out", str(tmp_path / "x.pt")]) == 2


def test_compiled_training_evaluates_like_the_eager_model(tmp_path):
    """--compile evaluates the test set through a compiled copy; its accuracy is the eager model's."""
    from mst_lava.checkpoint import load_checkpoint
    from mst_lava.data import get_dataset
    from mst_lava.data.static import BatchLoader
    from mst_lava.train import evaluate
    out = tmp_path / "c.pt"
    m = train(TrainConfig(dataset="digits", preset="digits", epochs=1, batch_size=32, limit_train=256,
                          out=str(out), compile=True, precision="fp32", progress=False))
    model, _ = load_checkpoint(out)
    test = get_dataset("digits", None, "test", augment=False, img_size=8, in_chans=1, frames=None)
    eager = evaluate(model, BatchLoader(test, 256), torch.device("cpu"))
    assert m["history"][-1]["ann_acc"] == m["ann_acc"]
    # fp32 either way; a compiled kernel may sum in another order, so allow one image of 360 to flip
    assert abs(m["ann_acc"] - eager) <= 1 / len(test) + 1e-12
    assert eager > 0.2          # one epoch on 256 digits is well above chance (10 %)


def test_ema_saves_the_average_and_resumes_like_the_uninterrupted_run(tmp_path):
    """--ema: the checkpoint holds timm's moving average (the raw weights ride in train_state), it is what is
    evaluated, and a resumed run ends with the same average and raw weights as an uninterrupted one."""
    import pytest

    from mst_lava.checkpoint import load_checkpoint
    from mst_lava.data import get_dataset
    from mst_lava.data.static import BatchLoader
    from mst_lava.train import evaluate
    kw = dict(dataset="digits", preset="digits", batch_size=32, limit_train=96, progress=False, seed=1, ema=0.9)
    full = tmp_path / "full.pt"
    m = train(TrainConfig(epochs=2, out=str(full), **kw))
    ck = read_checkpoint(full)
    raw, avg = ck["train_state"]["model"], ck["state_dict"]
    assert ck["train_state"]["ema_decay"] == 0.9
    moved = [k for k in avg if avg[k].is_floating_point() and not torch.equal(avg[k], raw[k])]
    assert "head.weight" in moved and any("running_mean" in k for k in moved)
    # the accuracy recorded is the average's
    model, _ = load_checkpoint(full)
    test = BatchLoader(get_dataset("digits", None, "test", augment=False, img_size=8, in_chans=1), 256)
    assert evaluate(model, test, torch.device("cpu")) == m["ann_acc"]
    part = tmp_path / "part.pt"
    train(TrainConfig(epochs=1, out=str(part), **kw))
    train(TrainConfig(epochs=2, out=str(part), resume=True,
                      **{k: v for k, v in kw.items() if k not in ("dataset", "ema")}))
    b = read_checkpoint(part)
    for k in avg:
        assert torch.equal(avg[k], b["state_dict"][k]), k
        assert torch.equal(raw[k], b["train_state"]["model"][k]), k
    from mst_lava.errors import MSTError
    plain = tmp_path / "plain.pt"
    train(TrainConfig(epochs=1, out=str(plain), **{**kw, "ema": 0.0}))
    with pytest.raises(MSTError, match="without an average"):
        train(TrainConfig(epochs=2, out=str(plain), resume=True, ema=0.9, progress=False))


def test_eval_from_skips_early_evaluations(tmp_path):
    out = tmp_path / "e.pt"
    m = train(TrainConfig(dataset="digits", preset="digits", epochs=3, batch_size=32, limit_train=64, out=str(out),
                          progress=False, eval_from=3))
    h = read_checkpoint(out)["metrics"]["history"]
    assert [e["ann_acc"] is None for e in h] == [True, True, False] and h[-1]["ann_acc"] == m["ann_acc"]
    # a run whose --eval-from lies beyond its end still evaluates the last epoch
    m = train(TrainConfig(dataset="digits", preset="digits", epochs=1, batch_size=32, limit_train=64, out=str(out),
                          progress=False, eval_from=5))
    assert 0 <= m["ann_acc"] <= 1


def test_resume_with_broken_ema_weights_is_a_message(tmp_path):
    import pytest

    from mst_lava.checkpoint import load_checkpoint, save_checkpoint
    from mst_lava.errors import MSTError
    out = tmp_path / "e.pt"
    train(TrainConfig(dataset="digits", preset="digits", epochs=1, batch_size=32, limit_train=64, out=str(out),
                      progress=False, ema=0.9))
    ck = read_checkpoint(out)
    ck["train_state"]["model"] = {"head.weight": torch.zeros(3)}
    model, _ = load_checkpoint(out)
    save_checkpoint(out, model, metrics=ck["metrics"], dataset="digits", train_state=ck["train_state"])
    with pytest.raises(MSTError, match="do not fit the model"):
        train(TrainConfig(epochs=2, out=str(out), resume=True, progress=False))
