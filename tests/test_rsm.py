import numpy as np
import pytest
import torch

from mst_lava.errors import MSTError
from mst_lava.model import build_model, iter_sites, parse_mask_spec, set_ann_masks
from mst_lava.model.qcfs import QCFS
from mst_lava.model.rsm import keep_mask_numpy, keep_mask_torch, mask_key


def test_parse_and_validate():
    assert parse_mask_spec(["Q=0.75", "k=0.75,A=0.5"]) == {"Q": 0.75, "K": 0.75, "A": 0.5}
    assert parse_mask_spec(["soft(A)*V=0.1", "MLP1@3=0.2"]) == {"AV": 0.1, "MLP1@3": 0.2}
    for bad in (["Q=1.0"], ["Q=-0.1"], ["Q=1.5"], ["Q=nan"]):
        with pytest.raises(MSTError, match=r"outside \[0, 1\)"):
            parse_mask_spec(bad)
    with pytest.raises(MSTError, match="unknown RSM site"):
        parse_mask_spec(["Z=0.5"])
    with pytest.raises(MSTError, match="SITE=RATIO"):
        parse_mask_spec(["Q"])


@pytest.mark.parametrize("r", [0.25, 0.5, 0.75])
def test_ann_site_drops_fraction_close_to_r(r):
    m = QCFS("Q", 0)
    m.mask_ratio, m.mask_seed = r, 7
    x = torch.full((200_000,), 1.5)          # every output nonzero without masking
    y = m(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - r) < 0.01           # binomial std at n=2e5 is ~0.001


def test_ann_masks_are_seeded_and_applied_per_site():
    model = build_model("digits").eval()
    set_ann_masks(model, {"Q": 0.5}, seed=3)
    ratios = {(m.site, m.block): m.mask_ratio for _, m in iter_sites(model)}
    assert ratios[("Q", 0)] == 0.5 and ratios[("K", 0)] == 0.0
    q_site = next(m for _, m in iter_sites(model) if m.site == "Q" and m.block == 0)
    seen = []
    q_site.register_forward_hook(lambda mod, inp, out: seen.append(out.detach().clone()))
    x = torch.randn(4, 1, 8, 8)
    model(x)
    set_ann_masks(model, {"Q": 0.5}, seed=3)
    model(x)
    set_ann_masks(model, {"Q": 0.5}, seed=4)
    model(x)
    assert torch.equal(seen[0], seen[1])     # same seed, same masks
    assert not torch.equal(seen[0], seen[2])
    set_ann_masks(model, None)
    model(x)
    assert (seen[3] != 0).sum() > (seen[0] != 0).sum()   # masking removed outputs


def test_counter_generator_numpy_equals_torch_and_rate():
    for r in (0.1, 0.5, 0.75):
        n = 100_000
        a = keep_mask_numpy(1000, "Q", 3, 17, n, r)
        b = keep_mask_torch(1000, "Q", 3, 17, n, r).numpy()
        assert np.array_equal(a, b)
        assert abs((~a).mean() - r) < 0.01
    # distinct keys for distinct (seed, site, block, step)
    keys = {mask_key(s, site, b, t) for s in (0, 1000) for site in ("Q", "K") for b in (0, 1) for t in (0, 1)}
    assert len(keys) == 16
    assert not np.array_equal(keep_mask_numpy(0, "Q", 0, 0, 1000, 0.5), keep_mask_numpy(0, "Q", 0, 1, 1000, 0.5))
