import os
import pickle

import pytest
import torch

from mst_lava.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from mst_lava.errors import MSTError
from mst_lava.model import build_model


def test_round_trip(tmp_path):
    m = build_model("digits").eval()
    p = tmp_path / "m.pt"
    save_checkpoint(p, m, mask={"Q": 0.5}, metrics={"ann_acc": 0.9}, dataset="digits")
    m2, ck = load_checkpoint(p)
    assert ck["mask"] == {"Q": 0.5} and ck["metrics"]["ann_acc"] == 0.9 and ck["dataset"] == "digits"
    assert m2.cfg == m.cfg
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(m(x), m2(x))
    assert [f for f in os.listdir(tmp_path) if f != "m.pt"] == []   # no temp files left


def test_truncated_checkpoint_gives_clear_error(tmp_path):
    p = tmp_path / "m.pt"
    save_checkpoint(p, build_model("digits"))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(MSTError, match="truncated or corrupt"):
        read_checkpoint(p)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(MSTError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(MSTError, match="not an mst_lava checkpoint"):
        read_checkpoint(tmp_path / "other.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_MARKER",))


def test_malicious_pickle_is_refused_without_executing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "evil.pt"
    torch.save({"format": "mst_lava.checkpoint", "payload": _Evil()}, p)
    with pytest.raises(MSTError, match="refused"):
        read_checkpoint(p)
    assert not (tmp_path / "PWNED_MARKER").exists()
    # a raw pickle (not a torch zip) is refused too
    p2 = tmp_path / "evil2.pt"
    p2.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(MSTError):
        read_checkpoint(p2)
    assert not (tmp_path / "PWNED_MARKER").exists()
