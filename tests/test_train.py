import subprocess
import sys

from mst_lava.checkpoint import read_checkpoint
from mst_lava.cli import main
from mst_lava.train import TrainConfig, train


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
